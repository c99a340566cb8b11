"""ELU, the activation added to prove that one lives in activations.py alone (plus its tests)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from conftest import relative_error
from hypothesis import given, settings
from hypothesis import strategies as st

from layerinv import ELU, InputError, Network, ReLU, get_activation, invert, random_network
from layerinv.errors import DefaultSlopeWarning

ALPHAS = [1.0, 0.5, 3.0]


@pytest.mark.parametrize("alpha", ALPHAS)
def test_forward_and_inverse_round_trip(alpha):
    act = ELU(alpha)
    u = np.random.default_rng(0).uniform(-6, 6, size=2000)
    y = act.forward(u)
    expected = np.where(u > 0, u, alpha * (np.exp(u) - 1))
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-15)
    assert np.all(y > -alpha) and act.output_low == -alpha and act.output_high == np.inf
    center = act.band(y, threshold=0.0).center
    np.testing.assert_allclose(center, u, rtol=1e-10, atol=1e-12)
    assert np.all(act.band(y, 0.0).t_floor == 0.0)  # realizable: nothing clipped


@pytest.mark.parametrize("alpha", ALPHAS)
def test_derivative_matches_finite_differences(alpha):
    act = ELU(alpha)
    u = np.random.default_rng(1).uniform(-5, 5, size=500)
    u = u[np.abs(u) > 1e-4]  # away from the kink at 0
    step = 1e-7
    numeric = (act.forward(u + step) - act.forward(u - step)) / (2 * step)
    np.testing.assert_allclose(act.derivative(u), numeric, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(act.derivative(u, act.forward(u)), act.derivative(u))


@pytest.mark.parametrize("alpha", ALPHAS)
@given(seed=st.integers(0, 2**31 - 1))
@settings(max_examples=30, deadline=None)
def test_band_contains_the_true_preactivation_of_realizable_data(alpha, seed):
    act = ELU(alpha)
    u = np.random.default_rng(seed).normal(0, 2, size=200)
    band = act.band(act.forward(u), threshold=0.0)
    assert band.two_sided.all()
    lo, hi = band.at(1e-9)
    ok = (u >= lo - 1e-9) & (u <= hi + 1e-9)
    assert ok[act.forward(u) > -0.99 * alpha].all()  # saturated rows: the inverse's conditioning


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("t", [1e-2, 1e-3, 1e-4])
def test_band_is_first_order_in_t(alpha, t):
    """Slopes 1 / act'(u): the excess fit error of a point of the band is O(t^2) for |u| <= 2
    on rows whose band stays on one side of the kink at 0 (all rows for alpha = 1, where ELU
    is C^1); a band across the kink errs by O(|1 - alpha| t), which the layer inversion's
    output-space check (`exact_band` False) accounts for."""
    act = ELU(alpha)
    rng = np.random.default_rng(4)
    y = act.forward(rng.uniform(-2, 2, size=400))
    lo, hi = act.band(y, threshold=0.0).at(t)
    u = lo + rng.uniform(0, 1, size=400) * (hi - lo)
    one_side = (lo > 0) | (hi <= 0) | (alpha == 1.0)
    assert one_side.mean() > 0.9
    excess = np.max(np.abs(act.forward(u) - y)[one_side]) - t
    assert excess <= 50 * t**2 / alpha
    # ... and no narrower than first order: each end maps to within O(t^2) of y -+ t.
    for end in (lo, hi):
        reach = np.abs(act.forward(end) - y)[one_side]
        assert np.all(reach >= t - 50 * t**2 / alpha)


def test_noisy_observations_below_the_range_are_clipped_and_raise_the_floor():
    band = ELU(1.0).band(np.array([-1.5, -1.0, 0.5]), threshold=0.0)
    assert np.all(np.isfinite(band.center)) and band.center[2] == 0.5
    np.testing.assert_allclose(band.t_floor, [0.5, 0.0, 0.0], atol=1e-11)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("method", ["exact", "linf", "l1"])
def test_invert_recovers_z_on_a_random_elu_net(alpha, method):
    for seed in range(3):
        net = random_network([10, 60, 150], ELU(alpha), bias=True, seed=seed)
        z = np.random.default_rng(100 + seed).normal(size=10)
        result = invert(net, net(z), method, progress=False)
        assert result.status == "optimal" and result.success
        assert relative_error(result.z, z) < 1e-9


def test_invert_on_noisy_elu_data_fits_within_the_noise():
    net = random_network([10, 60, 150], "elu(1.0)", seed=0)
    z = np.random.default_rng(7).normal(size=10)
    x = net(z)
    noisy = x + np.random.default_rng(8).uniform(-1e-4, 1e-4, x.shape)
    result = invert(net, noisy, "linf", progress=False)
    assert result.status == "optimal"
    assert np.max(np.abs(net(result.z) - noisy)) <= 2e-4
    assert relative_error(result.z, z) < 1e-2


def test_exact_refuses_elu_as_not_piecewise_linear():
    from layerinv.exact import closest, preimage

    net = random_network([3, 8, 12], "elu(1.0)", seed=0)
    x = net(np.zeros(3))
    for call in (lambda: preimage(net, x), lambda: closest(net, x)):
        with pytest.raises(InputError, match=r"elu.*not piecewise linear"):
            call()


def test_linearise_matches_an_elu_network():
    from layerinv._reconstruct import linearise

    net = random_network([3, 10, 15], ELU(0.7), bias=True, seed=0)
    z = np.random.default_rng(1).normal(size=3)
    out, jac = linearise(net, z)
    np.testing.assert_allclose(out, net.forward(z), atol=1e-15)
    d = 1e-6 * np.random.default_rng(2).normal(size=3)
    np.testing.assert_allclose(net.forward(z + d) - out, jac @ d, rtol=0, atol=1e-10)


# ------------------------------------------------------------------ names and files
@given(alpha=st.floats(1e-300, 1e300))
@settings(max_examples=100, deadline=None)
def test_names_round_trip_exactly(alpha):
    act = ELU(alpha)
    assert repr(act) == f"elu({alpha!r})"
    assert get_activation(repr(act)) == act and get_activation(repr(act)).alpha == alpha


@pytest.mark.parametrize(("name", "alpha"), [
    ("elu(1.0)", 1.0), ("ELU( 0.25 )", 0.25), ("elu(alpha=2)", 2.0),
    ("ELU(alpha=1.0)", 1.0),  # str(nn.ELU())
])
def test_an_elu_name_carries_its_alpha(name, alpha):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a named alpha is no default: no warning
        act = get_activation(name)
    assert isinstance(act, ELU) and act.alpha == alpha


def test_a_bare_elu_says_which_alpha_it_uses():
    with pytest.warns(DefaultSlopeWarning, match=r"names no alpha: using 1\.0"):
        act = get_activation("elu")
    assert act == ELU(1.0) and act != ELU(0.5) and act != ReLU()


@pytest.mark.parametrize(("name", "message"), [
    ("elu(-1)", "elu alpha must be a finite number > 0"),
    ("elu(0)", "elu alpha must be a finite number > 0"),
    ("elu(inf)", "elu alpha must be a finite number > 0"),
    ("elu(abc)", "the alpha in parentheses must be a number"),
    ("elu(slope=0.5)", "elu's parameter is 'alpha'"),
    ("leaky_relu(alpha=0.5)", "leaky_relu's parameter is 'slope'"),
])
def test_bad_elu_names_are_refused(name, message):
    with pytest.raises(InputError, match=re.escape(message)):
        get_activation(name)


def test_npz_round_trip_stores_the_full_name(tmp_path):
    net = random_network([4, 12, 30], ELU(0.5), output_activation="leaky_relu(0.2)",
                         bias=True, seed=3)
    path = tmp_path / "net.npz"
    net.save(path)
    with np.load(path) as data:
        assert str(data["activation_0"]) == "elu(0.5)"
        assert str(data["activation_1"]) == "leaky_relu(0.2)"
        assert not any(key.startswith("slope_") for key in data.files)
    loaded = Network.load(path)
    assert [repr(layer.activation) for layer in loaded.layers] == ["elu(0.5)", "leaky_relu(0.2)"]
    z = np.random.default_rng(0).normal(size=(3, 4))
    np.testing.assert_array_equal(loaded(z), net(z))


def test_cli_random_network_parses_elu_names(tmp_path, capsys):
    from layerinv import cli

    path = tmp_path / "net.npz"
    assert cli.main(["random-network", "--widths", "3", "10", "12", "--activation", "elu(0.5)",
                     "--output-activation", "ELU(alpha=2.0)", "--out", str(path)]) == 0
    assert "elu(0.5), elu(2.0)" in capsys.readouterr().out
    assert [layer.activation for layer in Network.load(path).layers] == [ELU(0.5), ELU(2.0)]
    assert cli.main(["random-network", "--widths", "3", "10", "--activation", "elu(-1)",
                     "--out", str(path)]) == 2
    assert "alpha must be a finite number > 0" in capsys.readouterr().err


# ------------------------------------------------------------------ PyTorch
def test_torch_round_trip_keeps_alpha():
    torch = pytest.importorskip("torch")
    from torch import nn

    module = nn.Sequential(nn.Linear(4, 9), nn.ELU(alpha=0.5), nn.Linear(9, 7), nn.ELU())
    net = Network.from_torch(module)
    assert [layer.activation for layer in net.layers] == [ELU(0.5), ELU(1.0)]
    z = np.random.default_rng(5).normal(size=(10, 4))
    with torch.no_grad():
        expected = module(torch.as_tensor(z, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(net.forward(z), expected, rtol=1e-5, atol=1e-6)
    back = net.to_torch()
    assert [m.alpha for m in back if isinstance(m, nn.ELU)] == [0.5, 1.0]
    again = Network.from_torch(back)
    assert [layer.activation for layer in again.layers] == [ELU(0.5), ELU(1.0)]


def test_torch_elu_alpha_zero_is_relu_and_negative_is_refused():
    pytest.importorskip("torch")
    from torch import nn

    from layerinv.errors import UnsupportedLayerError

    net = Network.from_torch(nn.Sequential(nn.Linear(2, 3), nn.ELU(alpha=0.0)))
    assert net.layers[0].activation == ReLU()
    with pytest.raises(UnsupportedLayerError, match=r"ELU at index 1 has alpha -0\.5"):
        Network.from_torch(nn.Sequential(nn.Linear(2, 3), nn.ELU(alpha=-0.5)))


def test_activations_work_without_pytorch(tmp_path):
    """activations.py imports torch only inside the two conversions."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now fails
        import numpy as np
        import layerinv
        net = layerinv.random_network([4, 20, 40], "elu(0.5)", seed=0)
        net.save({str(tmp_path / "n.npz")!r})
        net = layerinv.Network.load({str(tmp_path / "n.npz")!r})
        z = np.ones(4)
        assert layerinv.invert(net, net(z), progress=False).success
        try:
            net.layers[0].activation.to_torch()
        except ImportError:
            print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
