"""The layer LP: the structured interior point agrees with HiGHS and never crashes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerinv import get_activation
from layerinv._linalg import least_squares, smallest_singular_value
from layerinv.solvers import ACCURACY_FACTOR, LayerProblem, solve
from layerinv.solvers._highs import solve_highs
from layerinv.solvers._ipm import solve_ipm, solve_screened


def noisy_layer_lp(m, n, norm, seed, noise=1e-2, activation="relu", hidden=True):
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1 / np.sqrt(n), size=(n, m))
    act = get_activation(activation)
    h = np.maximum(rng.normal(size=m), 0) if hidden else rng.normal(size=m)
    y = act.forward(weight @ h) + rng.uniform(-noise, noise, size=n)
    band = act.band(y, threshold=noise)
    low = np.zeros(m) if hidden else np.full(m, -np.inf)
    return LayerProblem(weight, None, band, low, np.full(m, np.inf), norm)


@pytest.mark.parametrize("norm", ["linf", "l1"])
@given(seed=st.integers(0, 10_000), m=st.integers(2, 30), ratio=st.floats(2.0, 5.0),
       activation=st.sampled_from(["relu", "identity", "leaky_relu"]),
       hidden=st.booleans())
@settings(max_examples=25, deadline=None)
def test_interior_point_matches_highs(norm, seed, m, ratio, activation, hidden):
    problem = noisy_layer_lp(m, int(ratio * m), norm, seed, activation=activation,
                             hidden=hidden)
    ours, reference = solve_ipm(problem), solve_highs(problem)
    assert reference.status == "optimal"
    assert ours.status == "optimal"
    assert ours.objective == pytest.approx(reference.objective, rel=1e-6, abs=1e-9)


def test_interior_point_survives_a_singular_normal_matrix():
    """Duplicate columns make W' D W singular: the solve must fall back, never raise."""
    problem = noisy_layer_lp(10, 40, "linf", seed=1)
    weight = problem.operator.to_dense().copy()
    weight[:, 1] = weight[:, 0]
    problem = dataclasses.replace(problem, operator=weight)  # an array: a dense operator
    result = solve(problem)
    assert result.status == "optimal"
    assert result.objective == pytest.approx(solve_highs(problem).objective, rel=1e-6)


def test_infeasible_noise_bound_is_a_status_not_an_exception():
    problem = noisy_layer_lp(10, 40, "linf", seed=2, noise=1e-2)
    problem.t_max = 1e-6
    assert solve(problem).status == "infeasible"
    problem.norm = "l1"
    assert solve(problem).status == "infeasible"
    assert solve_highs(problem).status == "infeasible"


def test_least_squares_reports_rank_deficiency():
    rng = np.random.default_rng(0)
    tall = rng.normal(size=(30, 10))
    h, full_rank, normal = least_squares(tall, tall @ np.arange(10.0))
    assert full_rank and np.allclose(h, np.arange(10.0))
    assert np.allclose(np.triu(normal), np.triu(tall.T @ tall))
    assert least_squares(tall[:5], np.ones(5))[:2] == (None, False)
    tall[:, 3] = tall[:, 4]
    assert least_squares(tall, np.ones(30))[:2] == (None, False)


def test_smallest_singular_value_matches_svd():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(40, 12))
    expected = np.linalg.svd(weight, compute_uv=False).min()
    assert smallest_singular_value(weight) == pytest.approx(expected, rel=1e-10)
    assert smallest_singular_value(weight[:5]) == 0.0


@pytest.mark.parametrize("norm", ["linf", "l1"])
@given(seed=st.integers(0, 10_000), noise=st.sampled_from([1e-4, 1e-3, 1e-2]))
@settings(max_examples=20, deadline=None)
def test_screening_gives_the_full_lp_optimum(norm, seed, noise):
    problem = noisy_layer_lp(40, 160, norm, seed, noise=noise)
    screened, full = solve_screened(problem), solve_ipm(problem)
    assert screened.status == "optimal"
    # Both are interior-point answers, optimal to a duality gap of 1e-9 (1 + |objective|).
    assert screened.objective == pytest.approx(full.objective, rel=1e-6, abs=2e-9)
    assert screened.t.shape == full.t.shape
    assert "screened" in screened.message


@given(seed=st.integers(0, 10_000), m=st.integers(2, 25), ratio=st.floats(2.0, 5.0),
       squeeze=st.floats(0.0, 1.0))
@settings(max_examples=25, deadline=None)
def test_interior_point_slack_ceilings_match_highs(seed, m, ratio, squeeze):
    """l_1 with a ceiling on every slack, between the l_inf optimum (the smallest feasible
    ceiling) and the free l_1 fit's largest slack: the interior point's optimum is HiGHS's
    and no slack passes the ceiling."""
    problem = noisy_layer_lp(m, int(ratio * m), "l1", seed)
    free = solve_ipm(problem)
    smallest = solve_ipm(dataclasses.replace(problem, norm="linf")).objective
    ceiling = smallest * 1.001 + squeeze * max(float(free.t.max()) - smallest, 0.0)
    bounded = dataclasses.replace(problem, t_max=ceiling)
    ours, reference = solve_ipm(bounded), solve_highs(bounded)
    assert ours.status == reference.status == "optimal"
    assert ours.objective == pytest.approx(reference.objective, rel=1e-6, abs=1e-9)
    # To the solver's stated accuracy: at a ceiling of round-off size (realizable data, 8e-11)
    # the slack passed it by 1e-12 with an accuracy of 1.1e-9 (seed 243, m 2, ratio 2).
    assert ours.t.max() <= ceiling * (1 + 1e-8) + ours.accuracy


@pytest.mark.parametrize("norm", ["linf", "l1"])
@given(seed=st.integers(0, 10_000), m=st.integers(2, 30), ratio=st.floats(2.0, 5.0))
@settings(max_examples=25, deadline=None)
def test_interior_point_accuracy_covers_its_error(norm, seed, m, ratio):
    """A contradicted bound is claimed only beyond ACCURACY_FACTOR times the stated accuracy:
    the objective's excess over the optimum (HiGHS's vertex) must stay inside that margin."""
    problem = noisy_layer_lp(m, int(ratio * m), norm, seed)
    ours, reference = solve_ipm(problem), solve_highs(problem)
    assert 0 < ours.accuracy < 1e-6
    assert ours.objective - reference.objective <= ACCURACY_FACTOR * ours.accuracy + 1e-12


def test_noise_bound_is_decided_by_the_free_linf_lp():
    """A bound at the l_inf optimum is met (no proof of contradiction), for l1 too, and its
    answers respect it; a bound below the optimum by far more than the accuracy is not."""
    for norm in ("linf", "l1"):
        problem = noisy_layer_lp(10, 40, norm, seed=5)
        smallest = solve_ipm(dataclasses.replace(problem, norm="linf")).objective
        for solver in ("auto", "ipm", "highs"):
            met = solve(dataclasses.replace(problem, t_max=smallest), solver)
            assert met.status == "optimal", (norm, solver)
            assert met.t.max() <= smallest * (1 + 1e-6)
            broken = solve(dataclasses.replace(problem, t_max=0.9 * smallest), solver)
            assert broken.status == "infeasible", (norm, solver)


def test_the_walk_hands_its_least_squares_point_to_the_screening(monkeypatch):
    """The layer inversion has already solved least squares on the pinned rows of the first
    LP's band: the interior point's screening starts from it instead of solving it again
    (2-6 ms of a 26 ms (600, 250) LP)."""
    import layerinv
    from layerinv.solvers import _ipm

    calls = []
    real = _ipm.least_squares
    monkeypatch.setattr(_ipm, "least_squares", lambda *a: calls.append(1) or real(*a))
    net = layerinv.random_network([10, 60, 200], seed=4)
    rng = np.random.default_rng(4)
    x = net(rng.standard_normal(10))
    x = x + rng.uniform(-1e-3, 1e-3, x.shape) * np.abs(x).max()
    result = layerinv.invert(net, x, "linf", solver="ipm", progress=False)
    assert [r.solver for r in result.layers] == ["ipm", "ipm"]  # both layers went to the LP
    assert calls == []  # every screening started from the point handed over


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_a_wrong_start_costs_time_never_the_answer(norm):
    """`pinned_solution` is a start only: the screening re-checks every row, so a start far
    from the least-squares point still gives the LP's optimum."""
    problem = noisy_layer_lp(20, 80, norm, seed=5)
    right = solve_screened(problem)
    wrong = solve_screened(dataclasses.replace(
        problem, pinned_solution=np.full(problem.n_inputs, 50.0)))
    assert right.status == wrong.status == "optimal"
    assert wrong.objective == pytest.approx(right.objective, rel=1e-7, abs=1e-10)
