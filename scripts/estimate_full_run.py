"""Estimate the wall time of the full `layerinv reproduce all` from measured grid cells.

    python scripts/estimate_full_run.py [--workers 2] [--out estimate.json]

Runs, through `layerinv.reproduction.run.run_experiments` (the code path of `layerinv reproduce`:
batches, worker processes, the store), whole grid cells of every kind into a temporary
results file, then extrapolates each experiment's full grid from them:

- success-vs-k: every method x activation at k = 10, 130, 250 (200 trials each); other k
  interpolated linearly in k;
- noise: both networks, uniform noise, levels 1e-6 and 1e-1, both methods (200 trials each);
  the other levels interpolated in log(level), gaussian noise taken as uniform;
- mnist: every generator x task x method with z* 'gaussian' (100 trials each); 'digit'
  taken as 'gaussian';
- sensing: every cell, instances 0-2 of its 10 (cost x 10 / 3);
- timing: instances 0-1 of its 20 per (net, method), run as `reproduce` runs them (last,
  alone, in process), cost x 10.

Each cell's cost is its share of the measured wall time (wall time of the experiment's run x
the cell's share of the summed trial seconds), so the pool's overlap is counted as measured.
The machine's load average is printed before and after: on a shared machine the estimate is
an upper bound for an idle one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from layerinv.reproduction.registry import load_experiment
from layerinv.reproduction.run import run_experiments
from layerinv.reproduction.store import ResultsStore

SVK_K = (10, 130, 250)
NOISE_LEVELS = (1e-6, 1e-1)


def measure(name: str, select: Any, workers: int, db: Path) -> tuple[float, list[Any]]:
    started = time.perf_counter()
    result = run_experiments([name], workers=workers, db=db, out=None, select=select,
                             stream=open(os.devnull, "w"))
    wall = time.perf_counter() - started
    if result.failed:
        raise SystemExit(f"{name}: {len(result.failed)} trials failed: {result.failed[0]}")
    with ResultsStore(db, create=False) as store:
        rows = store.rows(name)
    return wall, rows


def cell_costs(rows: list[Any], wall: float, key: Any) -> dict[Any, float]:
    """Wall seconds per trial of each cell: the run's wall time shared by trial seconds."""
    total = sum(r.seconds for r in rows)
    seconds: dict[Any, float] = defaultdict(float)
    counts: dict[Any, int] = defaultdict(int)
    for row in rows:
        seconds[key(row.params)] += row.seconds
        counts[key(row.params)] += 1
    return {k: wall * seconds[k] / total / counts[k] for k in seconds}


CELLS: dict[str, dict[str, float]] = {}
"""Per experiment, the measured wall seconds per trial of each cell (for the JSON output)."""


def _keep(name: str, per: dict[Any, float]) -> dict[Any, float]:
    CELLS[name] = {" ".join(map(str, key)): value for key, value in sorted(per.items(),
                                                                          key=str)}
    return per


def estimate_svk(workers: int, db: Path) -> tuple[float, float]:
    exp = load_experiment("success-vs-k")
    wall, rows = measure("success-vs-k", lambda n, p: p["k"] in SVK_K, workers, db)
    per = _keep("success-vs-k", cell_costs(rows, wall, lambda p: (p["activation"],
                                                                   p["method"], p["k"])))
    total = 0.0
    for p in exp.grid(False, None):
        ks = np.array(SVK_K, dtype=float)
        costs = [per[(p["activation"], p["method"], k)] for k in SVK_K]
        total += float(np.interp(p["k"], ks, costs))
    return wall, total


def estimate_noise(workers: int, db: Path) -> tuple[float, float]:
    exp = load_experiment("noise")
    wall, rows = measure("noise", lambda n, p: p["noise"] == "uniform" and p["level"] in
                         NOISE_LEVELS, workers, db)
    per = _keep("noise", cell_costs(rows, wall, lambda p: (p["network"], p["method"],
                                                             p["level"])))
    total = 0.0
    for p in exp.grid(False, None):
        costs = [per[(p["network"], p["method"], level)] for level in NOISE_LEVELS]
        total += float(np.interp(np.log10(p["level"]), np.log10(NOISE_LEVELS), costs))
    return wall, total


def _by_cell(name: str, measured: Any, fields: tuple[str, ...], workers: int, db: Path
             ) -> tuple[float, float]:
    """Measure the trials `measured` keeps; every full-grid trial costs its cell's measured
    wall seconds per trial (a cell: the values of `fields`, all measured)."""
    wall, rows = measure(name, measured, workers, db)
    per = _keep(name, cell_costs(rows, wall, lambda p: tuple(p[f] for f in fields)))
    grid = load_experiment(name).grid(False, None)
    return wall, sum(per[tuple(p[f] for f in fields)] for p in grid)


def estimate_mnist(workers: int, db: Path) -> tuple[float, float]:
    return _by_cell("mnist", lambda n, p: p["source"] == "gaussian",
                    ("generator", "task", "method"), workers, db)


def estimate_sensing(workers: int, db: Path) -> tuple[float, float]:
    return _by_cell("sensing", lambda n, p: p["instance"] < 3, ("network", "m", "method"),
                    workers, db)


def estimate_timing(workers: int, db: Path) -> tuple[float, float]:
    exp = load_experiment("timing")
    wall, rows = measure("timing", lambda n, p: p["instance"] < 2, workers, db)
    return wall, wall * len(exp.grid(False, None)) / len(rows)


ESTIMATORS = {"success-vs-k": estimate_svk, "noise": estimate_noise, "mnist": estimate_mnist,
              "sensing": estimate_sensing, "timing": estimate_timing}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("names", nargs="*", default=list(ESTIMATORS))
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"workers": args.workers, "load_before": os.getloadavg()}
    print(f"load average before: {report['load_before']}", flush=True)
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names:
            wall, full = ESTIMATORS[name](args.workers, Path(tmp) / f"{name}.sqlite")
            total += full
            report[name] = {"measured_wall_s": wall, "full_grid_estimate_s": full,
                            "full_grid_trials": len(load_experiment(name).grid(False, None)),
                            "wall_s_per_trial_by_cell": CELLS.get(name, {})}
            print(f"{name}: measured {wall:.0f} s wall; full grid "
                  f"({report[name]['full_grid_trials']} trials) estimated {full:.0f} s "
                  f"= {full / 60:.1f} min; load {os.getloadavg()}", flush=True)
    report["total_estimate_s"] = total
    report["load_after"] = os.getloadavg()
    print(f"all: estimated {total:.0f} s = {total / 3600:.2f} h on {args.workers} workers; "
          f"load average after: {report['load_after']}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
