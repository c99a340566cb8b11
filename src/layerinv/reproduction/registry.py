"""The experiment registry: which experiments exist, by name, and what each provides.

An **experiment** is a module (or any object) with:

- `NAME` (str), `TITLE` (str), `DESCRIPTION` and `PAPER` (str or a function returning one: what
  is run, and the paper's own numbers), `TIMING_FIELDS` (metric names that are wall-clock
  times: they differ from run to run and are left out when rows are compared);
- `grid(quick: bool, trials: int | None) -> list[dict]`: the trials, each a dict of
  JSON-serialisable parameters including its `method` and `seed`; `trials` overrides the count
  per grid point; the quick grid is a subset of the full one (same keys), so a quick run is the
  start of a full run in the same results file;
- `run_trial(params, shared) -> dict`: the metrics of one trial, a function of `params` only
  (seeded from them, never from the worker or the order);
- optionally `shared(quick) -> object`, built once per run and sent once to each worker (a
  network, a data set), and `cost(params) -> float`, the estimated seconds of a trial (for
  chunking trials into tasks);
- optionally batches: `batch_key(params) -> hashable | None`, `run_batch(params_list,
  shared) -> list[dict]` and `BATCH_SIZE` (int). Missing trials of one experiment with the
  same non-None key are grouped, in grid order, into batches of at most BATCH_SIZE, and each
  batch is one `run_batch` call returning one metrics dict per trial, in order (gradient
  descent runs every trial of a batch in one tensor). The store still gets one row per
  trial, and resuming is unchanged: a partly stored grid cell makes a smaller batch of its
  missing trials. For that, a trial's metrics must not depend on which trials share its
  batch (`run_trial` of that trial alone must give the same, timing fields aside; the tests
  check it bitwise). A batched trial's `seconds` (the row's wall time) is the batch's wall
  time divided by its size, and its versions say so: `batch` (the size) and `seconds` (a
  sentence); the report repeats it;
- optionally `EXCLUSIVE = True`: its trials run after all the others, one at a time in this
  process (never beside another trial, whatever `workers` is), for clean wall-clock times;
- `figures(rows, out_dir) -> list[Path]`, `summary(rows) -> str` (a Markdown table) and
  `verdict(rows) -> str` (one sentence against the paper, computed from the rows), where each
  row is a dict of the trial's parameters and metrics plus `trial_seconds`.

`EXPERIMENTS` maps each name to an import reference, 'package.module' or 'package.module:attr',
so that worker processes (local or on a Dask cluster) find the experiment by name; `register`
adds one. The order of registration is the order of the report (`names()`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from layerinv.errors import InputError

EXPERIMENTS: dict[str, str] = {
    "success-vs-k": "layerinv.reproduction.experiments.success_vs_k",
    "noise": "layerinv.reproduction.experiments.noise",
    "mnist": "layerinv.reproduction.run:MNIST",
    "sensing": "layerinv.reproduction.run:SENSING",
    "timing": "layerinv.reproduction.experiments.timing",
}


def names() -> tuple[str, ...]:
    """Every registered experiment, in registration order (the report's order)."""
    return tuple(EXPERIMENTS)


def register(name: str, reference: str) -> None:
    """Add an experiment: `reference` is 'package.module' or 'package.module:attribute'.

    Workers import it by that reference, so it must be importable there too (a module of an
    installed package, not a script's __main__).
    """
    EXPERIMENTS[name] = reference


def load_experiment(name: str) -> Any:
    """The experiment object (module or adapter) registered under `name`."""
    if name not in EXPERIMENTS:
        raise InputError(f"experiment must be one of {', '.join(EXPERIMENTS)}; got {name!r}")
    reference = EXPERIMENTS[name]
    module_name, _, attribute = reference.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def available(name: str) -> tuple[bool, str]:
    """(True, '') if the experiment can run here, else (False, why)."""
    try:
        experiment = load_experiment(name)
    except ImportError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    check = getattr(experiment, "available", None)
    if callable(check):
        return check()
    return True, ""


def display_name(experiment: Any) -> str:
    return str(getattr(experiment, "NAME", None) or getattr(experiment, "name", "?"))


def call_optional(experiment: Any, attribute: str, *args: Any) -> Any:
    """An experiment's attribute, called with `args` if it is a function; None if absent."""
    value = getattr(experiment, attribute, None)
    return value(*args) if callable(value) else value


def timing_fields(name: str) -> tuple[str, ...]:
    """The metric names of an experiment that are wall-clock times."""
    return tuple(getattr(load_experiment(name), "TIMING_FIELDS", ("seconds",)))


def resolve_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(names to run, notes on skipped ones); 'all' means every experiment that can run."""
    wanted: list[str] = []
    notes: list[str] = []
    for name in names:
        if name == "all":
            for candidate in names():
                ok, why = available(candidate)
                if ok:
                    wanted.append(candidate)
                else:
                    notes.append(f"{candidate}: skipped, not available here ({why})")
        elif name not in EXPERIMENTS:
            raise InputError(f"experiment must be one of {', '.join(EXPERIMENTS)} or 'all'; "
                             f"got {name!r}")
        else:
            ok, why = available(name)
            if not ok:
                raise InputError(f"experiment {name!r} is not available here: {why}")
            wanted.append(name)
    return list(dict.fromkeys(wanted)), notes
