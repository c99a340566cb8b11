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
import importlib
import os
import platform
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

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


# ------------------------------------------------------------------------------ adapters
class _ModuleAdapter:
    """What the MNIST and sensing adapters share: their experiment module, imported on use, and
    the trial count per grid point."""

    MODULE = ""
    TRIALS = 0
    QUICK_TRIALS = 0

    def _module(self) -> Any:
        return importlib.import_module(f"layerinv.reproduction.experiments.{self.MODULE}")

    def available(self) -> tuple[bool, str]:
        try:
            self._module()
        except ImportError as exc:
            return False, (f"layerinv.reproduction.experiments.{self.MODULE} cannot be imported: "
                           f"{exc}")
        return True, ""

    def _count(self, quick: bool, trials: int | None) -> int:
        return trials if trials is not None else (self.QUICK_TRIALS if quick else self.TRIALS)


class MnistExperiment(_ModuleAdapter):
    """MNIST denoising and inpainting (paper section 5) through `experiments.mnist`.

    One trial = one (generator, task, z* source, method, instance). Instance i is instance i
    of `mnist.make_instances(..., seed=seed)`, so a row equals the same instance's row of
    `mnist.denoise(n=N, seed=seed)` / `mnist.inpaint(...)`. Tasks: 'denoise' (Gaussian noise,
    variance 0.3 per pixel), 'inpaint-random' (each pixel kept with probability 0.9, no noise),
    'inpaint-block' (a 10 x 10 block hidden, no noise). For the image grids, G(z_hat) of the
    first instances of the figure methods is stored with the row (`image`, rounded to 1e-5).
    """

    NAME = "mnist"
    TITLE = "MNIST denoising and inpainting (paper section 5)"
    TIMING_FIELDS = ("seconds",)
    KINDS = ("relu", "leaky_relu")
    TASKS = ("denoise", "inpaint-random", "inpaint-block")
    SOURCES = ("gaussian", "digit")
    TRIALS = 100
    QUICK_TRIALS = 2
    SEED = 1
    """Kept at 1 so stored rows stay valid; `mnist.make_instances` now tags its streams so that
    seed 0 no longer collides with gradient descent's first restart."""
    DESCRIPTION = (
        "The shipped MNIST VAE decoders ('relu': 20 x 60 x 784, the paper's; 'leaky_relu': "
        "20 x 200 x 500 x 784), z* ~ N(0, I) ('gaussian') or the encoder's mean of a held-out "
        "digit ('digit'). Denoising: x = G(z*) + N(0, 0.3) per pixel; inpainting: 10 % of the "
        "pixels hidden at random, or a 10 x 10 block, no noise. Methods: l_inf and l_1 LPs, "
        "gradient descent (bora2017), LP + GD and the encoder. Latent error, PSNR against "
        "G(z*) (and against the digit).")
    PAPER = (
        "Section 5 shows denoising and inpainting of MNIST digits with the 20 x 60 x 784 ReLU "
        "generator as image grids, the LP's reconstructions next to gradient descent's; it gives "
        "no numeric table for them (the LP's time on this net, 0.5 s, is in the timing table).")

    MODULE = "mnist"

    def grid(self, quick: bool, trials: int | None) -> list[dict[str, Any]]:
        m = self._module()
        count = self._count(quick, trials)
        kinds = ("relu",) if quick else self.KINDS
        sources = ("gaussian",) if quick else self.SOURCES
        out = []
        for kind in kinds:
            for task in self.TASKS:
                extra: dict[str, Any] = {"noise_variance": m.NOISE_VARIANCE if task == "denoise"
                                         else 0.0}
                if task == "inpaint-random":
                    extra["keep"] = m.KEEP
                if task == "inpaint-block":
                    extra["block"] = m.BLOCK
                for source in sources:
                    n = min(count, 200) if source == "digit" else count
                    for i in range(n):
                        for method in m.METHODS:
                            out.append({"task": task, "generator": kind, "source": source,
                                        **extra, "method": method, "instance": i,
                                        "seed": self.SEED})
        return out

    BATCH_SIZE = 25
    """Gradient-method trials per batch: the instances of one setting share the generator,
    whose weights are stored once for the whole batch."""

    def cost(self, params: dict[str, Any]) -> float:
        if params["method"] in ("gd", "lp+gd"):  # as part of a batch
            return 0.2 if params["generator"] == "relu" else 1.0
        return 0.05

    def batch_key(self, params: dict[str, Any]) -> tuple | None:
        """Gradient-method trials that differ only in their instance run as one batch."""
        if params["method"] not in ("gd", "lp+gd"):
            return None
        return tuple(sorted((k, v) for k, v in params.items() if k != "instance"))

    def shared(self, quick: bool) -> dict[str, Any]:
        from layerinv.pretrained import mnist_digits, mnist_encoder, mnist_generator

        digits = mnist_digits()
        kinds = ("relu",) if quick else self.KINDS
        return {kind: (mnist_generator(kind), mnist_encoder(kind), digits.images,
                       digits.labels) for kind in kinds}

    def _setup(self, kind: str, shared: Any) -> tuple[Any, Any, Any, Any]:
        if shared is not None and kind in shared:
            return shared[kind]
        return self.shared(False)[kind] if kind != "relu" else self.shared(True)[kind]

    def _instances(self, params: dict[str, Any], net: Any, encoder: Any, digits: Any,
                   labels: Any, n: int) -> list[Any]:
        m = self._module()
        task = params["task"]
        mask = None if task == "denoise" else task.split("-", 1)[1]
        return m.make_instances(net, encoder, n, source=params["source"],
                                variance=float(params["noise_variance"]), mask=mask,
                                keep=float(params.get("keep", m.KEEP)),
                                block=int(params.get("block", m.BLOCK)),
                                seed=int(params["seed"]), digits=digits, labels=labels)

    @staticmethod
    def _describe(params: dict[str, Any]) -> dict[str, Any]:
        task = params["task"]
        if task == "inpaint-random":
            mask = f"keep {params['keep']:g}"
        elif task == "inpaint-block":
            mask = f"block {params['block']}x{params['block']}"
        else:
            mask = None
        return {"task": task, "generator": params["generator"], "source": params["source"],
                "mask": mask, "noise_variance": params["noise_variance"]}

    def run_trial(self, params: dict[str, Any], shared: Any = None) -> dict[str, Any]:
        return self.run_batch([params], shared)[0]

    def run_batch(self, batch: list[dict[str, Any]], shared: Any = None
                  ) -> list[dict[str, Any]]:
        """Trials of one setting and method (instances differ) in one `run_instances` call:
        the gradient methods run all of them in one tensor, the others one by one."""
        from layerinv._blas import one_torch_thread

        m = self._module()
        first = batch[0]
        if any(self._setting(p) != self._setting(first) for p in batch):
            raise InputError("run_batch takes trials that differ only in their instance")
        net, encoder, digits, labels = self._setup(first["generator"], shared)
        count = max(int(p["instance"]) for p in batch) + 1
        instances = self._instances(first, net, encoder, digits, labels, count)
        chosen = [dataclasses.replace(instances[int(p["instance"])], index=position)
                  for position, p in enumerate(batch)]
        method = first["method"]
        with one_torch_thread():
            run = m.run_instances(net, encoder, chosen, [method],
                                  describe=self._describe(first), seed=int(first["seed"]),
                                  progress=False)
        out = []
        for position, params in enumerate(batch):
            i = int(params["instance"])
            row = {**run.rows[position], "instance": i}
            metrics = {k: v for k, v in row.items() if k not in params}
            if i < m.FIGURE_COLUMNS and method in m.FIGURE_METHODS:
                metrics["image"] = [round(float(v), 5) for v in run.estimates[method][position]]
            out.append(metrics)
        return out

    @staticmethod
    def _setting(params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in params.items() if k != "instance"}

    def _sorted(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        m = self._module()

        def key(row: dict[str, Any]) -> tuple:
            return (row["generator"], _index(self.TASKS, row["task"]),
                    _index(self.SOURCES, row["source"]), _index(m.METHODS, row["method"]),
                    int(row["instance"]))

        return sorted(rows, key=key)

    def summary(self, rows: list[dict[str, Any]]) -> str:
        from layerinv.reproduction.report import not_run

        m = self._module()
        table = m.format_summary(m.summarise(self._sorted(rows)))
        settings = dict.fromkeys((r["generator"], r["task"], r["source"], r["noise_variance"])
                                 for r in self._sorted(rows))
        for setting in settings:  # a gradient method with no rows says why
            for method in GRADIENT_METHODS:
                if not any((r["generator"], r["task"], r["source"], r["noise_variance"],
                            r["method"]) == (*setting, method) for r in rows):
                    generator, task, source, variance = setting
                    table += (f"\n| {generator} | {task} | {source} | {variance:g} | {method} | 0 "
                              f"| {not_run()} |  |  |  |  |")
        sizes = sorted({int(r["_batch"]) for r in rows if (r.get("_batch") or 1) > 1})
        if sizes:
            table += (f"\n\nThe gradient methods ran in batches of {'/'.join(map(str, sizes))}"
                      f" instances in one tensor: their seconds are the batch's gradient wall "
                      f"time / its size (+ the instance's own LP time for lp+gd).")
        return table

    def figures(self, rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
        m = self._module()
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for row in rows:
            if "image" in row:
                key = (row["generator"], row["task"], row["source"])
                groups.setdefault(key, []).append(row)
        paths = []
        for (kind, task, source), members in sorted(groups.items()):
            methods = [meth for meth in m.FIGURE_METHODS
                       if any(r["method"] == meth for r in members)]
            images = {(r["method"], int(r["instance"])): r["image"] for r in members}
            n = 0
            while n < m.FIGURE_COLUMNS and all((meth, n) in images for meth in methods):
                n += 1
            if n == 0:
                continue
            params = members[0]
            net, encoder, digits, labels = self._setup(kind, None)
            instances = self._instances(params, net, encoder, digits, labels, n)
            estimates = {meth: np.array([images[(meth, j)] for j in range(n)])
                         for meth in methods}
            run = m.Run([], instances, estimates)
            noise = params["noise_variance"]
            what = f"noise variance {noise:g}" if noise else "no noise"
            title = f"{task}, {what}, z* {source}, generator {kind}"
            path = Path(out_dir) / f"mnist_{kind}_{task}_{source}.png"
            paths.append(m.figure_grid(run, path, methods=methods, title=title))
        return paths

    EXACT_DB = 100.0
    """PSNR above this counts as exact (an image matching to 1e-5 rms): capped when compared."""

    def verdict(self, rows: list[dict[str, Any]]) -> str:
        m = self._module()
        table = m.summarise(self._sorted(rows))
        by = {(s["generator"], s["task"], s["source"], s["method"]): s for s in table}
        settings = sorted({key[:3] for key in by})
        compared = []
        for setting in settings:
            lp, gd = by.get((*setting, "linf")), by.get((*setting, "gd"))
            if lp and gd:
                compared.append((setting, min(lp["psnr"], self.EXACT_DB),
                                 min(gd["psnr"], self.EXACT_DB)))
        if not compared:
            if rows and not any(r["method"] == "gd" for r in rows):
                from layerinv.reproduction.report import not_run

                return (f"Gradient descent: {not_run()}, so the l_inf LP has nothing to be "
                        f"compared with here (the paper sets the two side by side).")
            return "No l_inf and gradient-descent rows on the same setting yet."
        better = [c for c in compared if c[1] >= c[2] + 1.0]
        worse = [c for c in compared if c[1] <= c[2] - 1.0]

        def shown(value: float) -> str:
            return f">= {self.EXACT_DB:.0f} (exact)" if value >= self.EXACT_DB else f"{value:.1f}"

        cells = "; ".join(f"{t} ({g}, z* {s}): LP {shown(lp)} dB, GD {shown(gd)} dB"
                          for (g, t, s), lp, gd in compared)
        n_min = min(s["n"] for s in table)
        if not worse:
            word = "exceed" if len(better) > len(compared) / 2 else "match"
        else:
            word = "fall short of" if len(worse) > len(compared) / 2 else "partly match"
        reasons = []
        if better:
            text = "the LP is ahead on " + ", ".join(sorted({c[0][1] for c in better}))
            exact = [c for c in better if c[1] >= self.EXACT_DB]
            if exact:
                text += (f" (an exact fit of G(z*), median PSNR >= {self.EXACT_DB:.0f} dB, on "
                         f"{len(exact)} of {len(better)} of those settings)")
            reasons.append(text)
        if worse:
            reasons.append("behind on " + "; ".join(
                self._behind(rows, setting) for setting in sorted({c[0] for c in worse})))
        caveat = f" ({n_min} instances per setting: indicative only)" if n_min < 20 else ""
        return (f"We {word} the paper's qualitative MNIST figures by median PSNR against G(z*): "
                f"{cells}; {'; '.join(reasons) or 'within 1 dB everywhere'}{caveat}.")


    @staticmethod
    def _behind(rows: list[dict[str, Any]], setting: tuple[str, str, str]) -> str:
        """What the rows say about a setting where the l_inf LP is behind: its noise variance
        and how often the LP's own status said the answer was not unique or not optimal."""
        generator, task, source = setting
        mine = [r for r in rows if (r["generator"], r["task"], r["source"]) == setting
                and r["method"] == "linf"]
        variances = sorted({float(r["noise_variance"]) for r in mine})
        noise = ("no noise" if variances == [0.0] else
                 "noise variance " + "/".join(f"{v:g}" for v in variances) + " per pixel")
        flagged = sum(1 for r in mine if r.get("status") != "optimal")
        return (f"{task} ({generator}, z* {source}; {noise}; the l_inf LP's status is not "
                f"'optimal' on {flagged} of {len(mine)} instances)")


class SensingExperiment(_ModuleAdapter):
    """Compressed sensing with the LP as projection (an extension: CSGM, Bora et al. 2017),
    through `experiments.sensing.run`, one (network, m, method, instance) per trial.

    Instance i of a network runs `sensing.run([network], ms=[m], methods=[method], instances=1,
    seed=s_i)` with s_i = SeedSequence([seed, j, i]).generate_state(1)[0] (j = 0 mnist,
    1 random): the same latent (and random net) for every m and method, so curves are paired.
    """

    NAME = "sensing"
    TITLE = "Compressed sensing with a generative prior (extension)"
    TIMING_FIELDS = ("seconds",)
    NETWORKS = ("mnist", "random")
    QUICK_MS = (20, 50, 200)
    QUICK_METHODS = ("pgd", "gd", "lstsq")
    TRIALS = 10
    QUICK_TRIALS = 2
    SEED = 0
    DESCRIPTION = (
        "y = A G(z*), A Gaussian (m x n, N(0, 1/m) entries), no noise; relative error "
        "||x_hat - x|| / ||x|| against m for projected gradient descent with the l_inf LP as "
        "projection (with and without its Gauss-Newton polish), gradient descent on the latent "
        "(CSGM) and the prior-free least squares A^+ y. Networks: the MNIST generator and a "
        "random 20 x 100 x 500 ReLU net (a fresh one per instance).")
    PAPER = (
        "Not an experiment of Lei et al. (2019), which motivates the inversion as the projection "
        "step of projected gradient descent (Shah and Hegde 2018); the setting is that of CSGM "
        "(Bora et al. 2017, Figure 1).")

    MODULE = "sensing"

    def grid(self, quick: bool, trials: int | None) -> list[dict[str, Any]]:
        s = self._module()
        count = self._count(quick, trials)
        ms = self.QUICK_MS if quick else s.DEFAULT_MS
        methods = self.QUICK_METHODS if quick else s.METHODS
        return [{"network": net, "m": int(m), "method": method, "noise": 0.0, "instance": i,
                 "seed": self.SEED}
                for net in self.NETWORKS for m in ms for i in range(count)
                for method in methods]

    def cost(self, params: dict[str, Any]) -> float:
        if params["method"] in ("pgd", "pgd-plain") and int(params["m"]) <= 30:
            return 10.0  # measured 8-23 s per instance at m = 20 (m <= k: PGD does not settle)
        return {"gd": 1.5, "pgd-plain": 3.0, "pgd": 0.5}.get(params["method"], 0.05)

    def shared(self, quick: bool) -> dict[str, Any]:
        from layerinv.pretrained import mnist_generator

        return {"mnist": mnist_generator("relu")}

    def run_trial(self, params: dict[str, Any], shared: Any = None) -> dict[str, Any]:
        from layerinv._blas import one_torch_thread

        s = self._module()
        network = params["network"]
        j = self.NETWORKS.index(network)
        seed = int(np.random.SeedSequence([int(params["seed"]), j, int(params["instance"])])
                   .generate_state(1)[0])
        if network == "mnist":
            net = (shared or {}).get("mnist") or self.shared(True)["mnist"]
            networks: Any = {"mnist": net}
        else:
            networks = [network]
        with one_torch_thread():
            rows = s.run(networks, ms=[int(params["m"])], methods=[params["method"]],
                         instances=1, seed=seed, noise=float(params["noise"]), progress=False)
        row = rows[0]
        metrics = {k: v for k, v in row.items() if k not in params}
        metrics["instance_seed"] = seed
        return metrics

    def summary(self, rows: list[dict[str, Any]]) -> str:
        from layerinv.reproduction.report import not_run

        s = self._module()
        table = s.format_markdown(s.summarise(rows))
        points = dict.fromkeys((r["network"], int(r["m"])) for r in rows)
        for network, m in sorted(points, key=lambda p: (p[0], p[1])):
            if not any(r["network"] == network and int(r["m"]) == m and r["method"] == "gd"
                       for r in rows):  # gradient descent with no rows says why
                table += f"\n| {network} | {m} | gd | 0 | {not_run()} |  |  |  |  |"
        return table

    def figures(self, rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
        s = self._module()
        if not rows:
            return []
        return [s.plot(rows, Path(out_dir) / "sensing.png")]

    def verdict(self, rows: list[dict[str, Any]]) -> str:
        s = self._module()
        table = s.summarise(rows)
        parts = []
        for network in self.NETWORKS:
            mine = [r for r in table if r["network"] == network]
            clauses = []
            for method, label in (("pgd", "LP-PGD"), ("gd", "gradient descent")):
                rows_m = [r for r in mine if r["method"] == method]
                if not rows_m:
                    if method == "gd" and mine:
                        from layerinv.reproduction.report import not_run

                        clauses.append(f"gradient descent: {not_run()}")
                    continue
                good = sorted(r["m"] for r in rows_m if r["median"] < s.SUCCESS)
                clauses.append(f"{label}'s median error is below {s.SUCCESS:g} from m = "
                               f"{good[0]}" if good else
                               f"{label}'s median error is below {s.SUCCESS:g} at none of "
                               f"m = {', '.join(str(r['m']) for r in rows_m)}")
            if clauses:
                parts.append(f"on the {network} net " + " and ".join(clauses))
        if not parts:
            return "No sensing rows recorded yet."
        exact = [r for r in table if r["method"] == "pgd" and r["median"] < 1e-10]
        gd_there = [r for r in table if r["method"] == "gd" and r["median"] > 1e-6
                    and any(e["network"] == r["network"] and e["m"] == r["m"] for e in exact)]
        why = ""
        if gd_there:
            low = min(r["median"] for r in gd_there)
            high = max(r["median"] for r in gd_there)
            why = (f"; at {len(gd_there)} (network, m) points LP-PGD's median error is below "
                   f"1e-10 where gradient descent's is {low:.1e} to {high:.1e}")
        n_min = min(r["count"] for r in table)
        caveat = f" ({n_min} instances per point: indicative only)" if n_min < 20 else ""
        return "Beyond the paper (no figure to match): " + "; ".join(parts) + why + caveat + "."


def _index(values: Sequence[str], value: str) -> int:
    return values.index(value) if value in values else len(values)


MNIST = MnistExperiment()
SENSING = SensingExperiment()
