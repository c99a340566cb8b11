"""The preimage band of each activation contains every pre-activation that explains y."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerinv import InputError, LeakyReLU, get_activation
from layerinv.errors import DefaultSlopeWarning

ACTIVATIONS = ["relu", "identity", "sigmoid", "tanh", LeakyReLU(0.1), LeakyReLU(3.0)]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@given(seed=st.integers(0, 2**31 - 1), noise=st.floats(0.0, 0.1))
@settings(max_examples=40, deadline=None)
def test_band_contains_true_preactivation(activation, seed, noise):
    act = get_activation(activation)
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 2, size=50)
    y = act.forward(u) + rng.uniform(-noise, noise, size=50)
    band = act.band(y, threshold=noise)
    lo, hi = band.at(noise * (1 + 1e-9) + 1e-12)
    if act.name in ("sigmoid", "tanh"):
        # First-order band: exact only as t -> 0, so check the noise-free case.
        lo, hi = act.band(act.forward(u), 0.0).at(1e-9)
        u_ok = (u >= lo - 1e-6) & (u <= hi + 1e-6)
        assert u_ok[np.abs(act.forward(u)) < 0.99].all()
        return
    assert np.all(u >= lo - 1e-9) and np.all(u <= hi + 1e-9)
    assert np.all(band.t_floor <= noise + 1e-12)


@pytest.mark.parametrize("activation", ["relu", "identity", LeakyReLU(0.1), LeakyReLU(3.0)],
                         ids=str)
def test_every_point_of_the_band_explains_y(activation):
    """Piecewise-linear bands are inner approximations: u in the band at t has |act(u)-y| <= t."""
    act = get_activation(activation)
    rng, y, t, lo, hi = _noisy_band(act, seed=3)
    u = lo + rng.uniform(0, 1, size=400) * (hi - lo)
    assert np.all(np.abs(act.forward(u) - y) <= t + 1e-9)


def _noisy_band(act, seed, t=0.05):
    """(rng, y, t, lo, hi): 400 noisy observations and their band at t (lo finite)."""
    rng = np.random.default_rng(seed)
    y = act.forward(rng.normal(size=400)) + rng.uniform(-0.01, 0.01, size=400)
    lo, hi = act.band(y, threshold=t).at(t)
    return rng, y, t, np.where(np.isfinite(lo), lo, hi - 10), hi


@pytest.mark.parametrize("activation", [*ACTIVATIONS, "elu(1.0)", "elu(3.0)"], ids=str)
def test_exact_band_says_whether_every_band_point_fits(activation):
    """`exact_band` is True exactly where every u in the band at t has |act(u) - y| <= t: the
    layer inversion trusts band membership there and checks the output residual elsewhere."""
    act = get_activation(activation)
    rng, y, t, lo, hi = _noisy_band(act, seed=5)
    u = np.concatenate([lo, hi, lo + rng.uniform(0, 1, size=400) * (hi - lo)])
    fits = np.abs(act.forward(u) - np.tile(y, 3)) <= t + 1e-9
    assert bool(fits.all()) == act.exact_band


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("t", [1e-2, 1e-3, 1e-4])
def test_squashing_bands_are_first_order(activation, t):
    """Sigmoid/tanh bands are linear in t around act^-1(y): away from saturation (|u| <= 2)
    the excess fit error is O(t^2); near saturation the constant grows as 1 / (1 - |y|)."""
    act = get_activation(activation)
    rng = np.random.default_rng(4)
    y = act.forward(rng.uniform(-2, 2, size=400))
    lo, hi = act.band(y, threshold=0.0).at(t)
    u = lo + rng.uniform(0, 1, size=400) * (hi - lo)
    excess = np.max(np.abs(act.forward(u) - y)) - t
    assert excess <= 50 * t**2


def test_relu_negative_observation_sets_slack_floor():
    band = get_activation("relu").band(np.array([1.0, -0.3, 0.0]), threshold=0.0)
    np.testing.assert_allclose(band.t_floor, [0.0, 0.3, 0.0])
    assert band.two_sided.tolist() == [True, False, False]


@pytest.mark.parametrize("bad", ["softplus", 3, None])
def test_unknown_activation_is_named(bad):
    with pytest.raises(InputError, match="activation must be one of"):
        get_activation(bad)


@pytest.mark.parametrize("slope", [0.0, -0.5, float("nan")])
def test_leaky_relu_slope_must_be_positive(slope):
    with pytest.raises(InputError, match="slope must be a finite number > 0"):
        LeakyReLU(slope)


# ------------------------------------------------------------------ names with parameters
@pytest.mark.parametrize(("name", "slope"), [
    ("leaky_relu(0.1)", 0.1), ("leaky_relu( 0.25 )", 0.25), ("Leaky-ReLU(2)", 2.0),
    ("leakyrelu(1e-3)", 1e-3), ("LeakyReLU(negative_slope=0.2)", 0.2),  # str(nn.LeakyReLU)
])
def test_a_leaky_relu_name_carries_its_slope(name, slope):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a named slope is no default: no warning
        act = get_activation(name)
    assert isinstance(act, LeakyReLU) and act.slope == slope


def test_a_bare_leaky_relu_says_which_slope_it_uses():
    with pytest.warns(DefaultSlopeWarning, match=r"names no slope: using 0\.01"):
        act = get_activation("leaky_relu")
    assert act == LeakyReLU(0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_activation("leaky_relu", 0.3) == LeakyReLU(0.3)  # given: no warning


@given(slope=st.floats(1e-300, 1e300))
@settings(max_examples=200, deadline=None)
def test_names_round_trip_exactly(slope):
    act = LeakyReLU(slope)
    assert get_activation(str(act)).slope == slope
    assert get_activation(repr(act)) == act


@pytest.mark.parametrize("name", ["relu", "identity", "sigmoid", "tanh", "relu()"])
def test_other_names_round_trip(name):
    act = get_activation(name)
    assert get_activation(str(act)) == act


@pytest.mark.parametrize(("name", "slope", "message"), [
    ("leaky_relu(abc)", None, "must be a number"),
    ("leaky_relu(0.1", None, "activation must be one of"),
    ("relu(0.1)", None, "relu takes no parameter"),
    ("leaky_relu(-0.1)", None, "slope must be a finite number > 0"),
    ("leaky_relu(nan)", None, "slope must be a finite number > 0"),
    ("leaky_relu(0.2)", 0.1, "names the slope 0.2 but slope=0.1"),
])
def test_bad_names_are_refused(name, slope, message):
    with pytest.raises(InputError, match=re.escape(message)):
        get_activation(name, slope)


# ------------------------------------------------------------------ ownership
_ACTIVATION_OBJECT = r"(^|\.|_)act(ivation)?s?$"  # act, layer.activation, last_act, ...


def _activation_switches(path, activation_classes, spellings=("relu", "leaky_relu", "identity",
                                                             "sigmoid", "tanh", "elu")):
    """Lines of `path` that switch on an activation: any read of an activation object's
    `.name`, a comparison of some `X.name` with an activation's spelling, or an isinstance /
    type() test against one of `activation_classes` imported from layerinv.activations."""
    import ast

    tree = ast.parse(path.read_text(), filename=str(path))
    imported = {alias.asname or alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == "layerinv.activations"
                for alias in node.names if alias.name in activation_classes}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            constants = {n.value for side in sides for n in ast.walk(side)
                         if isinstance(n, ast.Constant)}
            if (any(isinstance(side, ast.Attribute) and side.attr == "name" for side in sides)
                    and constants & set(spellings)):
                found.append(node.lineno)
            if any(isinstance(side, ast.Call) and ast.unparse(side.func) == "type"
                   for side in sides) and imported & _names_in(sides):
                found.append(node.lineno)
        elif (isinstance(node, ast.Attribute) and node.attr == "name"
              and re.search(_ACTIVATION_OBJECT, ast.unparse(node.value))):
            found.append(node.lineno)
        elif (isinstance(node, ast.Call) and ast.unparse(node.func) in ("isinstance", "issubclass")
              and len(node.args) == 2 and imported & _names_in([node.args[1]])):
            found.append(node.lineno)
    return sorted(set(found))


def _names_in(nodes):
    import ast

    return {n.id for node in nodes for n in ast.walk(node) if isinstance(n, ast.Name)}


def test_no_module_but_activations_switches_on_an_activation():
    """Everything about an activation lives in activations.py: no other module of the package
    compares an activation's name or tests its class (adding one must touch one file)."""
    import inspect
    from pathlib import Path

    import layerinv
    from layerinv import activations

    # The subclasses; `isinstance(x, Activation)` (is it an activation at all?) is no switch.
    base = activations.Activation
    classes = {name for name, value in vars(activations).items()
               if inspect.isclass(value) and issubclass(value, base) and value is not base}
    package = Path(layerinv.__file__).parent
    offenders = {}
    for path in sorted(package.rglob("*.py")):
        if path.name == "activations.py" and path.parent == package:
            continue
        lines = _activation_switches(path, classes, activations.ACTIVATION_NAMES)
        if lines:
            offenders[str(path.relative_to(package))] = lines
    assert offenders == {}
    assert len(list(package.rglob("*.py"))) > 20  # the scan saw the package


@pytest.mark.parametrize("source", [
    "if layer.activation.name == 'relu':\n    pass\n",
    "leaky = a.name in ('leaky_relu', 'elu')\n",
    "slope = act.slope if act.name in ('leaky_relu',) else 0.0\n",
    "table = {'relu': 1}[activation.name]\n",
    "from layerinv.activations import LeakyReLU\nok = isinstance(act, LeakyReLU)\n",
    "from layerinv.activations import ReLU as R\nok = type(act) is R\n",
])
def test_the_ownership_scan_finds_a_switch(tmp_path, source):
    from layerinv import activations

    classes = {"ReLU", "LeakyReLU", "Identity", "Sigmoid", "Tanh", "ELU"}
    assert classes <= set(vars(activations))
    spellings = set(activations.ACTIVATION_NAMES)
    path = tmp_path / "module.py"
    path.write_text(source)
    assert _activation_switches(path, classes, spellings)
    # ... and leaves other names and classes alone.
    path.write_text("ok = path.name == 'net.npz'\nfrom layerinv.measurements import Identity\n"
                    "fold = isinstance(measurement, Identity)\nfile = data.name\n")
    assert not _activation_switches(path, classes, spellings)
