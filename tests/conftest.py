"""Shared helpers for the tests: seeded instances and error measures."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

import layerinv
from layerinv._blas import one_torch_thread


@pytest.fixture
def one_thread():
    """PyTorch on one thread for a test (gradient_descent already does it for its own work):
    the tensors are tiny, and OpenMP workers on a shared two-core machine spin against other
    processes (measured 10x slower with two threads under load)."""
    with one_torch_thread():
        yield


SOURCE = Path(__file__).resolve().parents[1] / "src"


def source_env(**extra: str) -> dict[str, str]:
    """os.environ for a child Python that imports this checkout's layerinv, plus `extra`."""
    out = dict(os.environ)
    out["PYTHONPATH"] = str(SOURCE) + os.pathsep + out.get("PYTHONPATH", "")
    out.update(extra)
    return out


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """||estimate - truth|| / ||truth|| along the last axis."""
    return np.linalg.norm(estimate - truth, axis=-1) / np.linalg.norm(truth, axis=-1)


def count_rows(path) -> int:
    """Trials committed so far in a results file, read as any other program would (read-only,
    while a writer may be running); 0 when there is no file or no table yet."""
    if not Path(path).exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def realizable_instance(widths, seed, **net_options):
    """A seeded random net, a latent z ~ N(0, I) and its output G(z)."""
    net = layerinv.random_network(widths, seed=seed, **net_options)
    z = np.random.default_rng(10_000 + seed).normal(size=widths[0])
    return net, z, net.forward(z)


# Hypothesis explores new examples on every local run; under CI (CI=true) it draws the same
# examples every time, so that a green or red CI run is reproducible.
if os.environ.get("CI"):
    settings.register_profile("ci", derandomize=True, print_blob=True)
    settings.load_profile("ci")


def repaired_objective(problem, h: np.ndarray) -> float:
    """The objective at h (clipped into its box) with the smallest slacks that make it
    feasible: an upper bound on the optimum, whatever tolerance found h."""
    h = np.clip(h, problem.h_low, problem.h_high)
    lower, upper = problem.shifted_band()
    band, u = problem.band, problem.operator.apply(h)
    with np.errstate(invalid="ignore"):
        above = np.where(np.isfinite(upper), (u - upper) / band.upper_slope, 0.0)
        below = np.where(np.isfinite(lower), (lower - u) / band.lower_slope, 0.0)
    needed = np.maximum(np.maximum(above, below), band.t_floor)
    if problem.norm == "linf":
        return float(max(needed.max(), problem.slack_floors()[0]))
    return float(needed.sum())


def set_ceiling(problem, ceiling: str | None) -> None:
    """A slack ceiling on `problem`: None (none), 'loose' (twice HiGHS's l_inf optimum) or
    'contradicted' (half of it)."""
    if ceiling is None:
        return
    import dataclasses

    from layerinv import solvers

    linf = solvers.solve(dataclasses.replace(problem, norm="linf"), "highs").objective
    problem.t_max = 2 * linf if ceiling == "loose" else 0.5 * linf
