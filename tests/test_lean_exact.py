"""The lean exact path (`_layer_inversion._shortcut`): least squares for the whole batch in one
backend call before any per-sample work, each sample's band built once and its least-squares
point checked with one layer forward, the BLAS thread limit taken once per `invert` call, and
the backend's certificate used where it certifies the report's rows."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import realizable_instance

from layerinv import _blas, invert, random_network, solvers
from layerinv.activations import ReLU
from layerinv.operators import DenseOperator
from layerinv.solvers import Backend
from layerinv.solvers.problem import PinnedFit


class PinnedCounting(Backend):
    """The interior point for LPs; `pinned_least_squares` recorded, then the default's."""

    def __init__(self, sentinel: tuple[float, float] | None = None) -> None:
        self.inner = solvers.get("ipm")
        self.calls: list[tuple[int, bool]] = []  # (bands, certify) per call
        self.sentinel = sentinel

    def solve(self, problem):
        return self.inner.solve(problem)

    def pinned_least_squares(self, operator, bias, bands, certify):
        self.calls.append((len(bands), certify))
        fits = super().pinned_least_squares(operator, bias, bands, certify)
        if self.sentinel is not None:  # bounds stated whether asked for or not
            for fit in fits:
                fit.sigma_min, fit.inverse_row_norm = self.sentinel
        return fits


@pytest.fixture
def register(monkeypatch):
    """Register a backend as 'pinned' in a private copy of the registry."""
    monkeypatch.setattr(solvers, "_BACKENDS", dict(solvers._BACKENDS))

    def add(backend: Backend) -> Backend:
        solvers.register("pinned", backend)
        return backend

    return add


def realizable_batch(widths=(10, 60, 200), size=6, seed=8, activation="relu"):
    net = random_network(list(widths), activation, seed=seed)
    z = np.random.default_rng(seed).normal(size=(size, widths[0]))
    return net, z, net(z)


def test_one_backend_call_per_layer_for_the_whole_batch(register):
    backend = register(PinnedCounting())
    net, _, x = realizable_batch()
    result = invert(net, x, "exact", solver="pinned", progress=False)
    assert result.success.all()
    assert backend.calls == [(6, True), (6, True)]  # the last layer, then the first
    backend.calls.clear()
    invert(net, x, "exact", solver="pinned", certify=False, progress=False)
    assert backend.calls == [(6, False), (6, False)]


def test_each_band_is_built_once_and_each_point_checked_with_one_forward(monkeypatch):
    """Realizable: every sample finishes by least squares, on the band it was classified
    with (the report reuses it) and with one layer forward for the fit check and the
    residual; the walk's own forward of z (one per layer, batched) comes on top."""
    net, _, x = realizable_batch()
    bands, forwards = [], []
    real_band, real_apply = ReLU.band, DenseOperator.apply
    monkeypatch.setattr(ReLU, "band", lambda self, y, t: bands.append(1) or real_band(self, y, t))
    monkeypatch.setattr(DenseOperator, "apply",
                        lambda self, x: forwards.append(np.ndim(x)) or real_apply(self, x))
    result = invert(net, x, "exact", progress=False)
    assert (result.status == "optimal").all()
    assert all(r.solver == "lstsq" for reports in result.layers for r in reports)
    layers = len(net.layers)
    assert len(bands) == layers * len(x)
    assert len(forwards) == layers * len(x) + layers


def test_the_blas_limit_is_taken_once_per_call(monkeypatch):
    controller = _blas._controller()
    limits = []
    real = controller.limit
    monkeypatch.setattr(controller, "limit", lambda **kw: limits.append(kw) or real(**kw))
    net, _, x = realizable_batch()
    invert(net, x, "exact", progress=False)
    invert(net, x[0], "linf", progress=False)
    assert len(limits) == 2
    # Nested uses change nothing and cost nothing; the limit holds inside and is undone after.
    with _blas.single_threaded_blas(), _blas.single_threaded_blas():
        assert len(limits) == 3
        assert all(info["num_threads"] == 1 for info in controller.select(user_api="blas").info())


def test_the_backends_certificate_is_used_where_it_certifies_the_reports_rows(register):
    """ReLU's pinned rows have slope 1: the backend's bounds are the report's. LeakyReLU's
    negative side is scaled by 1/slope: the backend is not asked to certify, and bounds it
    states anyway are not used."""
    backend = register(PinnedCounting(sentinel=(7.0, 0.5)))
    net, _, x = realizable_instance([10, 60, 200], seed=8)
    result = invert(net, x, "exact", solver="pinned", progress=False)
    assert [r.solver for r in result.layers] == ["lstsq", "lstsq"]
    assert all(r.sigma_min == 7.0 for r in result.layers)
    last = result.layers[-1]
    assert last.error_bound == np.sqrt(last.n_active) * 0.5 * (2 * last.eps)
    leaky = random_network([10, 60, 200], "leaky_relu(0.2)", seed=8)
    backend.calls.clear()
    result = invert(leaky, leaky(np.ones(10)), "exact", solver="pinned", progress=False)
    assert [certify for _, certify in backend.calls] == [False, False]
    assert all(r.solver == "lstsq" and r.sigma_min != 7.0 and r.sigma_min > 0
               for r in result.layers)


def test_a_sample_the_shortcut_leaves_starts_its_lp_from_the_point_found(register):
    """Outputs zeroed: least squares misses the one-sided rows, the LP starts from its point
    (one least-squares factorisation per sample and layer, none in the LP's screening)."""
    backend = register(PinnedCounting())
    starts = []
    inner_solve = backend.inner.solve
    backend.solve = lambda problem: starts.append(problem.pinned_solution) or \
        inner_solve(problem)
    net, _, x = realizable_batch()
    x[1][np.flatnonzero(x[1] > 0)[:5]] = 0.0
    result = invert(net, x, "exact", solver="pinned", progress=False)
    assert result.layers[1][-1].solver == "ipm"
    assert backend.calls == [(6, True), (6, True)]
    assert starts and starts[0] is not None


def test_fits_missing_leave_every_sample_to_the_lp(register):
    """A backend whose fits say 'no least-squares point' (rank-deficient): every layer is
    solved by the LP, with the same answers as the least-squares path to the LP's accuracy."""

    class NoFits(PinnedCounting):
        def pinned_least_squares(self, operator, bias, bands, certify):
            self.calls.append((len(bands), certify))
            return [PinnedFit(None, False) for _ in bands]

    register(NoFits())
    net, z, x = realizable_batch(size=3)
    result = invert(net, x, "exact", solver="pinned", progress=False)
    assert all(r.solver == "ipm" for reports in result.layers for r in reports)
    np.testing.assert_allclose(result.z, z, atol=1e-6)
