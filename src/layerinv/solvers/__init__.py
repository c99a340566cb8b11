"""The layer-problem solvers: a registry of backends by name, and the front door `solve_many`.

Backends (one private module each, each ending in `BACKEND = ...`):
- 'ipm' (`_ipm.py`): the structured interior point with row screening, the fast one.
- 'highs' (`_highs.py`): HiGHS's dual simplex, the robust general solver. `_highs.py` is
  also where exact.py builds and runs its HiGHS models.
- 'cvxopt' (`_cvxopt.py`): cvxopt's LP solver (the paper authors' choice), a reference.
- 'daqp' (`_daqp.py`): DAQP's dual active set warm-started from the least-squares point
  (package `daqp`), certified by its own duality bound.
- 'auto': DAQP where it measured faster than the interior point (`daqp_pays`), else the
  interior point; then the interior point where DAQP's checked answer is a numerical error
  or a cap (an uncertified DAQP answer is one), and HiGHS where the interior point's is (a
  Cholesky that fails even with regularisation, no convergence, an answer the post-check
  rejects). Without the daqp package: the interior point, then HiGHS.
- 'torch' (`_torch.py`): the structured interior point batched over a layer's problems in
  PyTorch (optional), float64 on CUDA where available, else CPU; `TorchBackend(device=)`.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

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
    "daqp_pays",
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
    """`first`, and `second` wherever first's checked answer is a numerical error or a cap.

    `use_first` (if given) says per problem whether `first` is worth trying at all: where it
    says False, `second` alone solves the problem.
    """

    first: Backend
    second: Backend
    use_first: Callable[[LayerProblem], bool] | None = None
    checks_answers = True  # both answers pass check_result here: the front door skips it

    def solve(self, problem: LayerProblem) -> LPResult:
        if self.use_first is not None and not self.use_first(problem):
            return _checked(self.second, problem)
        result = _checked(self.first, problem)
        if result.status not in (Status.NUMERICAL_ERROR, Status.MAX_STEPS):
            return result
        fallback = _checked(self.second, problem)
        why = "" if fallback.success else f" ({fallback.status}: {fallback.message})"
        fallback.message = (f"{result.solver}: {result.status}; solved by {fallback.solver} "
                            f"instead{why}")
        fallback.seconds += result.seconds
        return fallback


def _checked(backend: Backend, problem: LayerProblem) -> LPResult:
    """backend's answer to one problem, through check_result unless the backend checks its own."""
    answer = backend.solve(problem)
    return answer if backend.checks_answers else check_result(problem, answer)


def daqp_pays(problem: LayerProblem) -> bool:
    """Whether 'auto' tries DAQP first on `problem`: where daqp imports and DAQP measured
    faster than the interior point on such a layer LP.

    The rule (m = unknowns, n = rows):
    - l_1: n + m <= L1_COLUMNS. DAQP gets the dense explicit form with one slack column per
      row, and its cost grows with those n + m columns far faster than the interior point's,
      which eliminates the slacks. DAQP/ipm time, layer (n, m): captured ReLU layers
      (noise 1e-4 to 1e-1, with and without a bound) (30, 20) 0.20-0.30, (60, 20) 0.23-0.42,
      (250, 20) 3.7-5.8, (250, 110) 4.6-12, (500, 30) 13-36, (600, 250) 32-92, (784, 60)
      50-140; random ReLU layers (noise 1e-3) (40, 10) 0.27, (100, 20) 0.71, (80, 40) 0.79,
      (130, 20) 1.01, (100, 40) 1.39; LeakyReLU (every row two-sided, so twice the explicit
      rows) (60, 20) 0.74, (80, 20) 1.39, (60, 40) 1.15.
    - l_inf with a positive slack floor (the observation proves noise: a ReLU output below
      0), m <= LINF_FLOOR_INPUTS: the optimum then mostly sits at the floor, few rows bind,
      and the warm start is a few dozen pivots away. Measured on captured ReLU layer LPs
      (uniform noise 1e-4 to 1e-1 of max|x|, with and without a stated bound): (600, 250)
      0.23-0.65, (784, 60) 0.18-0.24, (500, 30) 0.16-0.25; (800, 350) 0.73-0.77 and
      (1000, 500) 1.5-3.2 (hence the limit).
    - l_inf without one, m <= LINF_INPUTS where some rows are one-sided (ReLU rows below the
      threshold: hidden ReLU layers, whose observation is an estimate >= 0), else m <=
      LINF_TWO_SIDED_INPUTS: there the optimum is a Chebyshev vertex with m + 1 binding rows,
      each a pivot of O((n + m)^2). Measured: hidden ReLU (250, 20) 0.17-0.20, (250, 110)
      0.47-0.89, (350, 150) 0.93-1.51; identity, LeakyReLU, sigmoid and tanh layers
      (n about 2.5 m): m = 20 0.18-0.26, m = 60 0.45-0.54, m = 80 0.74-0.81, m = 100
      1.05-1.31, m = 200 2.0-2.3.
    - Neither where the slack floor exceeds FAR_FLOOR times the largest band end: the
      observation is then far from the network's range (noise above a few % of max|y|, or a
      point gradient descent projects), the LP's optimal face is large, and DAQP returns a
      vertex of it where the interior point returns a central point. On LP-projected
      gradient descent (tests/test_reconstruct.py, plain PGD on a 20 x 100 x 500 net) the
      vertex of the first projection (floor 0.13-0.15 of max|y|) zeroed the hidden units,
      and PGD stalled at z = 0 (relative error 1.0; interior point 5e-7); with this limit
      (also with 0.01 or 0.1) it converged (4e-7).
    Where the rule says no, the interior point comes first. The rule is about time: DAQP's
    answer is a vertex of the LP's optimal face, the interior point's a central point, and
    where that face is large the latent error differs (measured, 15-40 noisy instances,
    DAQP's median latent error over the interior point's: 110 x 250 x 600 0.94 / 1.06 /
    1.20 at noise 1e-4 / 1e-3 / 1e-2; 20 x 60 x 784 1.42 / 1.32 / 1.50). Measured by
    `python benchmarks/bench_lp_engines.py --grid` (the captured LPs) and the random layer
    LPs of `--random`; the lead's table is in ARCHITECTURE.md.
    """
    if not _daqp.available() or _far_from_range(problem):
        return False
    m, n = problem.n_inputs, problem.n_rows
    if problem.norm == "l1":
        return n + m <= L1_COLUMNS
    if float(problem.slack_floors()[0]) > 0.0:
        return m <= LINF_FLOOR_INPUTS
    band = problem.band
    one_sided = np.isfinite(band.upper) != np.isfinite(band.lower)
    return m <= (LINF_INPUTS if one_sided.any() else LINF_TWO_SIDED_INPUTS)


def _far_from_range(problem: LayerProblem) -> bool:
    """Whether the slack floor (what y alone proves about the noise) exceeds FAR_FLOOR times
    the largest finite band end (about max|y|)."""
    band = problem.band
    ends = np.concatenate([band.upper[np.isfinite(band.upper)],
                           band.lower[np.isfinite(band.lower)]])
    floor = float(problem.slack_floors().max(initial=0.0))
    return floor > FAR_FLOOR * float(np.max(np.abs(ends), initial=0.0))


# The limits of `daqp_pays` (measured there).
FAR_FLOOR = 0.03
L1_COLUMNS = 80
LINF_FLOOR_INPUTS = 300
LINF_INPUTS = 120
LINF_TWO_SIDED_INPUTS = 80

_INTERIOR = Fallback(_ipm.BACKEND, _highs.BACKEND)

register("auto", Fallback(_daqp.BACKEND, _INTERIOR, use_first=daqp_pays))
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
