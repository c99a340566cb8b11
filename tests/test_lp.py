"""The layer LP: the structured interior point agrees with HiGHS and never crashes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerinv import get_activation
from layerinv.lp import (
    LayerLP,
    least_squares,
    smallest_singular_value,
    solve,
    solve_highs,
    solve_ipm,
    solve_screened,
)


def noisy_layer_lp(m, n, norm, seed, noise=1e-2, activation="relu", hidden=True):
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1 / np.sqrt(n), size=(n, m))
    act = get_activation(activation)
    h = np.maximum(rng.normal(size=m), 0) if hidden else rng.normal(size=m)
    y = act.forward(weight @ h) + rng.uniform(-noise, noise, size=n)
    band = act.band(y, threshold=noise)
    low = np.zeros(m) if hidden else np.full(m, -np.inf)
    return LayerLP(weight, None, band, low, np.full(m, np.inf), norm)


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
    weight = problem.weight.copy()
    weight[:, 1] = weight[:, 0]
    problem.weight = weight
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
