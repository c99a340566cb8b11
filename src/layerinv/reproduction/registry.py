"""The experiment registry: which experiments exist, by name, and what each provides.

An **experiment** is a module (one convention for all: the six shipped ones are the modules
of `layerinv.reproduction.experiments`, whose module-level names below are the interface;
a module may hold other code beside it, as `mnist` and `sensing` hold the tasks the CLI also
runs). It provides:

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
- optionally `available() -> (bool, why)` (whether it can run here; an experiment whose
  module cannot be imported is not available either) and `needs_torch(params) -> bool`
  (default: whether the trial's method is a gradient method; such trials are skipped where
  PyTorch is missing);
- `figures(rows, out_dir) -> list[Path]`, `summary(rows) -> str` (a Markdown table) and
  `verdict(rows) -> str` (one sentence against the paper, computed from the rows), where each
  row is a dict of the trial's parameters and metrics plus `trial_seconds`.

`EXPERIMENTS` maps each name to the experiment's module name, so that worker processes
(local or on a Dask cluster) import the experiment by name; `register` adds one, and the
`layerinv reproduce` command takes its choices from `names()`. The order of registration is
the order of the report (`names()`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from layerinv.errors import InputError

EXPERIMENTS: dict[str, str] = {
    "success-vs-k": "layerinv.reproduction.experiments.success_vs_k",
    "noise": "layerinv.reproduction.experiments.noise",
    "mnist": "layerinv.reproduction.experiments.mnist",
    "sensing": "layerinv.reproduction.experiments.sensing",
    "conv": "layerinv.reproduction.experiments.conv",
    "timing": "layerinv.reproduction.experiments.timing",
}
ALL = "all"
"""Not an experiment: the word for every one of them (in `resolve_names` and the CLI)."""


def names() -> tuple[str, ...]:
    """Every registered experiment, in registration order (the report's order)."""
    return tuple(EXPERIMENTS)


def register(name: str, module: str) -> None:
    """Add an experiment: `module` is the import name of a module with the interface above.

    Workers import it by that name, so it must be importable there too (a module of an
    installed package, not a script's __main__).
    """
    if not isinstance(name, str) or not name or name == ALL or name.startswith("-"):
        raise InputError(f"name must be a non-empty str, not {ALL!r} and not starting with "
                         f"'-'; got {name!r}")
    if not isinstance(module, str) or not all(part.isidentifier()
                                              for part in module.split(".")):
        raise InputError(f"module must be a dotted module name such as 'package.module'; "
                         f"got {module!r}")
    EXPERIMENTS[name] = module


def load_experiment(name: str) -> ModuleType:
    """The experiment module registered under `name`."""
    if name not in EXPERIMENTS:
        raise InputError(f"experiment must be one of {', '.join(EXPERIMENTS)}; got {name!r}")
    return importlib.import_module(EXPERIMENTS[name])


def available(name: str) -> tuple[bool, str]:
    """(True, '') if the experiment can run here, else (False, why)."""
    try:
        experiment = load_experiment(name)
    except ImportError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return call_optional(experiment, "available") or (True, "")


def display_name(experiment: Any) -> str:
    return str(getattr(experiment, "NAME", None) or getattr(experiment, "__name__", "?"))


def call_optional(experiment: Any, attribute: str, *args: Any) -> Any:
    """An experiment's attribute, called with `args` if it is a function; None if absent."""
    value = getattr(experiment, attribute, None)
    return value(*args) if callable(value) else value


def timing_fields(name: str) -> tuple[str, ...]:
    """The metric names of an experiment that are wall-clock times."""
    return tuple(getattr(load_experiment(name), "TIMING_FIELDS", ("seconds",)))


def resolve_names(requested: Iterable[str]) -> tuple[list[str], list[str]]:
    """(names to run, notes on skipped ones); 'all' means every experiment that can run."""
    wanted: list[str] = []
    notes: list[str] = []
    for name in requested:
        if name == ALL:
            for candidate in names():
                ok, why = available(candidate)
                if ok:
                    wanted.append(candidate)
                else:
                    notes.append(f"{candidate}: skipped, not available here ({why})")
        elif name not in EXPERIMENTS:
            raise InputError(f"experiment must be one of {', '.join(EXPERIMENTS)} or {ALL!r}; "
                             f"got {name!r}")
        else:
            ok, why = available(name)
            if not ok:
                raise InputError(f"experiment {name!r} is not available here: {why}")
            wanted.append(name)
    return list(dict.fromkeys(wanted)), notes
