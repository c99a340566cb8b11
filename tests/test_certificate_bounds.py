"""The certificate from the Cholesky factor's inverse (`_layer_inversion._Context.report`): a
valid bound at every layer and on z over 1,080 noisy instances with a stated noise bound, never
above the bound it replaced, and how tight it is.

Instances: random nets 5 x 30 x 60 ReLU, 10 x 40 x 100 ReLU and 5 x 30 x 60 LeakyReLU(0.2)
(no bias), 120 seeds each, z ~ N(0, I), x = G(z) + e with e uniform in [-a, a],
a = c max|G(z)| for c in AMPLITUDES: 1,080 noisy instances. The noise bound stated is true by
construction: a itself, or 3a on every other triple of seeds (a looser bound, under which 30 %
of the output layers finish by least squares: the shortcut's certificate is covered too). The
method cycles exact / linf / l1 with the seed. The true error of layer i is
||h_i - h_i*||_inf, h_i* the true input of layer i (z* for the first), h_i the walk's
estimate handed to it.

"The old bound" is the formula this certificate replaced, recomputed here on the same answers:
min(sqrt(|A|) / sigma_min(W_A), ||W_A^+||_inf where an LP answered) (eps + incoming), chained
with its own incoming bounds (sigma_min and W_A^+ from NumPy's SVD). Its first term on the
new chain ("the old term") is what the new bound never exceeds. `benchmarks/bench_exact.py`
prints the same figures (`tightness`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from layerinv import _layer_inversion, _walk, invert, random_network
from layerinv import _linalg as linalg

NETS = (((5, 30, 60), "relu"), ((10, 40, 100), "relu"), ((5, 30, 60), "leaky_relu(0.2)"))
AMPLITUDES = (1e-4, 1e-3, 1e-2)
SEEDS = 120
METHODS = ("exact", "linf", "l1")


@dataclass
class LayerAudit:
    """One layer of one inversion: the certificate against the truth and the old formula."""

    layer: int
    solver: str
    true_error: float
    bound: float
    old_bound: float
    """The old formula on its own chain."""
    old_term: float
    """sqrt(|A|) / sigma_min(W_A) (eps + incoming) on this certificate's chain."""


@contextlib.contextmanager
def recorded_layers() -> Iterator[list]:
    """Every (layer, ys, answers) the walk's `invert_layer_batch` calls see, in call order."""
    calls: list = []
    real = _walk.invert_layer_batch

    def record(layer, ys, *args, **kwargs):
        answers = real(layer, ys, *args, **kwargs)
        calls.append((layer, [np.array(y) for y in ys], answers))
        return answers

    _walk.invert_layer_batch = record
    try:
        yield calls
    finally:
        _walk.invert_layer_batch = real


def old_layer_bounds(layer, y, report, noise, old_incoming, incoming, active_tol=1e-6
                     ) -> tuple[float, float]:
    """(The old bound on its own chain, the old term on this one) for one layer's answer: on
    the report's own pinned rows, scaled as the report scales them."""
    own = _layer_inversion._initial_threshold(layer, y, noise,
                                              active_tol * max(float(np.abs(y).max()), 1e-300))
    band = layer.activation.band(y, max(own, report.eps))
    assert int(band.two_sided.sum()) == report.n_active  # the report's own rows
    if not report.unique:
        return np.inf, np.inf
    pinned = _layer_inversion._pinned_rows(layer, band)
    root = np.sqrt(report.n_active) / float(np.linalg.svd(pinned, compute_uv=False).min())
    worst = np.inf
    if report.solver != "lstsq":
        worst = float(np.abs(np.linalg.pinv(pinned)).sum(axis=1).max())

    def slack(bound: float | None) -> float:
        return report.eps + (report.eps if bound is None else bound)

    return min(root, worst) * slack(old_incoming), root * slack(incoming)


def audit(net, z, x, method, noise) -> list[LayerAudit]:
    """Invert x with the noise bound stated; each layer's certificate (first layer first)."""
    _, hidden = net.forward(z, return_hidden=True)
    with recorded_layers() as calls:
        invert(net, x, method, noise=noise, progress=False)
    audits = []
    # Each chain's incoming bound: the stated noise, then each layer's bound (None: eps).
    old_incoming = incoming = noise
    for layer, ys, answers in calls:  # the last layer first
        (h, report), = answers
        index = report.layer
        old, term = old_layer_bounds(layer, ys[0], report, noise if index == len(net.layers) - 1
                                     else None, old_incoming, incoming)
        audits.append(LayerAudit(index, report.solver, float(np.abs(h - hidden[index]).max()),
                                 report.error_bound, old, term))
        old_incoming = old if np.isfinite(old) else None
        incoming = report.error_bound if np.isfinite(report.error_bound) else None
    return audits[::-1]


def noisy_instances(nets=NETS, amplitudes=AMPLITUDES, seeds=SEEDS):
    """(name, net, z, x, method, stated bound) over the nets, amplitudes and seeds above."""
    for widths, activation in nets:
        for seed in range(seeds):
            net = random_network(list(widths), activation, seed=seed)
            rng = np.random.default_rng([seed, 12])
            z = rng.standard_normal(widths[0])
            clean = net.forward(z)
            stated = 3.0 if (seed // len(METHODS)) % 2 else 1.0
            for amplitude in amplitudes:
                a = amplitude * float(np.abs(clean).max())
                x = clean + rng.uniform(-a, a, size=clean.shape)
                yield (f"{activation} {'x'.join(map(str, widths))}", net, z, x,
                       METHODS[seed % len(METHODS)], stated * a)


def tightness(audits: list[list[LayerAudit]]) -> dict[str, dict[str, float]]:
    """Per group (every layer; the layers least squares answered; those an LP answered; z):
    the count, and median and worst of true error / bound and of bound / old bound, over the
    certified layers (finite bounds, nonzero errors); an empty group is left out."""
    layers = [a for run in audits for a in run if np.isfinite(a.bound) and a.true_error > 0]
    groups = {"layers": layers,
              "lstsq layers": [a for a in layers if a.solver == "lstsq"],
              "LP layers": [a for a in layers if a.solver != "lstsq"],
              "z": [run[0] for run in audits
                    if np.isfinite(run[0].bound) and run[0].true_error > 0]}
    out = {}
    for name, chosen in groups.items():
        if not chosen:
            continue
        valid = np.array([a.true_error / a.bound for a in chosen])
        against = np.array([a.bound / a.old_bound for a in chosen])
        out[name] = {"count": len(chosen),
                     "error/bound median": float(np.median(valid)),
                     "error/bound worst": float(valid.max()),
                     "bound/old median": float(np.median(against)),
                     "bound/old min": float(against.min()),
                     "bound/old max": float(against.max())}
    return out


@pytest.fixture(scope="module")
def audits() -> list[list[LayerAudit]]:
    return [audit(net, z, x, method, a) for _, net, z, x, method, a in noisy_instances()]


def test_the_bound_holds_at_every_layer_and_on_z(audits):
    assert len(audits) >= 1000
    certified = [run for run in audits if np.isfinite(run[0].bound)]
    assert len(certified) >= 0.7 * len(audits)  # the check is not vacuous
    broken = [(i, a) for i, run in enumerate(audits) for a in run
              if np.isfinite(a.bound) and not a.true_error <= a.bound]
    assert not broken, f"{len(broken)} layers above their bound, e.g. {broken[:3]}"


def test_the_bound_is_never_above_the_old_term(audits):
    """sqrt(|A|) max_i ||row i of W_A^+||_2 <= sqrt(|A|) / sigma_min, up to the rounding
    margin (below 1e-7 on most of these W_A, up to 2e-6 on the worst conditioned)."""
    pairs = [a for run in audits for a in run if np.isfinite(a.old_term)]
    assert all(np.isfinite(a.bound) for a in pairs)  # certified wherever the old one was
    assert all(a.bound <= a.old_term * (1 + 1e-4) for a in pairs)
    lstsq = [a.bound / a.old_bound for a in pairs if a.solver == "lstsq"]
    assert len(lstsq) >= 100 and np.median(lstsq) < 0.9  # least squares: strictly tighter


def test_tightness_is_reported(audits, capsys):
    figures = tightness(audits)
    with capsys.disabled():
        print("\ncertificate tightness:")
        for name, group in figures.items():
            print(f"  {name}: " + ", ".join(f"{k} {v:.3g}" for k, v in group.items()))
    # One layer's bound is within a factor ~100 of the true error (worst case against typical
    # noise); a bound 10x too loose would put the worst ratio below 0.03.
    assert figures["layers"]["error/bound worst"] >= 0.1


@pytest.mark.parametrize("spread", [0.0, 2.0, 4.0])
def test_the_factor_bounds_bracket_sigma_min_and_the_row_norms(spread):
    """From R: a lower bound on sigma_min (NumPy's SVD) and an upper bound on the largest row
    norm of W^+ (NumPy's pinv), over the same with columns scaled up to 10^spread apart."""
    rng = np.random.default_rng(int(spread))
    for n, m in ((60, 30), (300, 250), (40, 40)):
        weight = rng.standard_normal((n, m)) * np.logspace(0, -spread, m) / np.sqrt(n)
        factor = linalg.gram_factor(weight)
        sigma_min, row_norm = linalg.inverse_factor_bounds(factor, n)
        true_sigma = float(np.linalg.svd(weight, compute_uv=False).min())
        true_rows = float(np.sqrt((np.linalg.pinv(weight) ** 2).sum(axis=1).max()))
        margin = linalg.rounding_margin(linalg.inverse_factor_norms(factor), n)
        assert margin < 0.5  # (0.02 at spread 4: kappa_F^2 ~ 1e11)
        assert 0 < sigma_min <= true_sigma
        assert true_sigma <= np.sqrt(m) * sigma_min  # ||X||_F <= sqrt(m) ||X||_2
        assert true_rows <= row_norm <= true_rows * (1 + 2 * margin)


def test_the_factor_bounds_prove_nothing_where_rounding_could_void_them():
    """kappa(W) ~ 1e7 on 300 x 250: the rounding margin exceeds 1/2 and (0, inf) comes back,
    though the factor itself succeeds (its pivots are 1e-7 apart)."""
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((300, 250)) * np.logspace(0, -7, 250)
    factor = linalg.gram_factor(weight)
    assert factor is not None
    assert linalg.inverse_factor_bounds(factor, 300) == (0.0, float("inf"))
    # Well conditioned, the margin is tiny (7e-8 here).
    norms = linalg.inverse_factor_norms(linalg.gram_factor(rng.standard_normal((300, 250))))
    assert linalg.rounding_margin(norms, 300) < 1e-6
