"""Reproduce the paper with one command: plan, run and store the experiments' trials.

The experiments and what each must provide are in `registry`.

`run_experiments(...)` is what `layerinv reproduce` runs: it opens (or creates) the results file
(a file that is not ours is refused before anything runs), skips the trials already stored,
groups the rest into units (batches or single trials, `make_units`), runs them through
`parallel.map_trials` (`execute_unit`) in a shuffled (seeded) order so the progress
bar's ETA reflects the mix of cheap and costly trials, then the EXCLUSIVE experiments' trials
in this process, stores each trial as it finishes, then renders the report and prints each
experiment's summary table and verdict.

Cost of the full grids (`layerinv reproduce all`, 200 trials per point, every method),
estimated by `python scripts/estimate_full_run.py` from whole grid cells of every kind run
through this code on 2 workers: 49 min (load average about 2, our own workers) to 69 min
(load up to 3): success-vs-k 34-55 min of it, mnist 7, sensing 4, timing 2 (alone, last),
noise 1. Batching is what makes the difference: in one process, a gradient-descent trial of
success-vs-k took 0.79-0.89 s as one call and 0.30-0.40 s in a batch of 10 (k = 10 ... 250).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from layerinv.errors import InputError, LayerinvError
from layerinv.reproduction.registry import display_name, load_experiment, resolve_names
from layerinv.reproduction.store import ResultsStore, to_jsonable, trial_key
from layerinv.results import GRADIENT_METHODS

DEFAULT_DB = "layerinv-results.sqlite"
DEFAULT_OUT = "layerinv-report"
SHUFFLE_SEED = 0
EXIT_INTERRUPTED = 130


# ------------------------------------------------------------------------------ workers
_VERSIONS: dict[str, Any] | None = None


def worker_versions() -> dict[str, Any]:
    """Versions and platform of the process running a trial (cached per process)."""
    global _VERSIONS
    if _VERSIONS is None:
        from layerinv.reproduction.report import package_versions

        packages = package_versions()
        _VERSIONS = {name: packages[name] for name in ("layerinv", "numpy", "scipy",
                                                       "highspy", "torch", "threadpoolctl")}
        _VERSIONS.update({"python": platform.python_version(), "platform": platform.platform(),
                          "cpu_count": os.cpu_count()})
    return dict(_VERSIONS)


def batch_size(experiment: Any) -> int:
    """The most trials an experiment runs in one `run_batch` call (1: it has no batches)."""
    if not callable(getattr(experiment, "run_batch", None)):
        return 1
    size = getattr(experiment, "BATCH_SIZE", 1)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise LayerinvError(f"experiment {display_name(experiment)!r}: BATCH_SIZE must be an "
                            f"int >= 1; got {size!r}")
    return size


def make_units(tasks: Sequence[tuple[str, dict[str, Any]]], experiments: dict[str, Any]
               ) -> list[tuple[str, list[dict[str, Any]]]]:
    """The trials grouped into units of work, in the order of their first trial.

    Trials of one experiment whose `batch_key` is the same (not None) form batches of at
    most `BATCH_SIZE`, in the order given; every other trial is a unit of its own. Only the
    missing trials are here, so a partly stored cell makes a smaller batch: that is safe
    because a trial's metrics do not depend on the other trials of its batch.
    """
    units: list[tuple[str, list[dict[str, Any]]]] = []
    open_batches: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for name, params in tasks:
        experiment = experiments[name]
        size = batch_size(experiment)
        key = experiment.batch_key(params) if size > 1 else None
        if key is None:
            units.append((name, [params]))
            continue
        members = open_batches.get((name, key))
        if members is None or len(members) >= size:
            members = []
            open_batches[(name, key)] = members
            units.append((name, members))
        members.append(params)
    return units


def execute_unit(unit: tuple[str, list[dict[str, Any]]], shared: Any) -> list[dict[str, Any]]:
    """Run a unit of `make_units` in whichever process this is: one outcome per trial, as
    `execute_trial` gives. A batch runs through the experiment's `run_batch`; each of its
    trials gets the batch's wall time divided by its size as `seconds`, and `batch` (its
    size) in its versions. A batch that raises fails every one of its trials."""
    name, batch = unit
    try:
        experiment = load_experiment(name)
        if batch_size(experiment) == 1 or experiment.batch_key(batch[0]) is None:
            return [execute_trial((name, params), shared) for params in batch]
        own = None if shared is None else shared.get(name)
        started = time.perf_counter()
        results = experiment.run_batch([dict(p) for p in batch], own)
        seconds = (time.perf_counter() - started) / len(batch)
        if not isinstance(results, list) or len(results) != len(batch) or not all(
                isinstance(m, dict) for m in results):
            raise TypeError(f"run_batch must return one dict per trial ({len(batch)}); got "
                            f"{type(results).__name__}")
        versions = {**worker_versions(), "batch": len(batch),
                    "seconds": f"wall time of a batch of {len(batch)} trials / {len(batch)}"}
        return [{"metrics": to_jsonable(m), "seconds": seconds, "versions": versions}
                for m in results]
    except Exception as exc:
        failure = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        return [dict(failure) for _ in batch]


def execute_trial(task: tuple[str, dict[str, Any]], shared: Any) -> dict[str, Any]:
    """Run one trial in whichever process this is: {'metrics', 'seconds', 'versions'}, or
    {'error', 'traceback'} if the trial raised (the run goes on; the trial is not stored)."""
    name, params = task
    try:
        experiment = load_experiment(name)
        own = None if shared is None else shared.get(name)
        started = time.perf_counter()
        metrics = experiment.run_trial(dict(params), own)
        seconds = time.perf_counter() - started
        if not isinstance(metrics, dict):
            raise TypeError(f"run_trial must return a dict; got {type(metrics).__name__}")
        return {"metrics": to_jsonable(metrics), "seconds": seconds,
                "versions": worker_versions()}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


# ------------------------------------------------------------------------------ the run
@dataclasses.dataclass
class RunResult:
    """What `run_experiments` did."""

    names: list[str]
    planned: int
    """Trials in the grids."""
    already_done: int
    """Trials found in the results file and skipped."""
    computed: int = 0
    failed: list[tuple[str, dict[str, Any], str]] = dataclasses.field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    report: Path | None = None
    summaries: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.already_done + self.computed

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return 1 if self.failed else 0


def plan(names: Sequence[str], quick: bool, trials: int | None,
         select: Callable[[str, dict[str, Any]], bool] | None = None
         ) -> dict[str, list[dict[str, Any]]]:
    """Each experiment's grid (filtered by `select`), checked for repeated keys."""
    grids = {}
    for name in names:
        experiment = load_experiment(name)
        grid = [dict(p) for p in experiment.grid(quick, trials)]
        if select is not None:
            grid = [p for p in grid if select(name, p)]
        keys = [trial_key(p) for p in grid]
        if len(set(keys)) != len(keys):
            raise LayerinvError(f"experiment {name!r} declares the same trial twice in its grid")
        grids[name] = grid
    return grids


def needs_torch(experiment: Any, params: dict[str, Any]) -> bool:
    """Whether a trial needs PyTorch: the experiment's `needs_torch(params)`, or by default
    whether its method is a gradient method."""
    check = getattr(experiment, "needs_torch", None)
    if callable(check):
        return bool(check(params))
    return params.get("method") in GRADIENT_METHODS


def without_torch(names: Sequence[str], quick: bool, trials: int | None,
                  select: Callable[[str, dict[str, Any]], bool] | None
                  ) -> tuple[Callable[[str, dict[str, Any]], bool] | None, str]:
    """Where PyTorch cannot be imported: a `select` that leaves out the trials needing it,
    and the one line saying so (else `select` unchanged and '')."""
    from layerinv.reproduction.report import TORCH_NOT_RUN, torch_missing

    if torch_missing() is None:
        return select, ""
    experiments = {name: load_experiment(name) for name in names}

    def runnable(name: str, params: dict[str, Any]) -> bool:
        if needs_torch(experiments[name], params):
            return False
        return select is None or select(name, params)

    grids = plan(names, quick, trials, select)
    skipped = sum(1 for name, grid in grids.items() for p in grid
                  if needs_torch(experiments[name], p))
    if not skipped:
        return select, ""
    total = sum(len(grid) for grid in grids.values())
    methods = sorted({str(p.get("method")) for name, grid in grids.items() for p in grid
                      if needs_torch(experiments[name], p)})
    return runnable, (f"PyTorch cannot be imported ({torch_missing()}): {skipped} of the {total} "
                      f"trials (methods {', '.join(methods)}) are skipped, not stored, and "
                      f"shown in the report as \"{TORCH_NOT_RUN}\"; install it with `pip "
                      f"install -c constraints.txt torch` to run them")


def run_experiments(names: Sequence[str] = ("all",), *, quick: bool = False,
                    trials: int | None = None, workers: int | None = None,
                    scheduler: Any = None, db: str | Path = DEFAULT_DB,
                    out: str | Path | None = DEFAULT_OUT, progress: bool | None = None,
                    select: Callable[[str, dict[str, Any]], bool] | None = None,
                    stream: IO[str] | None = None) -> RunResult:
    """Run the named experiments' missing trials into `db`, then write the report to `out`.

    Parameters
    ----------
    names : experiment names or 'all'
    quick : a few trials per grid point (the README's main job: 47 s measured on 2 cores,
        20 s without PyTorch)
    trials : trials per grid point (overrides the quick/full default)
    workers : local processes (None: every usable core; 1: in this process)
    scheduler : a Dask scheduler address 'tcp://HOST:PORT' or a distributed.Client
    db : the results file (created if missing; refused if it is not ours)
    out : the report folder (None: no report)
    progress : a progress bar (None: when stderr is a terminal)
    select : keep only the trials for which select(name, params) is true (tests, debugging)
    stream : where to print (default sys.stdout)
    """
    from layerinv.reproduction.parallel import map_trials

    stream = sys.stdout if stream is None else stream

    def say(text: str = "") -> None:
        print(text, file=stream, flush=True)

    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int)
                               or trials < 1):
        raise InputError(f"trials must be a positive int; got {trials!r}")
    started = time.perf_counter()
    chosen, notes = resolve_names(names)
    for note in notes:
        say(note)
    select, torch_note = without_torch(chosen, quick, trials, select)
    if torch_note:
        say(torch_note)
    store = ResultsStore(db)
    try:
        grids = plan(chosen, quick, trials, select)
        tasks: list[tuple[str, dict[str, Any]]] = []
        already = 0
        for name in chosen:
            done = store.done_keys(name)
            todo = [p for p in grids[name] if trial_key(p) not in done]
            already += len(grids[name]) - len(todo)
            tasks += [(name, p) for p in todo]
            say(f"{name}: {len(grids[name])} trials, {len(grids[name]) - len(todo)} already "
                f"in {store.path}, {len(todo)} to run")
        planned = sum(len(g) for g in grids.values())
        result = RunResult(chosen, planned, already)
        say(f"total: {planned} trials, {already} done, {len(tasks)} to run"
            + (f" ({'quick' if quick else 'full'} grids)"))
        if tasks:
            try:
                _run_tasks(tasks, store, result, quick=quick, workers=workers,
                           scheduler=scheduler, progress=progress, say=say,
                           map_trials=map_trials)
            except LayerinvError:
                say(f"stopped: {_count_done(store, grids)} of {planned} trials done; run "
                    f"again to resume")
                raise
        result.seconds = time.perf_counter() - started
        if result.interrupted:
            # Counted in the file: a Ctrl-C can land after a commit and before the tally.
            say(f"interrupted: {_count_done(store, grids)} of {planned} trials done; run "
                f"again to resume")
            return result
        if result.failed:
            say(f"{len(result.failed)} trials raised an error and were not stored "
                f"(first: {result.failed[0][0]} {result.failed[0][1]}: {result.failed[0][2]})")
        if out is not None:
            from layerinv.reproduction.report import render

            result.report = render(store, out)
        for name in chosen:
            result.summaries[name] = terminal_summary(store, name)
            say()
            say(result.summaries[name])
        result.seconds = time.perf_counter() - started
        say()
        # Counted in the file, the one truth (the store's lock keeps other runs out).
        say(f"{_count_done(store, grids)} of {planned} trials done ({result.computed} computed "
            f"now) in {result.seconds:.1f} s wall time"
            + (f"; report: {result.report}" if result.report else ""))
        return result
    finally:
        store.close()


def _run_tasks(tasks: list[tuple[str, dict[str, Any]]], store: ResultsStore, result: RunResult,
               *, quick: bool, workers: int | None, scheduler: Any, progress: bool | None,
               say: Callable[[str], None], map_trials: Callable[..., Any]) -> None:
    from tqdm.auto import tqdm

    from layerinv._processes import local_workers

    experiments = {name: load_experiment(name) for name in dict.fromkeys(n for n, _ in tasks)}
    # Batches are formed in grid order (a cell's trials together), then shuffled as units.
    units = make_units(tasks, experiments)
    random.Random(SHUFFLE_SEED).shuffle(units)
    shared = {}
    for name, experiment in experiments.items():
        build = getattr(experiment, "shared", None)
        if callable(build):
            shared[name] = build(quick)

    def cost(unit: tuple[str, list[dict[str, Any]]]) -> float:
        estimate = getattr(experiments[unit[0]], "cost", None)
        return sum(float(estimate(p)) if callable(estimate) else 1.0 for p in unit[1])

    alone = [u for u in units if getattr(experiments[u[0]], "EXCLUSIVE", False)]
    pooled = [u for u in units if not getattr(experiments[u[0]], "EXCLUSIVE", False)]
    if scheduler is not None:
        where = {"scheduler": "dask"}
        say(f"running on the Dask cluster {scheduler}")
    else:
        n = local_workers(pooled, workers, cost) if pooled else 1
        where = {"scheduler": "local", "workers": n}
        say(f"running on {n} local process{'es' if n > 1 else ''}" if n > 1
            else "running in this process")
    for name in dict.fromkeys(u[0] for u in alone):
        count = sum(len(u[1]) for u in alone if u[0] == name)
        say(f"{name}: its {count} trials run last, one at a time in this process, so that "
            f"no other trial slows their wall-clock times")
    bar = tqdm(total=len(tasks), desc="reproduce", unit="trial", smoothing=0.05,
               disable=(not sys.stderr.isatty()) if progress is None else not progress,
               dynamic_ncols=True)
    trials_iter = _outcomes(
        [(map_trials(execute_unit, pooled, shared or None, workers, scheduler, cost=cost),
          where),
         (map_trials(execute_unit, alone, shared or None, 1, None, cost=cost),
          {"scheduler": "local", "workers": 1})])
    try:
        with contextlib.closing(trials_iter):
            for (name, params), outcome in trials_iter:
                if "error" in outcome:
                    result.failed.append((name, params, outcome["error"]))
                    bar.write(f"trial failed: {name} {params}: {outcome['error']}")
                else:
                    versions = outcome["versions"]
                    if store.add(name, params, outcome["metrics"], outcome["seconds"],
                                 versions):
                        result.computed += 1
                bar.update()
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()


def _outcomes(phases: list[tuple[Any, dict[str, Any]]]) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Each trial's ((name, params), outcome) from the phases' unit maps, one after the other,
    its outcome's versions completed with where it ran. Closing this closes every map (Ctrl-C
    ends the pool)."""
    with contextlib.ExitStack() as stack:
        for units_iter, _ in phases:
            stack.enter_context(contextlib.closing(units_iter))
        for units_iter, where in phases:
            for (name, batch), outcomes in units_iter:
                for params, outcome in zip(batch, outcomes, strict=True):
                    if "versions" in outcome:
                        outcome = {**outcome, "versions": {**outcome["versions"], **where}}
                    yield (name, params), outcome


def _count_done(store: ResultsStore, grids: dict[str, list[dict[str, Any]]]) -> int:
    """Trials of the grids found in the results file."""
    return sum(len(store.done_keys(name) & {trial_key(p) for p in grid})
               for name, grid in grids.items())


def terminal_summary(store: ResultsStore, name: str) -> str:
    from layerinv.reproduction.report import records

    experiment = load_experiment(name)
    rows = records(store.rows(name))
    title = getattr(experiment, "TITLE", name)
    try:
        table = experiment.summary(rows)
    except Exception as exc:
        table = f"(no summary: {type(exc).__name__}: {exc})"
    try:
        verdict = experiment.verdict(rows)
    except Exception as exc:
        verdict = f"(no verdict: {type(exc).__name__}: {exc})"
    return f"== {name}: {title} ({len(rows)} trials)\n{table}\n{verdict}"
