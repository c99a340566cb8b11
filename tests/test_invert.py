"""The layer-wise inverter: realizable recovery, noise, identifiability, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import realizable_instance, relative_error
from hypothesis import given, settings
from hypothesis import strategies as st

import layerinv
from layerinv import InputError, LeakyReLU, invert, random_network

INSTANCES = 100


def recovered_share(widths, method, **net_options):
    hits = 0
    for seed in range(INSTANCES):
        net, z, x = realizable_instance(widths, seed, **net_options)
        result = invert(net, x, method, progress=False)
        hits += bool(result.success and relative_error(result.z, z) < 1e-6)
    return hits / INSTANCES


@pytest.mark.slow
@pytest.mark.parametrize("method", ["exact", "linf"])
@pytest.mark.parametrize(
    ("widths", "net_options"),
    [
        ([20, 250, 600], {}),
        ([100, 250, 600], {}),
        ([200, 250, 600], {"activation": LeakyReLU(0.1)}),
        ([20, 250, 600], {"bias": True}),
        ([100, 250, 600], {"bias": True, "output_activation": "sigmoid"}),
    ],
    ids=["relu-k20", "relu-k100", "leaky-k200", "relu-bias", "bias-sigmoid-out"],
)
def test_realizable_recovery(method, widths, net_options):
    assert recovered_share(widths, method, **net_options) >= 0.99


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 12),
       activation=st.sampled_from(["relu", "leaky_relu", "tanh", "identity"]),
       bias=st.booleans(), method=st.sampled_from(["exact", "linf", "l1"]))
@settings(max_examples=40, deadline=None)
def test_expansive_random_nets_are_inverted(seed, k, activation, bias, method):
    """Property: on nets expanding 4x per layer, z* is recovered whenever status is optimal,
    and a ReLU net with enough active rows is always optimal."""
    widths = [k, 4 * k + 8, 16 * k + 40]
    net = random_network(widths, activation, bias=bias, seed=seed)
    z = np.random.default_rng(seed).normal(size=k)
    x = net(z)
    result = invert(net, x, method, progress=False)
    if result.success:
        assert relative_error(result.z, z) < 1e-6
    _, hidden = net.forward(z, return_hidden=True)
    if activation != "relu" or min((h > 0).sum() for h in hidden[1:]) >= 2 * k + 4:
        assert result.success, result.status


# Relative error ||z - z*|| / ||z*|| over eps, 30 instances of 20 x 100 x 500 with uniform noise
# of eps max|x|, measured (this machine): linf median 0.91-1.02, worst 1.95-2.05; l1 median
# 1.39-1.45, worst 2.55-2.87. The bounds leave about 30 % headroom.
NOISE_BOUNDS = {"linf": (1.3, 2.7), "l1": (1.9, 3.8)}
"""Per method: (bound on the median, bound on the worst instance), in units of eps."""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["linf", "l1"])
@pytest.mark.parametrize("eps", [1e-4, 1e-3, 1e-2])
def test_noise_error_is_linear_in_eps(method, eps):
    errors = []
    for seed in range(30):
        net, z, x = realizable_instance([20, 100, 500], seed)
        rng = np.random.default_rng(seed)
        noisy = x + rng.uniform(-eps, eps, size=x.shape) * np.abs(x).max()
        result = invert(net, noisy, method, progress=False)
        errors.append(relative_error(result.z, z))
    ratios = np.array(errors) / eps
    median_bound, worst_bound = NOISE_BOUNDS[method]
    assert np.median(ratios) < median_bound, f"median {np.median(ratios):.2f} eps"
    assert ratios.max() < worst_bound, f"worst {ratios.max():.2f} eps"


def test_identifiability_limit_is_reported_not_hidden():
    """k = 130 on 130 x 250 x 600: about 27 % of instances have >= 130 active first-layer
    units. A rank-deficient layer must never come back as a success."""
    statuses = []
    for seed in range(30):
        net, z, x = realizable_instance([130, 250, 600], seed)
        _, hidden = net.forward(z, return_hidden=True)
        result = invert(net, x, "linf", progress=False)
        statuses.append(result.status)
        first = result.layers[0]
        if (hidden[1] > 0).sum() < 130:
            assert not result.success
            assert result.status == "not_unique"
            assert not first.unique and first.n_active < 130
        if result.success:
            assert relative_error(result.z, z) < 1e-6
    assert "not_unique" in statuses and "optimal" in statuses


def test_gaussian_noise_gives_a_larger_eps_not_an_error():
    net, z, x = realizable_instance([20, 250, 600], seed=5)
    noisy = x + np.random.default_rng(0).normal(0, 1e-3, size=x.shape)
    assert noisy.min() < 0
    result = invert(net, noisy, "linf", progress=False)
    assert result.status == "optimal"
    assert result.eps[-1] >= -noisy.min() - 1e-12
    assert relative_error(result.z, z) < 0.1


def test_contradicted_noise_bound_is_a_status():
    net, z, x = realizable_instance([20, 250, 600], seed=6)
    noisy = x + np.random.default_rng(0).uniform(-3e-3, 3e-3, size=x.shape)
    for method in ("linf", "l1"):
        result = invert(net, noisy, method, noise=1e-5, progress=False)
        assert result.status == "noise_bound_violated" and not result.success
        # Still the best fit, found as if no bound had been stated.
        unbounded = invert(net, noisy, method, progress=False)
        np.testing.assert_allclose(result.z, unbounded.z)
        assert relative_error(result.z, z) < 0.05
    honoured = invert(net, noisy, "linf", noise=3e-3, progress=False)
    assert honoured.status == "optimal"
    assert honoured.eps[-1] <= 3e-3 * (1 + 1e-6)


def test_exact_method_on_data_outside_the_range():
    net, _, x = realizable_instance([20, 250, 600], seed=7)
    noisy = x + np.random.default_rng(1).uniform(-1e-3, 1e-3, size=x.shape)
    result = invert(net, noisy, "exact", progress=False)
    assert result.status == "not_realizable"
    assert result.layers[-1].solver in ("daqp", "ipm", "highs")  # the backends of "auto"


def test_batch_shapes_and_per_layer_report():
    net = random_network([10, 60, 200], seed=2)
    z = np.random.default_rng(3).normal(size=(4, 10))
    result = invert(net, net(z), "linf", progress=False)
    assert result.z.shape == (4, 10)
    assert result.success.shape == (4,) and result.success.all()
    assert result.eps.shape == (4, 2)
    assert len(result.layers) == 4 and [r.layer for r in result.layers[0]] == [0, 1]
    np.testing.assert_allclose(result.z, z, rtol=1e-8)
    single = invert(net, net(z[1]), "linf", progress=False)
    assert single.z.shape == (10,) and single.success is True and single.status == "optimal"
    assert "optimal" in single.summary()


@pytest.mark.parametrize("solver", ["ipm", "highs"])
def test_both_solvers_recover_noisy_latents(solver):
    net, z, x = realizable_instance([10, 60, 200], seed=8)
    noisy = x + np.random.default_rng(2).uniform(-1e-4, 1e-4, size=x.shape) * np.abs(x).max()
    result = invert(net, noisy, "linf", solver=solver, progress=False)
    assert result.success
    assert {r.solver for r in result.layers} <= {solver, "lstsq"}
    assert relative_error(result.z, z) < 1e-3


@pytest.mark.parametrize(
    ("x", "kwargs", "message"),
    [
        (np.full(600, np.nan), {}, "x must be finite; found NaN at index"),
        (np.r_[np.ones(599), np.inf], {}, r"x must be finite; found Inf at index \(0, 599\)"),
        (np.ones(599), {}, r"x must have 600 entries per sample"),
        (np.ones((2, 2, 600)), {}, r"x must have shape \(600,\) or \(batch, 600\)"),
        (np.ones((0, 600)), {}, "x must hold at least one sample"),
        (np.ones(600), {"method": "l2"}, "method must be one of 'auto', 'exact', 'linf', 'l1'"),
        (np.ones(600), {"noise": -1.0}, "noise must be a finite number >= 0"),
        (np.ones(600), {"solver": "cplex"}, "solver must be one of"),
    ],
)
def test_bad_input_is_named(x, kwargs, message):
    net = random_network([20, 250, 600], seed=0)
    with pytest.raises(InputError, match=message):
        invert(net, x, **kwargs)


def test_net_must_be_a_network():
    with pytest.raises(InputError, match=r"net must be a layerinv\.Network"):
        invert("net.npz", np.ones(3))


def test_public_api_is_exported():
    for name in ("Network", "Layer", "random_network", "invert", "Inversion", "LayerReport"):
        assert hasattr(layerinv, name)


def test_gradient_methods_are_wired_into_invert():
    net, z, x = realizable_instance([10, 60, 200], seed=9)
    from layerinv.baselines import gradient_descent

    gd = invert(net, x, "gd", steps=300, restarts=2, seed=1, progress=False)
    direct = gradient_descent(net, x, steps=300, restarts=2, seed=1, progress=False)
    assert gd.method == "gd" and gd.layers == [] and len(gd.history) == 301
    np.testing.assert_array_equal(gd.z, direct.z)
    refined = invert(net, x, "lp+gd", seed=1, progress=False)
    assert refined.method == "lp+gd" and len(refined.layers) == 2  # the LP's reports kept
    assert relative_error(refined.z, z) < 1e-8
    with pytest.raises(InputError, match=r"apply only to methods 'gd', 'lp\+gd'"):
        invert(net, x, "linf", steps=10)


def test_worker_processes_give_the_same_answers(monkeypatch):
    """n_jobs uses processes (SciPy's LAPACK wrappers hold the GIL), inside the solvers' front
    door; a zero threshold of work forces the pool even on a small batch."""
    from layerinv import _processes, solvers

    pools = []
    start_pool = _processes._map_local

    def spy(fn, trials, *args, **kwargs):
        pools.append(len(trials))
        yield from start_pool(fn, trials, *args, **kwargs)

    monkeypatch.setattr(_processes, "_map_local", spy)
    monkeypatch.setattr(solvers, "PARALLEL_MIN_SECONDS", 0.0)
    net = random_network([10, 60, 200], seed=4)
    x = net(np.random.default_rng(5).normal(size=(6, 10)))
    x = x + np.random.default_rng(6).uniform(-1e-3, 1e-3, size=x.shape)
    pooled = invert(net, x, "linf", n_jobs=2, progress=False)
    assert pools and pools[0] >= 2  # the last layer's LPs, 5 of them, in chunks over workers
    for b, x_b in enumerate(x):
        here = invert(net, x_b, "linf", progress=False)
        np.testing.assert_array_equal(pooled.z[b], here.z)
        assert [r.status for r in pooled.layers[b]] == [r.status for r in here.layers]
        for field in ("eps", "error_bound", "objective", "sigma_min"):
            assert [getattr(r, field) for r in pooled.layers[b]] == \
                [getattr(r, field) for r in here.layers]


@pytest.mark.parametrize("method", ["exact", "linf", "l1"])
def test_least_squares_shortcut_checks_the_one_sided_rows(method):
    """Five active outputs zeroed: the pinned rows still agree with h* exactly, so least
    squares finds h*, but the zeroed rows (now one-sided, u_j <= 0 + t) are broken by it:
    its l_inf residual is the largest zeroed value (0.20 here), 12x the LP's 0.017. The
    shortcut must see that and leave the layer to the LP."""
    from layerinv.solvers import LayerProblem
    from layerinv.solvers._highs import solve_highs

    net, _, x = realizable_instance([20, 250, 600], seed=11)
    y = x.copy()
    zeroed = np.flatnonzero(x > 0)[:5]
    y[zeroed] = 0.0
    last = invert(net, y, method, progress=False).layers[-1]
    assert last.solver != "lstsq"
    layer = net.layers[-1]
    band = layer.activation.band(y, 1e-6 * np.abs(y).max())  # no negatives: the default split
    norm = "l1" if method == "l1" else "linf"
    optimum = solve_highs(LayerProblem(layer.weight, layer.bias, band, np.zeros(layer.n_in),
                                       np.full(layer.n_in, np.inf), norm)).objective
    if norm == "l1":  # the report states the LP's optimum (least squares would say 0)
        assert last.objective == pytest.approx(optimum, rel=1e-6)
    else:  # re-classification at the t found may only improve on the first split's optimum
        assert 0 < last.objective <= optimum * (1 + 1e-6)
        assert last.eps <= optimum * (1 + 1e-6)
        assert last.eps < 0.1 * x[zeroed].max()
    if method == "exact":
        assert last.status == "not_realizable"
