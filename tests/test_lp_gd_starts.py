"""'lp+gd' runs the LP's answer as one start among gradient descent's own restarts."""

from __future__ import annotations

import numpy as np
import pytest

import layerinv

pytest.importorskip("torch")


def _mean_square(net, z, x):
    return np.mean((net.forward(z) - x) ** 2, axis=-1)


def test_lp_plus_gd_is_never_worse_than_gd_with_the_same_restarts():
    """A narrow hidden layer (the LP's answer is poor) and heavy noise: gd's chains are all
    in lp+gd, so its loss is at most gd's, sample by sample."""
    net = layerinv.random_network((6, 8, 60), "relu", seed=3)
    rng = np.random.default_rng(3)
    x = net.forward(rng.normal(size=(8, 6))) + 0.3 * rng.normal(size=(8, 60))
    options = {"steps": 150, "restarts": None, "seed": 5, "progress": False}
    gd = layerinv.invert(net, x, "gd", **{**options, "restarts": 4})
    both = layerinv.invert(net, x, "lp+gd", **{**options, "restarts": 5})
    assert np.all(_mean_square(net, both.z, x) <= _mean_square(net, gd.z, x) * (1 + 1e-9))


def test_lp_plus_gd_defaults_to_the_presets_restarts_plus_the_start():
    net = layerinv.random_network((4, 6, 30), "relu", seed=1)
    x = net.forward(np.random.default_rng(1).normal(size=4)) + 0.2
    result = layerinv.invert(net, x, "lp+gd", steps=20, progress=False)
    assert result.method == "lp+gd"
    gd = layerinv.invert(net, x, "gd", steps=20, progress=False)
    assert _mean_square(net, result.z, x) <= _mean_square(net, gd.z, x) * (1 + 1e-9)
