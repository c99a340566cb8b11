"""Certificates on every inversion: sigma_min per layer, uniqueness, and a valid error bound."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import realizable_instance

from layerinv import invert


def test_realizable_inversions_are_certified():
    for seed in range(10):
        net, z, x = realizable_instance([20, 250, 600], seed)
        result = invert(net, x, "exact", progress=False)
        assert result.certified
        assert all(r.sigma_min > 0 and r.unique for r in result.layers)
        assert np.abs(result.z - z).max() <= result.error_bound


def test_rank_deficient_layer_is_not_certified():
    seen = 0
    for seed in range(12):
        net, z, x = realizable_instance([130, 250, 600], seed)
        _, hidden = net.forward(z, return_hidden=True)
        result = invert(net, x, "linf", progress=False)
        if (hidden[1] > 0).sum() < 130:
            seen += 1
            assert not result.certified
            assert result.layers[0].error_bound == np.inf
    assert seen > 0


@pytest.mark.parametrize("method", ["linf", "l1"])
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_error_bound_holds_when_the_noise_bound_is_stated(method, eps):
    """With `noise=` stated (and true) the certificate is a rigorous bound on ||z - z*||_inf."""
    certified = 0
    for seed in range(8):
        net, z, x = realizable_instance([20, 100, 500], seed)
        noisy = x + np.random.default_rng(seed).uniform(-eps, eps, size=x.shape)
        result = invert(net, noisy, method, noise=eps, progress=False)
        if result.certified:
            certified += 1
            assert np.abs(result.z - z).max() <= result.error_bound
    assert certified >= 6  # the check above is not vacuous


def test_certify_false_skips_the_certificate():
    net, _, x = realizable_instance([20, 250, 600], 0)
    result = invert(net, x, "exact", certify=False, progress=False)
    assert result.success and not result.certified
    assert np.isnan(result.layers[0].sigma_min)
