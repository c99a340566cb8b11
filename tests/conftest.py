"""Shared helpers for the tests: seeded instances and error measures."""

from __future__ import annotations

import numpy as np

import layerinv


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """||estimate - truth|| / ||truth|| along the last axis."""
    return np.linalg.norm(estimate - truth, axis=-1) / np.linalg.norm(truth, axis=-1)


def realizable_instance(widths, seed, **net_options):
    """A seeded random net, a latent z ~ N(0, I) and its output G(z)."""
    net = layerinv.random_network(widths, seed=seed, **net_options)
    z = np.random.default_rng(10_000 + seed).normal(size=widths[0])
    return net, z, net.forward(z)
