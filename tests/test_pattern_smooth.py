"""The pattern method through a smooth output activation (tanh, sigmoid) on ReLU hidden
layers (`_pattern.py`: the region's output is act(J_P z + c_P), solved by sequential QPs and
certified by the nonlinear KKT conditions)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import layerinv
from layerinv import _pattern as pattern
from layerinv.errors import InputError
from layerinv.results import Status

SMOOTH = ("tanh", "sigmoid")


def _net(widths, output, seed, hidden="relu"):
    """A random ReLU net whose last layer has the activation `output` (and a small bias)."""
    base = layerinv.random_network(widths, hidden, seed=seed)
    rng = np.random.default_rng(seed + 7)
    layers = list(base.layers)
    last = layers[-1]
    layers[-1] = layerinv.Layer(last.weight, 0.1 * rng.normal(size=last.n_out), output)
    return layerinv.Network(layers)


def _objective(net, x, z, prior=0.0):
    return float(np.mean((net.forward(z) - x) ** 2) + prior * np.sum(z * z))


@given(seed=st.integers(0, 10_000), output=st.sampled_from(SMOOTH))
@settings(max_examples=30, deadline=None)
def test_an_optimal_answer_through_a_smooth_output_is_the_latent(seed, output):
    """'optimal' (a zero residual on a region of full rank) recovers z*: act is strictly
    increasing, so G(z) = x is the linear system J_P z + c_P = act^-1(x) on the region."""
    net = _net((3, 24, 60), output, seed)
    z_true = np.random.default_rng(seed).normal(size=3)
    x = net.forward(z_true)
    result = layerinv.invert(net, x, method="pattern", progress=False)
    assert result.status in (Status.OPTIMAL, Status.LOCAL_OPTIMUM, Status.NOT_IDENTIFIABLE)
    if result.status == Status.OPTIMAL:
        assert result.regions.identifiable
        assert np.max(np.abs(net.forward(result.z) - x)) <= 1e-9 * np.max(np.abs(x))
        assert np.max(np.abs(result.z - z_true)) < 1e-6


@pytest.mark.parametrize("output", SMOOTH)
def test_realizable_data_through_a_smooth_output_are_mostly_recovered(output):
    recovered = 0
    for seed in range(20):
        net = _net((3, 24, 60), output, seed)
        z_true = np.random.default_rng(seed).normal(size=3)
        result = layerinv.invert(net, net.forward(z_true), method="pattern", progress=False)
        recovered += bool(result.status == Status.OPTIMAL
                          and np.max(np.abs(result.z - z_true)) < 1e-6)
    assert recovered >= 17


@pytest.mark.parametrize("output", SMOOTH)
def test_noisy_data_give_a_local_optimum_no_worse_than_its_start(output):
    prior = 1e-3
    for seed in range(5):
        net = _net((4, 30, 80), output, seed)
        rng = np.random.default_rng(seed)
        z_true = rng.normal(size=4)
        x = net.forward(z_true) + 0.05 * rng.normal(size=80)
        start = z_true + 0.3 * rng.normal(size=4)
        result = pattern.invert_pattern(net, x, prior=prior, starts=0, start=start,
                                        progress=False)
        assert result.status == Status.LOCAL_OPTIMUM  # never 'optimal' with noise
        value = _objective(net, x, result.z, prior)
        assert result.regions.objective == pytest.approx(value, rel=1e-12)
        assert value <= _objective(net, x, start, prior) + 1e-15
        assert value <= _objective(net, x, np.zeros(4), prior) + 1e-15
        assert result.regions.error_bound == np.inf  # no bound claimed through act
        # Optimal on its region: no nearby point of the same region does better.
        region = pattern.region_of(net, pattern.pattern_at(net, result.z))
        for _ in range(200):
            trial = result.z + 1e-4 * rng.normal(size=4)
            if np.all(region.faces @ trial <= region.face_bounds):
                assert _objective(net, x, trial, prior) >= value - 1e-15


def test_the_smooth_region_solve_is_refused_certification_when_it_stops_early(monkeypatch):
    net = _net((4, 30, 80), "tanh", 3)
    rng = np.random.default_rng(3)
    x = net.forward(rng.normal(size=4)) + 0.05 * rng.normal(size=80)
    start = rng.normal(size=4)
    region = pattern.region_of(net, pattern.pattern_at(net, start))
    objective = pattern.Objective(x, "l2", 1e-3)
    full = pattern.solve_region(region, objective, start)
    assert full.certified and full.stationary
    monkeypatch.setattr(pattern, "SMOOTH_STEPS", 1)
    early = pattern.solve_region(region, objective, start)
    assert early.objective > full.objective
    assert not early.certified and not early.stationary
    assert "first-order" in early.message


@pytest.mark.parametrize("output", SMOOTH)
def test_the_linearised_residual_is_exact_at_its_point(output):
    net = _net((3, 20, 40), output, 5)
    rng = np.random.default_rng(5)
    z = rng.normal(size=3)
    x = rng.normal(size=40)
    region = pattern.region_of(net, pattern.pattern_at(net, z))
    assert np.allclose(region.forward(z), net.forward(z), atol=1e-13)
    jac, res0 = pattern.Objective(x, "l2", 0.0).measured(region, z)
    assert np.allclose(jac @ z + res0, net.forward(z) - x, atol=1e-13)
    step = 1e-6 * rng.normal(size=3)  # first order: the Jacobian is act'(u) J_P
    assert np.allclose(net.forward(z + step) - net.forward(z), jac @ step, atol=1e-10)


def test_smooth_hidden_activations_are_refused_naming_the_layer():
    net = _net((3, 10, 20), "tanh", 0, hidden="tanh")
    with pytest.raises(InputError, match=r"hidden layer 0 has tanh"):
        layerinv.invert(net, net.forward(np.zeros(3)), method="pattern", progress=False)


def test_a_smooth_output_takes_the_l2_loss_only():
    net = _net((3, 10, 20), "sigmoid", 0)
    for loss in ("linf", "l1"):
        with pytest.raises(InputError, match=rf"loss='{loss}'.*sigmoid.*loss='l2'"):
            layerinv.invert(net, net.forward(np.zeros(3)), method="pattern", loss=loss,
                            progress=False)


def test_a_stationary_point_that_is_no_minimum_is_not_certified():
    """f(z) = (tanh(1 + z) + 5)^2 + (tanh(1 - z) + 5)^2 is stationary at z = 0, where it has a
    local maximum (f'' = 4 (act'^2 + (act + 5) act'') < 0): first order holds, second fails."""
    net = layerinv.Network([layerinv.Layer(np.ones((1, 1)), None, "identity"),
                            layerinv.Layer(np.array([[1.0], [-1.0]]), np.ones(2), "tanh")])
    x = np.full(2, -5.0)
    region = pattern.region_of(net, pattern.pattern_at(net, np.zeros(1)))
    fit = pattern.solve_region(region, pattern.Objective(x, "l2", 0.0), np.zeros(1))
    assert fit.z == pytest.approx([0.0], abs=1e-12)
    assert fit.stationary and not fit.certified
    assert "second-order" in fit.message


@pytest.mark.parametrize("output", SMOOTH)
def test_a_smooth_region_solve_never_ends_above_its_start(output, monkeypatch):
    """Saturating outputs (weights x 5): the linearised QP's full step often overshoots; the
    backtracking keeps only decreases (checked after one step too)."""
    base = _net((3, 20, 40), output, 11)
    net = layerinv.Network([*base.layers[:-1],
                            layerinv.Layer(5 * base.layers[-1].weight, base.layers[-1].bias,
                                           output)])
    rng = np.random.default_rng(11)
    for _ in range(50):  # measured: the full step rises on 1 in 50 (tanh)
        x = net.forward(rng.normal(size=3)) + 0.2 * rng.normal(size=40)
        start = 2 * rng.normal(size=3)
        region = pattern.region_of(net, pattern.pattern_at(net, start))
        objective = pattern.Objective(x, "l2", 1e-3)
        for steps in (1, pattern.SMOOTH_STEPS):
            monkeypatch.setattr(pattern, "SMOOTH_STEPS", steps)
            fit = pattern.solve_region(region, objective, start)
            assert fit.objective <= _objective(net, x, start, 1e-3) + 1e-15
