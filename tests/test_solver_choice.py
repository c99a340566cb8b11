"""solver='auto': DAQP where it measured faster, the interior point and HiGHS behind it.

The rule is `solvers.daqp_pays` (its docstring holds the measurements); these tests check
that 'auto' follows it, finds HiGHS's optima whichever backend answers, says 'optimal' only
with a certified answer, and works without the daqp package.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
from conftest import realizable_instance, set_ceiling
from hypothesis import given, settings
from hypothesis import strategies as st
from test_daqp import agrees_with_highs, lying_daqp, noisy_problem, problems

from layerinv import get_activation, invert, solvers
from layerinv.results import Status
from layerinv.solvers import _daqp
from layerinv.solvers.problem import ROUNDOFF, LayerProblem, check_result


def without_daqp(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "daqp", None)  # `import daqp` raises ImportError


# ------------------------------------------------------------------ HiGHS's optima
@given(problem=problems, ceiling=st.sampled_from([None, "loose", "contradicted"]))
@settings(max_examples=300, deadline=None)
def test_auto_finds_highs_optimum_with_or_without_a_noise_bound(problem, ceiling):
    """The front door with solver='auto' and 'highs' on the same LP (l1 included, DAQP or
    the interior point answering as the rule says): the same status, optimal objectives
    equal to 1e-7 relative; a loose ceiling is twice the l_inf optimum, a contradicted one
    half of it. An 'optimal' answer passes the post-check, and DAQP's carries its certified
    gap (at most CERTIFIED) in its accuracy."""
    set_ceiling(problem, ceiling)
    reference = solvers.solve(problem, "highs")
    answer = solvers.solve(problem, "auto")
    expected = Status.INFEASIBLE if ceiling == "contradicted" else Status.OPTIMAL
    assert reference.status == expected, reference.message
    assert answer.status == expected, answer.message
    if expected == Status.OPTIMAL:
        # The interior point's gap tolerance is 1e-9 (1 + |objective|), looser than 1e-7
        # relative where the optimum is below 1e-2 (measured: 1.1e-7 relative at 4.4e-3).
        close = abs(answer.objective - reference.objective) <= 1e-9 * (1 + reference.objective)
        assert agrees_with_highs(answer.objective, problem, reference) or (
            answer.solver == "ipm" and close), (
            answer.solver, answer.objective, reference.objective)
        assert check_result(problem, dataclasses.replace(answer)).status == Status.OPTIMAL
        if answer.solver == "daqp":
            certified = (_daqp.CERTIFIED + ROUNDOFF) * (1 + abs(answer.objective))
            assert answer.accuracy <= certified, answer.accuracy


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_an_uncertified_daqp_answer_is_never_optimal_under_auto(monkeypatch, norm):
    """DAQP saying 'optimal' at a point 1e-6 above the optimum (both attempts): 'auto' does
    not return it, the interior point solves the LP instead, and says so."""
    problem = noisy_problem(1, "relu", norm, 10, 40, 1e-3, free_box=False)
    assert solvers.daqp_pays(problem)
    honest = solvers.solve(problem, "highs")
    lying_daqp(monkeypatch, excess=1e-6)
    answer = solvers.solve(problem, "auto")
    assert answer.status == Status.OPTIMAL and answer.solver == "ipm", answer.message
    assert "daqp: numerical_error; solved by ipm instead" in answer.message
    assert agrees_with_highs(answer.objective, problem, honest)


# ------------------------------------------------------------------ the rule
def layer(m: int, n: int, norm: str, *, floor: float, one_sided: bool) -> LayerProblem:
    """A layer LP of the shape asked for: a ReLU band with (one_sided) or without rows below
    the threshold, and a slack floor of `floor` times max|y| (a ReLU output below 0) or
    none (0)."""
    rng = np.random.default_rng(0)
    y = np.abs(rng.normal(size=n)) + 1.0
    if one_sided:
        y[: n // 2] = 0.0
    if floor > 0:
        y[0] = -floor * y.max()
    band = get_activation("relu").band(y, threshold=0.1 * floor * y.max() + 1e-6)
    assert bool(band.t_floor.max() > 0) == (floor > 0)
    return LayerProblem(rng.normal(size=(n, m)), None, band, np.zeros(m), np.full(m, np.inf),
                        norm)


@pytest.mark.parametrize(("m", "n", "norm", "floor", "one_sided", "pays"), [
    (20, 60, "l1", 1e-3, True, True),        # n + m = 80: DAQP 0.30-0.44x the interior point
    (20, 61, "l1", 1e-3, True, False),       # 81 columns: beyond L1_COLUMNS
    (300, 600, "linf", 1e-3, True, True),    # a slack floor: up to 300 unknowns
    (301, 600, "linf", 1e-3, True, False),
    (120, 250, "linf", 0.0, True, True),     # hidden ReLU layer (no floor): up to 120
    (121, 250, "linf", 0.0, True, False),
    (80, 200, "linf", 0.0, False, True),     # every row two-sided, no floor: up to 80
    (81, 200, "linf", 0.0, False, False),
    (20, 200, "linf", 0.029, True, True),    # a floor up to FAR_FLOOR of max|y|
    (20, 200, "linf", 0.031, True, False),   # beyond: far from the range, a vertex misleads
    (20, 50, "l1", 0.031, True, False),
])
def test_daqp_goes_first_where_it_measured_faster(m, n, norm, floor, one_sided, pays):
    problem = layer(m, n, norm, floor=floor, one_sided=one_sided)
    assert solvers.daqp_pays(problem) is pays


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_auto_answers_with_the_backend_the_rule_names(norm):
    """A noisy 10 x 60 x 200 ReLU net: l_inf goes to DAQP on both layers; l1 goes to the
    interior point on the (200, 60) layer (260 columns) and to DAQP on the (60, 10) one."""
    net, _, clean = realizable_instance([10, 60, 200], seed=3)
    rng = np.random.default_rng(3)
    amplitude = 1e-3 * np.abs(clean).max()
    x = clean + rng.uniform(-amplitude, amplitude, size=clean.shape)
    result = invert(net, x, norm, progress=False)
    assert result.status == "optimal"
    expected = ["daqp", "daqp"] if norm == "linf" else ["daqp", "ipm"]
    assert [report.solver for report in result.layers] == expected


# ------------------------------------------------------------------ without the package
def test_auto_works_without_the_daqp_package(monkeypatch):
    """Where `import daqp` fails, 'auto' is the interior point (then HiGHS): the same
    answers as solver='ipm', bitwise, and no error."""
    net, _, clean = realizable_instance([10, 60, 200], seed=4)
    rng = np.random.default_rng(4)
    amplitude = 1e-3 * np.abs(clean).max()
    x = clean + rng.uniform(-amplitude, amplitude, size=clean.shape)
    without_daqp(monkeypatch)
    assert not _daqp.available()
    for method in ("linf", "l1"):
        auto = invert(net, x, method, progress=False)
        ipm = invert(net, x, method, solver="ipm", progress=False)
        assert auto.status == "optimal"
        assert [r.solver for r in auto.layers] == ["ipm", "ipm"]
        np.testing.assert_array_equal(auto.z, ipm.z)
