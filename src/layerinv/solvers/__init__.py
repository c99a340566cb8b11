"""The layer-problem solvers: a registry of backends by name, and the front door `solve_many`.

Backends (one private module each, each ending in `BACKEND = ...`):
- 'ipm' (`_ipm.py`): the structured interior point with row screening, the fast one.
- 'highs' (`_highs.py`): HiGHS's dual simplex, the robust general solver. `_highs.py` is
  also where exact.py builds and runs its HiGHS models.
- 'cvxopt' (`_cvxopt.py`): cvxopt's LP solver (the paper authors' choice), a reference.
- 'daqp' (`_daqp.py`): DAQP's dual active set warm-started from the least-squares point
  (optional package `daqp`), certified by its own duality bound; not the default yet.
- 'torch' (`_torch.py`): the structured interior point batched over a layer's problems in
  PyTorch (optional), float64 on CUDA where available, else CPU; `TorchBackend(device=)`.
- 'auto': the interior point, and HiGHS whenever it reports trouble (a Cholesky that fails
  even with regularisation, no convergence, an answer the post-check rejects).
`layerinv._linalg` holds the dense linear algebra (Gram, Cholesky, least squares) they share
with the layer inversion; `problem.py` what every backend takes and returns.

Adding a backend touches two places: its own module, which subclasses `problem.Backend`
(or wraps a function problem -> LPResult in `problem.FunctionBackend`), and one
`register(name, backend)` line below. From then on `invert(..., solver=name)`,
`reconstruct(..., solver=name)` (pgd's projections included) and the command line's
`--solver` take it. A backend registered at run time instead (`layerinv.solvers.register`)
exists in the process that registered it, not in `n_jobs` workers, which start afresh.

Every backend answer passes `problem.check_result` before anyone reads it: a wrong answer is
a NUMERICAL_ERROR with a message (the layer's 'solver_error'), never a silently wrong
'optimal'. A stated noise bound (`t_max`) is decided here, before any backend sees it.

The walk hands over every LP of one layer's round, over the whole batch, in one
`solve_many(problems, solver, n_jobs=...)` call; process parallelism is decided here too
(`_solve_in_processes`), so a backend sees whole lists of problems wherever it runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass

from layerinv._blas import on_one_thread
from layerinv._processes import check_main_guarded, make_chunks, map_local, resolve_workers
from layerinv._validation import check_choice
from layerinv.errors import InputError
from layerinv.results import Status
from layerinv.solvers import _cvxopt, _daqp, _highs, _ipm, _torch
from layerinv.solvers.problem import (
    Backend,
    FunctionBackend,
    LayerProblem,
    LPResult,
    check_result,
    slack_needed,
)

__all__ = [
    "ACCURACY_FACTOR",
    "Backend",
    "Fallback",
    "FunctionBackend",
    "LPResult",
    "LayerProblem",
    "check_workers",
    "get",
    "names",
    "proves_slack_above",
    "register",
    "slack_needed",
    "solve",
    "solve_many",
]

_BACKENDS: dict[str, Backend] = {}


def register(name: str, backend: Backend) -> None:
    """Make `backend` available as solver=`name` everywhere a layer problem is solved."""
    if not isinstance(name, str) or not name:
        raise InputError(f"a solver name must be a non-empty str; got {name!r}")
    if not isinstance(backend, Backend):
        raise InputError(f"backend must be a layerinv.solvers.Backend; got "
                         f"{type(backend).__name__}")
    if name in _BACKENDS:
        raise InputError(f"solver {name!r} is registered already")
    _BACKENDS[name] = backend


def names() -> tuple[str, ...]:
    """The registered solver names, in registration order ('auto' first)."""
    return tuple(_BACKENDS)


def get(name: object) -> Backend:
    """The backend registered as `name`; an unknown name is an InputError naming the choices."""
    return _BACKENDS[check_choice(name, names(), "solver")]


@dataclass(frozen=True)
class Fallback(Backend):
    """`first`, and `second` wherever first's checked answer is a numerical error or a cap."""

    first: Backend
    second: Backend
    checks_answers = True  # both answers pass check_result here: the front door skips it

    def solve(self, problem: LayerProblem) -> LPResult:
        result = check_result(problem, self.first.solve(problem))
        if result.status not in (Status.NUMERICAL_ERROR, Status.MAX_STEPS):
            return result
        fallback = check_result(problem, self.second.solve(problem))
        why = "" if fallback.success else f" ({fallback.status}: {fallback.message})"
        fallback.message = (f"{result.solver}: {result.status}; solved by {fallback.solver} "
                            f"instead{why}")
        fallback.seconds += result.seconds
        return fallback


register("auto", Fallback(_ipm.BACKEND, _highs.BACKEND))
register("ipm", _ipm.BACKEND)
register("highs", _highs.BACKEND)
register("cvxopt", _cvxopt.BACKEND)
register("daqp", _daqp.BACKEND)
register("torch", _torch.BACKEND)


# --------------------------------------------------------------------------- the front door
def solve(problem: LayerProblem, solver: str = "auto") -> LPResult:
    """Solve one layer problem with the backend named `solver` (see `solve_many`)."""
    return solve_many([problem], solver)[0]


PARALLEL_MIN_SECONDS = 2.0
"""A `solve_many` call uses worker processes only above this many estimated seconds of work
beyond its first problem (estimated from that problem's time). Each call starts its own pool:
about 0.5 s on 2 cores (forkserver workers), so a call of W seconds takes about 0.5 + W / 2
on two workers against W here, and pays from about 1 s; 2 s leaves a margin for cores that
are busy, where a pool gains nothing (see `_solve_in_processes`)."""


def solve_many(problems: Sequence[LayerProblem], solver: str = "auto", *,
               n_jobs: int | None = None) -> list[LPResult]:
    """Solve layer problems, each backend call receiving all of them that it can at once.

    With a bound on the slacks (`t_max`), status INFEASIBLE means the bound is proven
    contradicted: see `_solve_bounded`. `n_jobs` (None: 1; -1: every core) worker processes
    may share a large list (`_solve_in_processes`); the answers are the same either way. A
    script asking for workers must guard its entry point (`if __name__ == "__main__":`).
    """
    problems = list(problems)
    get(solver)  # an unknown name is an InputError here, before any worker starts
    workers = check_workers(n_jobs)
    if workers == 1 or len(problems) < 2:
        return _solve_here(problems, solver)
    return _solve_in_processes(problems, solver, workers)


def check_n_jobs(n_jobs: object) -> None:
    """n_jobs must be None, -1 or a positive int (a bool is not a count): else an InputError."""
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int)
                               or n_jobs == 0):
        raise InputError(f"n_jobs must be None, -1 or a positive int; got {n_jobs!r}")


def check_workers(n_jobs: int | None) -> int:
    """The worker processes `n_jobs` asks for (None: 1; -1: every core), refused with an
    UnguardedMainError to a script that asks from its unguarded top level.

    `solve_many` checks; so does the walk before any work, since data that needs no LP (least
    squares fits every layer) never reaches `solve_many`: a script that runs on such data
    only would be a trap (`_processes.check_main_guarded` says why).
    """
    check_n_jobs(n_jobs)
    workers = 1 if n_jobs is None else resolve_workers(n_jobs)
    if workers > 1:
        check_main_guarded()
    return workers


@on_one_thread
def _solve_here(problems: list[LayerProblem], solver: str) -> list[LPResult]:
    """The problems solved in this process: free ones in one backend call, bounded in two."""
    backend = get(solver)
    results: list[LPResult | None] = [None] * len(problems)
    free = [i for i, problem in enumerate(problems) if problem.t_max is None]
    bounded = [i for i, problem in enumerate(problems) if problem.t_max is not None]
    for i, result in zip(free, _solve_checked(backend, [problems[i] for i in free]),
                         strict=True):
        results[i] = result
    for i, result in zip(bounded, _solve_bounded(backend, [problems[i] for i in bounded]),
                         strict=True):
        results[i] = result
    return results  # type: ignore[return-value]  # every index is filled above


def _solve_in_processes(problems: list[LayerProblem], solver: str,
                        workers: int) -> list[LPResult]:
    """The first problem here (its time is the estimate), the rest here or over workers.

    With PARALLEL_MIN_SECONDS of estimated work or less, the rest is one more call here.
    Otherwise chunks of consecutive problems, about CHUNK_SECONDS of estimated work each and
    at least CHUNKS_PER_WORKER per worker (`_processes.make_chunks`), each solved by one
    `_solve_here` call in a worker: a batched backend still sees whole chunks, and the
    problems of one layer share one operator object, which pickle carries once per chunk.
    Processes, not
    threads: SciPy's BLAS and LAPACK wrappers hold the GIL (two threads ran dsyrk, dpotrf and
    dsyevr at 0.56-0.82x the speed of one). A backend registered at run time does not exist
    in the workers, which start afresh.

    Measured (20 x 250 x 600, linf, uniform noise 1e-3, the last layer's first round, 2 cores):
    300 problems 8.0 s here, 4.6 s on two workers; 150: 4.1 s and 2.6 s; 60: 1.6 s and 1.3 s;
    the second round's 150 problems 0.57 s and 0.76 s. With the other core busy (another
    process at 100 %), 1000 problems took 26.3 s here and 27.5 s on two workers.
    """
    started = time.perf_counter()
    first = _solve_here(problems[:1], solver)
    per_problem = time.perf_counter() - started
    rest = problems[1:]
    if per_problem * len(rest) <= PARALLEL_MIN_SECONDS:
        return first + _solve_here(rest, solver)
    results: list[LPResult | None] = [*first, *[None] * len(rest)]
    chunks = [(c[0], problems[c[0]:c[-1] + 1])
              for c in make_chunks(range(1, len(problems)), workers, lambda _: per_problem)]
    mapped = map_local(_solve_chunk, chunks, solver, workers,
                       cost=lambda chunk: per_problem * len(chunk[1]), chunk_seconds=0.0,
                       min_parallel_seconds=0.0)
    with contextlib.closing(mapped):
        for (offset, chunk), answers in mapped:
            results[offset:offset + len(chunk)] = answers
    return results  # type: ignore[return-value]  # every index is filled above


def _solve_chunk(chunk: tuple[int, list[LayerProblem]], solver: str) -> list[LPResult]:
    """One chunk (offset, problems) in a worker (module level: pickled by reference)."""
    return _solve_here(chunk[1], solver)


def _solve_checked(backend: Backend, problems: list[LayerProblem]) -> list[LPResult]:
    """The problems as given (a slack ceiling `t_max`, if any, is only a constraint here)."""
    if not problems:
        return []
    answers = backend.solve_many(problems)
    if len(answers) != len(problems):
        raise RuntimeError(f"a solver backend returned {len(answers)} answers to "
                           f"{len(problems)} problems")
    if backend.checks_answers:
        return answers
    return [check_result(problem, answer)
            for problem, answer in zip(problems, answers, strict=True)]


# An interior point's `accuracy` rests on an estimate of ||x - x*|| (2 ||x||), not a proof;
# a contradiction is claimed only beyond this many times it. Measured on 60 layer LPs
# (20 x 60 x 784 decoder and k x 250 x 400/600 nets, noise 0 to 1e-2): the objective's
# excess over the true optimum was at most 0.95 times the accuracy.
ACCURACY_FACTOR = 10.0


def proves_slack_above(problem: LayerProblem, result: LPResult, bound: float,
                       needed: float | None = None) -> bool:
    """Whether an l_inf answer proves that no h fits `problem`'s band with slack <= `bound`.

    Both must hold: the point found needs a slack above the bound (it is no witness), and its
    objective exceeds the bound by more than ACCURACY_FACTOR times the solver's stated
    accuracy (so the true optimum does too). The one rule for a contradicted noise bound and
    for the exact method's 'not_realizable' (the bound 0). `needed`: the slack result.h
    needs (`slack_needed`), where the caller has it already.
    """
    needed = slack_needed(problem, result.h) if needed is None else needed
    return (needed > bound
            and result.objective - ACCURACY_FACTOR * result.accuracy > bound)


def _solve_bounded(backend: Backend, problems: list[LayerProblem]) -> list[LPResult]:
    """A stated bound t_max on every slack, decided before the bounded LP is ever solved.

    Some h meets the bound exactly when the l_inf LP's optimum t* is <= t_max, for l_1 as for
    l_inf (every t_j <= t_max is the l_inf question). So the l_inf LP is solved without the
    bound, an LP that is always feasible, and the bound is reported contradicted
    ('infeasible') only when both (a) the point found needs a slack above t_max (no witness)
    and (b) its objective exceeds t_max by more than ACCURACY_FACTOR times the solver's
    stated accuracy (a lower bound on t*). A bound the data respects is never contradicted:
    the interior point's objective is only accurate to ~1e-10 and the earlier tolerance
    (1e-7 relative) was tighter than that. l_1 then solves with slack ceilings
    max(t_max, the slack the l_inf point needs): feasible, so no solver is asked to prove
    infeasibility (HiGHS answered 'Unknown' on an infeasible l_1 LP). The fit returned meets
    the bound to the solver's accuracy.
    """
    linf = [dataclasses.replace(problem, norm="linf", t_max=None) for problem in problems]
    results = _solve_checked(backend, linf)
    ceilings: list[tuple[int, LayerProblem]] = []
    for i, (problem, check) in enumerate(zip(problems, results, strict=True)):
        if not check.success:
            continue
        needed = slack_needed(linf[i], check.h)
        if proves_slack_above(linf[i], check, problem.t_max, needed):
            check.status = Status.INFEASIBLE
            check.message = (f"the smallest l_inf slack {check.objective:.3g} (accuracy "
                             f"{check.accuracy:.1g}) exceeds the noise bound "
                             f"{problem.t_max:.3g}")
            continue
        if problem.norm == "l1":
            ceilings.append((i, dataclasses.replace(problem, t_max=max(problem.t_max, needed))))
    answers = _solve_checked(backend, [ceiling for _, ceiling in ceilings])
    for (i, _), bounded in zip(ceilings, answers, strict=True):
        bounded.seconds += results[i].seconds
        bounded.iterations += results[i].iterations
        results[i] = bounded
    return results
