"""MNIST denoising and inpainting with the shipped generators (Lei et al. 2019, section 5).

Every instance draws a latent z*, either z* ~ N(0, I) ('gaussian') or z* = the shipped
encoder's mean of a held-out real digit ('digit'), and observes x = G(z*) + noise, where the
noise is i.i.d. Gaussian with variance `variance` per pixel (default 0.3: standard deviation
sqrt(0.3) ~ 0.548 on pixels in [0, 1], the paper's setting; the pixels are not clipped, so
the observation is a real-valued vector). Inpainting also hides pixels: a random-pixel mask
keeps each pixel with probability `keep` (0.9, as the paper's code does), a block mask hides a
`block` x `block` square (default 10 x 10) whose top-left corner is uniform in rows and
columns 4 .. 24 - block. A mask folds into the generator's last layer by dropping the rows of
the hidden pixels (`masked_network`): every method inverts that smaller network.

Methods: 'linf' and 'l1' (the layer-wise LPs, `layerinv.invert(masked net, x, method)` per
instance), 'gd' (gradient descent, the 'bora2017' preset: Adam, lr 0.01, 1,000 steps,
10 restarts, seed 0), 'lp+gd' (gradient descent with the l_inf LP's answer as one more start,
`gradient.refine`), 'encoder' (the amortised baseline: z = the encoder's mean of the
observation, hidden pixels set to 0), and 'pattern' (the whole network fitted on activation
regions, `layerinv.invert(masked net, x, 'pattern')`).

The prior: `prior=` gives the gradient methods and 'pattern' the same objective,
mean_j (G(z) - x)_j^2 + prior ||z||^2; `prior_for(s2)` = s2 / 784 is the MAP weight under
z ~ N(0, I) for noise of variance s2 (for s2 = 0.3: 3.8e-4). The default is 0 (bora2017's).
The registry grid runs the five methods above with prior 0, as before (their trial keys and
rows keep their meaning), plus, as new trials that carry their `prior` (`GRID_EXTRA`),
'pattern' with the MAP prior of the task's noise (0 on the noise-free tasks) and, on the noisy
tasks, 'gd' with that same prior: the pattern method is compared with gradient descent on the
same loss and prior. A summary row's method is labelled by `label` ('gd (MAP prior)').
Measured on 20 instances of the shipped decoder at s2 = 0.3: without a prior 'pattern' reached
a lower objective than gradient descent on all 20 and a lower PSNR (20.0 dB against 22.4 dB:
the lower objective fits the noise; gradient descent's 1,000 steps stop short of it); with
the MAP prior 24.1 dB against 23.9 dB. The gradient methods run every instance of a call in
one tensor (`gradient_descent([net] * n, x, observed=mask)`: the unobserved pixels are left
out of the loss, which is inverting the masked network without building one per instance); each
instance gets the answer it gets alone (tested bitwise).

Metrics per instance (one dict row each): the latent relative error ||z - z*|| / ||z*||, the
MSE and PSNR (peak 1: 10 log10(1 / MSE)) of G(z) against G(z*) on all 784 pixels, the PSNR
against the real digit for 'digit' instances, and the wall-clock seconds of the method's call
(gradient methods: the batch's gradient wall time divided by the number of instances, plus
the instance's own LP time for 'lp+gd').
Instance i uses numpy.random.default_rng([seed, i, 1]), so instance i is the same whatever n
(the trailing 1: NumPy drops trailing zeros, so [seed, 0] would equal seed, the stream of
gradient descent's first restart).

The module is also the registry's `mnist` experiment (its last section: one trial per
(generator, task, z* source, method, instance) of `make_instances(..., seed=SEED)`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from layerinv._walk import Inversion, invert
from layerinv.datasets import IMAGE_SIDE, IMAGE_SIZE
from layerinv.errors import InputError
from layerinv.network import Layer, Network
from layerinv.pretrained import PAPER_KINDS, Encoder, mnist_digits, mnist_encoder, mnist_generator
from layerinv.reproduction.report import not_run, pyplot, save_figure
from layerinv.results import GRADIENT_METHODS

METHODS = ("linf", "l1", "gd", "lp+gd", "encoder")
"""The methods the registry grid runs with prior 0 (stored results files keep their keys);
`denoise` and `inpaint`'s default."""
GRID_EXTRA = (("gd", True), ("pattern", False))
"""(method, noisy tasks only): run with the MAP prior `prior_for(noise variance)`, their
trials carrying `prior` (issue 13: the pattern method beside gradient descent, same loss and
prior; gd on the noise-free tasks with prior 0 is already among METHODS)."""
SUPPORTED = (*METHODS, "pattern")
BATCHED_METHODS = (*GRADIENT_METHODS, "pattern")
"""The methods whose trials of one setting run as batches (`batch_key`): the gradient methods
in one tensor, 'pattern' in one `invert` call per mask (`_estimate_pattern`). Decision: the
pattern method is timed as gradient descent is (the batch's wall time / its size), not one
call per instance, so that their ratio compares like with like; a sample's answer is the
same as alone (bitwise: its random starts are those of a call on it alone, `sample_rngs`,
and tests/test_mnist.py checks it)."""
"""What `denoise`, `inpaint` and `run_instances` take."""
ORDER = SUPPORTED
"""The order of methods in tables and figures."""
SOURCES = ("gaussian", "digit")
MASKS = ("random", "block")
NOISE_VARIANCE = 0.3
KEEP = 0.9
BLOCK = 10
BLOCK_MARGIN = 4
FIGURE_COLUMNS = 8
FIGURE_METHODS = ("linf", "gd", "pattern")
METHOD_LABELS = {"linf": "$\\ell_\\infty$ LP", "l1": "$\\ell_1$ LP", "gd": "gradient descent",
                 "lp+gd": "LP + GD", "pattern": "pattern", "encoder": "encoder"}


@dataclass
class Instance:
    """One seeded instance: the truth, what is observed, and which pixels are seen."""

    index: int
    z: np.ndarray
    clean: np.ndarray
    """G(z*), all 784 pixels."""
    observation: np.ndarray
    """G(z*) + noise, all 784 pixels (hidden ones included; methods see only `keep`)."""
    keep: np.ndarray
    """Boolean (784,): the pixels observed."""
    digit: np.ndarray | None = None
    label: int | None = None


@dataclass
class Run:
    """Rows and the images behind them, for figures."""

    rows: list[dict[str, Any]]
    instances: list[Instance]
    estimates: dict[str, np.ndarray] = field(default_factory=dict)
    """Per method, G(z_hat) of every instance, shape (n, 784)."""


# ------------------------------------------------------------------------------ instances
def masked_network(net: Network, keep: np.ndarray) -> Network:
    """G followed by the mask: the last layer keeps only the rows of the observed pixels."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (net.output_dim,) or not keep.any():
        raise InputError(f"keep must be a boolean mask of shape ({net.output_dim},) with at "
                         f"least one True; got shape {keep.shape}")
    if keep.all():
        return net
    last = net.layers[-1]
    bias = None if last.bias is None else last.bias[keep]
    return Network([*net.layers[:-1],
                    Layer(last.operator.row_subset(keep), bias, last.activation)])


def random_mask(rng: np.random.Generator, keep: float = KEEP) -> np.ndarray:
    """Each pixel observed with probability `keep`."""
    return rng.random(IMAGE_SIZE) < keep


def block_mask(rng: np.random.Generator, block: int = BLOCK) -> np.ndarray:
    """All pixels observed but a block x block square, top-left corner uniform in 4..24-block."""
    high = IMAGE_SIDE - BLOCK_MARGIN - block
    if not 1 <= block or high < BLOCK_MARGIN:
        raise InputError(f"block must be between 1 and {IMAGE_SIDE - 2 * BLOCK_MARGIN}; "
                         f"got {block}")
    row, col = rng.integers(BLOCK_MARGIN, high + 1, size=2)
    mask = np.ones((IMAGE_SIDE, IMAGE_SIDE), dtype=bool)
    mask[row:row + block, col:col + block] = False
    return mask.ravel()


def make_instances(net: Network, encoder: Encoder | None, n: int, *, source: str = "gaussian",
                   variance: float = NOISE_VARIANCE, mask: str | None = None,
                   keep: float = KEEP, block: int = BLOCK, seed: int = 0,
                   digits: np.ndarray | None = None,
                   labels: np.ndarray | None = None) -> list[Instance]:
    """n seeded instances; see the module docstring. 'digit' needs an encoder and digits."""
    if source not in SOURCES:
        raise InputError(f"source must be one of {SOURCES}; got {source!r}")
    if mask is not None and mask not in MASKS:
        raise InputError(f"mask must be None or one of {MASKS}; got {mask!r}")
    if not (isinstance(n, int) and n >= 1):
        raise InputError(f"n must be an int >= 1; got {n!r}")
    if variance < 0:
        raise InputError(f"variance must be >= 0; got {variance!r}")
    if not 0 < keep <= 1:
        raise InputError(f"keep must be in (0, 1]; got {keep!r}")
    if source == "digit":
        if encoder is None or digits is None:
            raise InputError("source='digit' needs an encoder and held-out digits")
        if n > len(digits):
            raise InputError(f"source='digit' has {len(digits)} held-out digits; asked for {n}")
    instances = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 1])  # a non-zero tag: [s, 0] == s in NumPy
        digit = label = None
        if source == "gaussian":
            z = rng.standard_normal(net.input_dim)
        else:
            assert encoder is not None and digits is not None
            digit = np.asarray(digits[i], dtype=np.float64)
            label = None if labels is None else int(labels[i])
            z = encoder(digit)
        clean = net.forward(z)
        noise = np.sqrt(variance) * rng.standard_normal(IMAGE_SIZE) if variance > 0 else 0.0
        if mask == "random":
            seen = random_mask(rng, keep)
        elif mask == "block":
            seen = block_mask(rng, block)
        else:
            seen = np.ones(IMAGE_SIZE, dtype=bool)
        instances.append(Instance(i, z, clean, clean + noise, seen, digit, label))
    return instances


# ------------------------------------------------------------------------------ methods
def prior_for(variance: float) -> float:
    """The MAP prior weight for the mean-square loss: s2 / 784 (module docstring)."""
    return float(variance) / IMAGE_SIZE


def grid_methods(variance: float) -> list[tuple[str, float]]:
    """The (method, prior) pairs the registry grid (and the docs tables) run on a task of
    noise variance `variance`: METHODS with prior 0, then GRID_EXTRA with the MAP prior."""
    prior = prior_for(variance)
    return [*((method, 0.0) for method in METHODS),
            *((method, prior) for method, noisy_only in GRID_EXTRA
              if prior > 0 or not noisy_only)]


def label(method: str, prior: float = 0.0, variance: float | None = None) -> str:
    """A method with its prior, as tables and figures name it: 'gd', 'gd (MAP prior)' (the
    prior is `prior_for(variance)`), 'gd (prior 0.001)'."""
    if not prior:
        return method
    if variance is not None and prior == prior_for(variance):
        return f"{method} (MAP prior)"
    return f"{method} (prior {prior:.2g})"


def label_method(text: str) -> str:
    """The method of a `label`."""
    return text.split(" (", 1)[0]


def row_label(row: dict[str, Any]) -> str:
    """`label` of a row (rows stored before the prior existed have none: prior 0)."""
    return label(row["method"], float(row.get("prior") or 0.0), float(row["noise_variance"]))


def invert_method(net: Network, x: np.ndarray, method: str, prior: float = 0.0) -> Inversion:
    """`layerinv.invert(net, x, method)`; the gradient methods with the bora2017 preset, they
    and 'pattern' with the prior weight `prior`."""
    if method in ("gd", "lp+gd"):
        return invert(net, x, method, progress=False, preset="bora2017", prior_weight=prior)
    if method == "pattern":
        return invert(net, x, method, progress=False, prior=prior)
    return invert(net, x, method, progress=False)


def _estimate(method: str, net: Network, masked: Network, encoder: Encoder | None,
              instance: Instance, prior: float) -> tuple[np.ndarray, str, float]:
    """(z_hat, status, seconds) of one method on one instance."""
    x = instance.observation[instance.keep]
    started = time.perf_counter()
    if method == "encoder":
        if encoder is None:
            raise InputError("method 'encoder' needs an encoder")
        filled = np.where(instance.keep, instance.observation, 0.0)
        z = encoder(filled)
        return z, "encoder", time.perf_counter() - started
    result = invert_method(masked, x, method, prior)
    seconds = time.perf_counter() - started
    return np.asarray(result.z, dtype=np.float64), str(result.status), seconds


def _estimate_pattern(net: Network, instances: Sequence[Instance], prior: float
                      ) -> list[tuple[np.ndarray, str, float]]:
    """(z_hat, status, seconds) per instance of 'pattern': the instances that share a mask in
    one `invert` call (BATCHED_METHODS), seconds = the call's wall time / its size."""
    groups: dict[bytes, list[int]] = {}
    for position, instance in enumerate(instances):
        groups.setdefault(np.packbits(instance.keep).tobytes(), []).append(position)
    out: dict[int, tuple[np.ndarray, str, float]] = {}
    for members in groups.values():
        keep = instances[members[0]].keep
        x = np.stack([instances[b].observation[keep] for b in members])
        started = time.perf_counter()
        result = invert_method(masked_network(net, keep), x, "pattern", prior)
        share = (time.perf_counter() - started) / len(members)
        for row, b in enumerate(members):
            out[b] = (np.asarray(result.z[row], dtype=np.float64), str(result.status[row]),
                      share)
    return [out[b] for b in range(len(instances))]


def _objective(image: np.ndarray, instance: Instance, z: np.ndarray, prior: float) -> float:
    """mean over the seen pixels of (G(z) - x)^2 + prior ||z||^2: what the gradient methods
    and 'pattern' minimise."""
    seen = instance.keep
    return float(np.mean((image[seen] - instance.observation[seen]) ** 2)
                 + prior * float(z @ z))


def psnr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """10 log10(1 / MSE) (peak 1, pixels in [0, 1]); inf for a perfect match."""
    mse = float(np.mean((np.asarray(estimate) - np.asarray(reference)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)




def _estimate_gradient(method: str, net: Network, instances: Sequence[Instance],
                       prior: float) -> list[tuple[np.ndarray, str, float]]:
    """(z_hat, status, seconds) per instance of a gradient method, all instances in one
    tensor; seconds = the gradient stage's wall time / n (+ the instance's LP time)."""
    from layerinv._gradient import gradient_descent, refine

    observed = np.stack([instance.keep for instance in instances])
    x = np.where(observed, np.stack([instance.observation for instance in instances]), 0.0)
    mask = None if observed.all() else observed
    lp_seconds = [0.0] * len(instances)
    options: dict[str, Any] = {"observed": mask, "preset": "bora2017", "seed": 0,
                               "prior_weight": prior, "progress": False}
    if method == "lp+gd":
        starts = []
        for b, instance in enumerate(instances):
            started = time.perf_counter()
            lp = invert(masked_network(net, instance.keep),
                        instance.observation[instance.keep], "linf", progress=False)
            lp_seconds[b] = time.perf_counter() - started
            starts.append(np.asarray(lp.z, dtype=np.float64))
        started = time.perf_counter()
        result = refine([net] * len(instances), x, np.stack(starts), **options)
    else:
        started = time.perf_counter()
        # A list of (one) network: the stacked forward, whose numbers per instance do not
        # depend on the other instances of the batch (see gradient._StackedNetworks).
        result = gradient_descent([net] * len(instances), x, **options)
    share = (time.perf_counter() - started) / len(instances)
    return [(np.asarray(result.z[b], dtype=np.float64), str(result.status[b]),
             lp_seconds[b] + share) for b in range(len(instances))]


def run_instances(net: Network, encoder: Encoder | None, instances: Sequence[Instance],
                  methods: Iterable[str], *, describe: dict[str, Any], seed: int,
                  prior: float = 0.0, progress: bool | None = None) -> Run:
    """Every method on every instance: the rows (one per pair) and the images G(z_hat)."""
    methods = list(methods)
    for method in methods:
        if method not in SUPPORTED:
            raise InputError(f"methods must be drawn from {SUPPORTED}; got {method!r}")
    rows: list[dict[str, Any]] = []
    estimates = {m: np.zeros((len(instances), IMAGE_SIZE)) for m in methods}
    bar = tqdm(total=len(instances) * len(methods), desc=f"{describe['task']} ({net.widths})",
               unit="solve", disable=progress is False, delay=0.0 if progress else 2.0)
    with bar:
        batched = {}
        for method in methods:
            if method in GRADIENT_METHODS:
                batched[method] = _estimate_gradient(method, net, instances, prior)
                bar.update(len(instances))
            elif method == "pattern":
                batched[method] = _estimate_pattern(net, instances, prior)
                bar.update(len(instances))
        for position, instance in enumerate(instances):
            masked = masked_network(net, instance.keep)
            for method in methods:
                if method in batched:
                    z_hat, status, seconds = batched[method][position]
                else:
                    z_hat, status, seconds = _estimate(method, net, masked, encoder, instance,
                                                       prior)
                    bar.update()
                image = net.forward(z_hat)
                estimates[method][instance.index] = image
                mse = float(np.mean((image - instance.clean) ** 2))
                rows.append({
                    **describe,
                    "method": method,
                    "instance": instance.index,
                    "seed": seed,
                    "label": instance.label,
                    "status": status,
                    "latent_error": float(np.linalg.norm(z_hat - instance.z)
                                          / np.linalg.norm(instance.z)),
                    "mse": mse,
                    "psnr": psnr(image, instance.clean),
                    "psnr_digit": (None if instance.digit is None
                                   else psnr(image, instance.digit)),
                    "observed_pixels": int(instance.keep.sum()),
                    "prior": prior,
                    "objective": _objective(image, instance, z_hat, prior),
                    "seconds": seconds,
                })
    return Run(rows, list(instances), estimates)


# ------------------------------------------------------------------------------ tasks
def _setup(kind: str, generator: Network | None, encoder: Encoder | None,
           source: str) -> tuple[Network, Encoder | None, np.ndarray | None, np.ndarray | None]:
    net = mnist_generator(kind) if generator is None else generator
    if encoder is None and generator is None:
        encoder = mnist_encoder(kind)
    digits = labels = None
    if source == "digit":
        shipped = mnist_digits()
        digits, labels = shipped.images, shipped.labels
    return net, encoder, digits, labels


def denoise_run(kind: str = "relu", *, n: int = 100, source: str = "gaussian",
                variance: float = NOISE_VARIANCE, methods: Iterable[str] = METHODS,
                seed: int = 0, generator: Network | None = None, encoder: Encoder | None = None,
                prior: float = 0.0, progress: bool | None = None) -> Run:
    """`denoise`, keeping the images (for figures)."""
    net, encoder, digits, labels = _setup(kind, generator, encoder, source)
    instances = make_instances(net, encoder, n, source=source, variance=variance, seed=seed,
                               digits=digits, labels=labels)
    describe = {"task": "denoise", "generator": kind if generator is None else "custom",
                "source": source, "mask": None, "noise_variance": variance}
    return run_instances(net, encoder, instances, methods, describe=describe, seed=seed,
                         prior=prior, progress=progress)


def inpaint_run(kind: str = "relu", *, n: int = 100, mask: str = "random", keep: float = KEEP,
                block: int = BLOCK, variance: float = 0.0, source: str = "gaussian",
                methods: Iterable[str] = METHODS, seed: int = 0,
                generator: Network | None = None, encoder: Encoder | None = None,
                prior: float = 0.0, progress: bool | None = None) -> Run:
    """`inpaint`, keeping the images (for figures)."""
    net, encoder, digits, labels = _setup(kind, generator, encoder, source)
    instances = make_instances(net, encoder, n, source=source, variance=variance, mask=mask,
                               keep=keep, block=block, seed=seed, digits=digits, labels=labels)
    describe = {"task": f"inpaint-{mask}", "generator": kind if generator is None else "custom",
                "source": source,
                "mask": f"keep {keep:g}" if mask == "random" else f"block {block}x{block}",
                "noise_variance": variance}
    return run_instances(net, encoder, instances, methods, describe=describe, seed=seed,
                         prior=prior, progress=progress)


def denoise(kind: str = "relu", *, n: int = 100, source: str = "gaussian",
            variance: float = NOISE_VARIANCE, methods: Iterable[str] = METHODS, seed: int = 0,
            generator: Network | None = None, encoder: Encoder | None = None,
            figure: str | Path | None = None, prior: float = 0.0, progress: bool | None = None
            ) -> list[dict[str, Any]]:
    """Denoising: x = G(z*) + N(0, variance) per pixel; one row per (instance, method).

    `kind` picks the shipped generator ('relu', 'leaky_relu' or 'conv'; the registry grid
    runs the first two, PAPER_KINDS); `generator` (and `encoder`) replace it. `figure` saves
    the paper's grid of the first instances as a PNG.
    """
    run = denoise_run(kind, n=n, source=source, variance=variance, methods=methods, seed=seed,
                      generator=generator, encoder=encoder, prior=prior, progress=progress)
    if figure is not None:
        figure_grid(run, figure, title=_title(run.rows[0]))
    return run.rows


def inpaint(kind: str = "relu", *, n: int = 100, mask: str = "random", keep: float = KEEP,
            block: int = BLOCK, variance: float = 0.0, source: str = "gaussian",
            methods: Iterable[str] = METHODS, seed: int = 0, generator: Network | None = None,
            encoder: Encoder | None = None, figure: str | Path | None = None,
            prior: float = 0.0, progress: bool | None = None) -> list[dict[str, Any]]:
    """Inpainting: a random-pixel or block mask, with (variance 0.3) or without noise."""
    run = inpaint_run(kind, n=n, mask=mask, keep=keep, block=block, variance=variance,
                      source=source, methods=methods, seed=seed, generator=generator,
                      encoder=encoder, prior=prior, progress=progress)
    if figure is not None:
        figure_grid(run, figure, title=_title(run.rows[0]))
    return run.rows


def grid_run(kind: str, task: str, *, source: str = "gaussian", variance: float = 0.0,
             n: int = 100, seed: int = 0, progress: bool | None = None) -> Run:
    """Every (method, prior) of `grid_methods(variance)` on one task: one `denoise_run` /
    `inpaint_run` per prior, the estimates keyed by `label` (what the docs tables run)."""
    if task not in TASKS:
        raise InputError(f"task must be one of {TASKS}; got {task!r}")
    by_prior: dict[float, list[str]] = {}
    for method, prior in grid_methods(variance):
        by_prior.setdefault(prior, []).append(method)
    rows: list[dict[str, Any]] = []
    estimates: dict[str, np.ndarray] = {}
    instances: list[Instance] = []
    for prior, methods in by_prior.items():
        options = {"n": n, "source": source, "variance": variance, "methods": methods,
                   "seed": seed, "prior": prior, "progress": progress}
        if task == "denoise":
            run = denoise_run(kind, **options)
        else:
            run = inpaint_run(kind, mask=task.split("-", 1)[1], **options)
        rows += run.rows
        instances = run.instances
        estimates.update({label(m, prior, variance): run.estimates[m] for m in methods})
    return Run(rows, instances, estimates)


# ------------------------------------------------------------------------------ tables
SUMMARY_KEYS = ("generator", "task", "source", "noise_variance", "method", "prior")


def summarise(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (generator, task, source, noise, method, prior): n, medians and the recovered
    share; `label` names the method with its prior.

    'recovered' is the share of instances with latent relative error < 1e-6. A row with no
    prior (stored before it existed) has prior 0.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        row = {**row, "prior": float(row.get("prior") or 0.0)}
        groups.setdefault(tuple(row[k] for k in SUMMARY_KEYS), []).append(row)
    table = []
    for key, members in groups.items():
        errors = np.array([r["latent_error"] for r in members])
        digit = [r["psnr_digit"] for r in members if r["psnr_digit"] is not None]
        objective = [r["objective"] for r in members if r.get("objective") is not None]
        setting = dict(zip(SUMMARY_KEYS, key, strict=True))
        table.append({
            **setting,
            "label": label(setting["method"], setting["prior"], setting["noise_variance"]),
            "n": len(members),
            "latent_error": float(np.median(errors)),
            "recovered": float(np.mean(errors < 1e-6)),
            "psnr": float(np.median([r["psnr"] for r in members])),
            "psnr_digit": float(np.median(digit)) if digit else None,
            "objective": float(np.median(objective)) if objective else None,
            "seconds": float(np.median([r["seconds"] for r in members])),
        })
    return table


def format_summary(summary: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of `summarise`'s output."""
    lines = ["| generator | task | z* | noise var. | method | n | median latent err. | "
             "err. < 1e-6 | median PSNR vs G(z*) (dB) | median PSNR vs digit (dB) | "
             "median objective | median s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        digit = "" if s["psnr_digit"] is None else f"{s['psnr_digit']:.1f}"
        objective = "" if s.get("objective") is None else f"{s['objective']:.4g}"
        lines.append(
            f"| {s['generator']} | {s['task']} | {s['source']} | {s['noise_variance']:g} | "
            f"{s['label']} | {s['n']} | {s['latent_error']:.2e} | {s['recovered']:.2f} | "
            f"{_db(s['psnr'])} | {digit} | {objective} | {s['seconds']:.4f} |")
    return "\n".join(lines)


def _db(value: float) -> str:
    return "inf" if np.isinf(value) else f"{value:.1f}"


def _title(row: dict[str, Any]) -> str:
    noise = (f"noise variance {row['noise_variance']:g}" if row["noise_variance"]
             else "no noise")
    what = row["task"] if row["mask"] is None else f"{row['task']} ({row['mask']})"
    return f"{what}, {noise}, z* {row['source']}, generator {row['generator']}"


# ------------------------------------------------------------------------------ figures
def _observation_rgb(instance: Instance) -> np.ndarray:
    """The observation clipped to [0, 1] for display, hidden pixels in blue."""
    grey = np.clip(instance.observation, 0.0, 1.0)
    rgb = np.repeat(grey[:, None], 3, axis=1)
    rgb[~instance.keep] = (0.25, 0.45, 0.95)
    return rgb.reshape(IMAGE_SIDE, IMAGE_SIDE, 3)


def figure_grid(run: Run, path: str | Path, *, methods: Sequence[str] = FIGURE_METHODS,
                columns: int = FIGURE_COLUMNS, title: str | None = None) -> Path:
    """The paper's grid: rows Observation / Ground truth / each method; one column each for
    the first `columns` instances. Images are shown clipped to [0, 1]. Writes a PNG.

    A row per estimate of `run.estimates` (keyed by method or `label`) named in `methods`
    or whose method is, in `methods`' order (`figure_rows`)."""
    plt = pyplot()
    methods = figure_rows(run.estimates, methods)
    shown = run.instances[:columns]
    labels = ["Observation", "Ground truth", *(_display(m) for m in methods)]
    fig, axes = plt.subplots(len(labels), len(shown), squeeze=False,
                             figsize=(1.1 * len(shown) + 1.4, 1.1 * len(labels) + 0.4))
    for j, instance in enumerate(shown):
        images = [_observation_rgb(instance), instance.clean,
                  *(run.estimates[m][instance.index] for m in methods)]
        for i, image in enumerate(images):
            ax = axes[i, j]
            if image.ndim == 1:
                image = np.clip(image, 0.0, 1.0).reshape(IMAGE_SIDE, IMAGE_SIDE)
            ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(labels[i], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, bbox_inches="tight")


def figure_rows(keys: Iterable[str], methods: Sequence[str]) -> list[str]:
    """The keys (methods or `label`s) named in `methods` or whose method is, in `methods`'
    order, keys of one method in their own order."""
    order = {name: i for i, name in enumerate(methods)}

    def place(key: str) -> int | None:
        return order.get(key, order.get(label_method(key)))

    return sorted((key for key in keys if place(key) is not None),
                  key=lambda key: place(key) or 0)


def _display(key: str) -> str:
    """A figure's name for a method or `label`: 'gradient descent, MAP prior'."""
    method, _, prior = key.partition(" (")
    return METHOD_LABELS[method] + (f",\n{prior.rstrip(')')}" if prior else "")


def samples_figure(path: str | Path, kind: str = "relu", *, count: int = 64, seed: int = 0,
                   generator: Network | None = None) -> Path:
    """A grid of G(z) for z ~ N(0, I) (numpy.random.default_rng(seed)), clipped to [0, 1]."""
    net = mnist_generator(kind) if generator is None else generator
    z = np.random.default_rng(seed).standard_normal((count, net.input_dim))
    return _image_grid(net.forward(z), path, f"samples G(z), z ~ N(0, I), generator {kind}")


def reconstructions_figure(path: str | Path, kind: str = "relu", *, count: int = 16) -> Path:
    """Held-out digits (odd rows) over their reconstructions G(encoder mean) (even rows)."""
    net, encoder = mnist_generator(kind), mnist_encoder(kind)
    digits = mnist_digits().images[:count]
    recon = net.forward(encoder(digits))
    per_row = 8
    blocks = []
    for start in range(0, count, per_row):
        blocks.extend([digits[start:start + per_row], recon[start:start + per_row]])
    return _image_grid(np.concatenate(blocks), path,
                       f"held-out digits / reconstructions, generator {kind}", per_row=per_row)


def _image_grid(images: np.ndarray, path: str | Path, title: str, per_row: int = 8) -> Path:
    plt = pyplot()
    rows = int(np.ceil(len(images) / per_row))
    canvas = np.ones((rows * (IMAGE_SIDE + 2), per_row * (IMAGE_SIDE + 2)))
    for k, image in enumerate(images):
        r, c = divmod(k, per_row)
        canvas[r * 30 + 1:r * 30 + 29, c * 30 + 1:c * 30 + 29] = \
            np.clip(image, 0.0, 1.0).reshape(IMAGE_SIDE, IMAGE_SIDE)
    fig, ax = plt.subplots(figsize=(per_row * 0.6 + 0.4, rows * 0.6 + 0.6))
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return save_figure(fig, path, bbox_inches="tight")


# ------------------------------------------------------------------------------ the experiment
# The registry's interface (see `layerinv.reproduction.registry`): one trial = one
# (generator, task, z* source, method, instance). Instance i is instance i of
# `make_instances(..., seed=SEED)`, so a row equals the same instance's row of
# `denoise(n=N, seed=SEED)` / `inpaint(...)`. For the image grids, G(z_hat) of the first
# instances of the figure methods is stored with the row (`image`, rounded to 1e-5).
NAME = "mnist"
TITLE = "MNIST denoising and inpainting (paper section 5)"
TIMING_FIELDS = ("seconds",)
TASKS = ("denoise", "inpaint-random", "inpaint-block")
"""The grid's tasks: Gaussian noise of variance 0.3 per pixel; each pixel kept with
probability 0.9, no noise; a 10 x 10 block hidden, no noise."""
TRIALS = 100
QUICK_TRIALS = 2
SEED = 1
"""Kept at 1 so stored rows stay valid; `make_instances` now tags its streams so that seed 0
no longer collides with gradient descent's first restart."""
BATCH_SIZE = 25
"""Gradient-method trials per batch: the instances of one setting share the generator,
whose weights are stored once for the whole batch."""
EXACT_DB = 100.0
"""PSNR above this counts as exact (an image matching to 1e-5 rms): capped when compared."""
DESCRIPTION = (
    "The shipped MNIST VAE decoders ('relu': 20 x 60 x 784, the paper's; 'leaky_relu': "
    "20 x 200 x 500 x 784), z* ~ N(0, I) ('gaussian') or the encoder's mean of a held-out "
    "digit ('digit'). Denoising: x = G(z*) + N(0, 0.3) per pixel; inpainting: 10 % of the "
    "pixels hidden at random, or a 10 x 10 block, no noise. Methods: l_inf and l_1 LPs, "
    "gradient descent (bora2017), LP + GD, the encoder, and the pattern method (the whole "
    "network fitted on activation regions, l2 loss) with the MAP prior ||z||^2 s2 / 784 "
    "under noise of variance s2, beside gradient descent with the same prior ('MAP prior'). "
    "Latent error, PSNR against G(z*) (and against the digit), the objective (mean square "
    "fit + prior) both minimise.")
PAPER = (
    "Section 5 shows denoising and inpainting of MNIST digits with the 20 x 60 x 784 ReLU "
    "generator as image grids, the LP's reconstructions next to gradient descent's; it gives "
    "no numeric table for them (the LP's time on this net, 0.5 s, is in the timing table).")


def grid(quick: bool, trials: int | None) -> list[dict[str, Any]]:
    count = trials if trials is not None else (QUICK_TRIALS if quick else TRIALS)
    kinds = ("relu",) if quick else PAPER_KINDS
    sources = ("gaussian",) if quick else SOURCES
    out = []
    for kind in kinds:
        for task in TASKS:
            extra: dict[str, Any] = {"noise_variance": NOISE_VARIANCE if task == "denoise"
                                     else 0.0}
            if task == "inpaint-random":
                extra["keep"] = KEEP
            if task == "inpaint-block":
                extra["block"] = BLOCK
            methods = grid_methods(extra["noise_variance"])
            for source in sources:
                n = min(count, 200) if source == "digit" else count
                for i in range(n):
                    for method, prior in methods:
                        # The prior-0 methods keep the keys stored before the prior existed.
                        with_prior = {} if (method, prior) in OLD_KEYS else {"prior": prior}
                        out.append({"task": task, "generator": kind, "source": source,
                                    **extra, "method": method, **with_prior, "instance": i,
                                    "seed": SEED})
    return out


OLD_KEYS = frozenset((method, 0.0) for method in METHODS)
"""The (method, prior) pairs whose trials have no `prior` key (stored before it existed)."""


def cost(params: dict[str, Any]) -> float:
    if params["method"] in GRADIENT_METHODS:  # as part of a batch
        return 0.2 if params["generator"] == "relu" else 1.0
    if params["method"] == "pattern":
        return 0.1 if params["generator"] == "relu" else 0.5
    return 0.05


def batch_key(params: dict[str, Any]) -> tuple | None:
    """Trials of a BATCHED_METHODS method that differ only in their instance: one batch."""
    if params["method"] not in BATCHED_METHODS:
        return None
    return tuple(sorted((k, v) for k, v in params.items() if k != "instance"))


def shared(quick: bool) -> dict[str, Any]:
    """Per generator kind: `models(kind)`."""
    kinds = ("relu",) if quick else PAPER_KINDS
    return {kind: models(kind) for kind in kinds}


def models(kind: str) -> tuple[Network, Encoder, np.ndarray, np.ndarray]:
    """A shipped kind's (generator, encoder, held-out digits, their labels)."""
    digits = mnist_digits()
    return mnist_generator(kind), mnist_encoder(kind), digits.images, digits.labels


def _models(kind: str, shared_objects: Any) -> tuple[Any, Any, Any, Any]:
    """`shared`'s entry for a generator kind, loaded here if the run did not send it."""
    if shared_objects is not None and kind in shared_objects:
        return shared_objects[kind]
    return models(kind)  # any shipped kind: the 'conv' experiment runs its trials here too


def _instances(params: dict[str, Any], net: Any, encoder: Any, digits: Any, labels: Any,
               n: int) -> list[Instance]:
    task = params["task"]
    # 'inpaint-random' -> 'random'; every other task ('denoise', the conv experiment's
    # 'realizable') observes all pixels.
    mask = task.split("-", 1)[1] if task.startswith("inpaint-") else None
    return make_instances(net, encoder, n, source=params["source"],
                          variance=float(params["noise_variance"]), mask=mask,
                          keep=float(params.get("keep", KEEP)),
                          block=int(params.get("block", BLOCK)),
                          seed=int(params["seed"]), digits=digits, labels=labels)


def _describe(params: dict[str, Any]) -> dict[str, Any]:
    task = params["task"]
    if task == "inpaint-random":
        mask = f"keep {params['keep']:g}"
    elif task == "inpaint-block":
        mask = f"block {params['block']}x{params['block']}"
    else:
        mask = None
    return {"task": task, "generator": params["generator"], "source": params["source"],
            "mask": mask, "noise_variance": params["noise_variance"]}


def run_trial(params: dict[str, Any], shared_objects: Any = None) -> dict[str, Any]:
    return run_batch([params], shared_objects)[0]  # one code path, batched or not


def run_batch(batch: list[dict[str, Any]], shared_objects: Any = None) -> list[dict[str, Any]]:
    """Trials of one setting and method (instances differ) in one `run_instances` call:
    the gradient methods run all of them in one tensor, 'pattern' in one call per mask, the
    others one by one."""
    from layerinv._blas import one_torch_thread

    first = batch[0]
    if any(_setting(p) != _setting(first) for p in batch):
        raise InputError("run_batch takes trials that differ only in their instance")
    net, encoder, digits, labels = _models(first["generator"], shared_objects)
    count = max(int(p["instance"]) for p in batch) + 1
    instances = _instances(first, net, encoder, digits, labels, count)
    chosen = [replace(instances[int(p["instance"])], index=position)
              for position, p in enumerate(batch)]
    method = first["method"]
    with one_torch_thread():
        run = run_instances(net, encoder, chosen, [method], describe=_describe(first),
                            seed=int(first["seed"]), prior=float(first.get("prior", 0.0)),
                            progress=False)
    out = []
    for position, params in enumerate(batch):
        i = int(params["instance"])
        row = {**run.rows[position], "instance": i}
        metrics = {k: v for k, v in row.items() if k not in params}
        if i < FIGURE_COLUMNS and method in FIGURE_METHODS:
            metrics["image"] = [round(float(v), 5) for v in run.estimates[method][position]]
        out.append(metrics)
    return out


def _setting(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "instance"}


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(row: dict[str, Any]) -> tuple:
        return (row["generator"], _index(TASKS, row["task"]), _index(SOURCES, row["source"]),
                _index(ORDER, row["method"]), float(row.get("prior") or 0.0),
                int(row["instance"]))

    return sorted(rows, key=key)


def _index(values: Sequence[str], value: str) -> int:
    return values.index(value) if value in values else len(values)


def summary(rows: list[dict[str, Any]], gradient_methods: Sequence[str] = GRADIENT_METHODS
            ) -> str:
    """The summary table; a method of `gradient_methods` with no rows on a setting gets a
    row saying why (PyTorch missing)."""
    ordered = _sorted(rows)
    table = format_summary(summarise(ordered))
    settings = dict.fromkeys((r["generator"], r["task"], r["source"], r["noise_variance"])
                             for r in ordered)
    for setting in settings:  # a gradient method with no rows says why
        for method in gradient_methods:
            if not any((r["generator"], r["task"], r["source"], r["noise_variance"],
                        r["method"]) == (*setting, method) for r in rows):
                generator, task, source, variance = setting
                table += (f"\n| {generator} | {task} | {source} | {variance:g} | {method} | 0 "
                          f"| {not_run()} |  |  |  |  |  |")
    table += ("\n\nThe objective is what the gradient methods and the pattern method minimise,"
              " the mean square fit over the observed pixels + the row's prior ||z||^2 (MAP "
              "prior: noise variance / 784; none on the noise-free tasks).")
    sizes = sorted({int(r["_batch"]) for r in rows if (r.get("_batch") or 1) > 1})
    if sizes:
        table += (f"\n\nThe gradient methods and the pattern method ran in batches of "
                  f"{'/'.join(map(str, sizes))} instances (gradient descent in one tensor, "
                  f"pattern in one call per mask): their seconds are the batch's wall time / "
                  f"its size (+ the instance's own LP time for lp+gd).")
    return table


def figures(rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if "image" in row:
            groups.setdefault((row["generator"], row["task"], row["source"]), []).append(row)
    paths = []
    for (kind, task, source), members in sorted(groups.items()):
        names = dict.fromkeys(row_label(r) for r in _sorted(members))
        methods = [name for meth in FIGURE_METHODS for name in names
                   if label_method(name) == meth]
        images = {(row_label(r), int(r["instance"])): r["image"] for r in members}
        n = 0
        while n < FIGURE_COLUMNS and all((meth, n) in images for meth in methods):
            n += 1
        if n == 0:
            continue
        params = members[0]
        net, encoder, digits, labels = _models(kind, None)
        instances = _instances(params, net, encoder, digits, labels, n)
        estimates = {meth: np.array([images[(meth, j)] for j in range(n)]) for meth in methods}
        noise = params["noise_variance"]
        what = f"noise variance {noise:g}" if noise else "no noise"
        title = f"{task}, {what}, z* {source}, generator {kind}"
        path = Path(out_dir) / f"mnist_{kind}_{task}_{source}.png"
        paths.append(figure_grid(Run([], instances, estimates), path, methods=methods,
                                 title=title))
    return paths


def verdict(rows: list[dict[str, Any]]) -> str:
    table = summarise(_sorted(rows))
    by = {(s["generator"], s["task"], s["source"], s["label"]): s for s in table}
    compared = []
    for setting in sorted({key[:3] for key in by}):
        lp, gd = by.get((*setting, "linf")), by.get((*setting, "gd"))
        if lp and gd:
            compared.append((setting, min(lp["psnr"], EXACT_DB), min(gd["psnr"], EXACT_DB)))
    if not compared:
        if rows and not any(r["method"] == "gd" for r in rows):
            return (f"Gradient descent: {not_run()}, so the l_inf LP has nothing to be "
                    f"compared with here (the paper sets the two side by side).")
        return "No l_inf and gradient-descent rows on the same setting yet."
    better = [c for c in compared if c[1] >= c[2] + 1.0]
    worse = [c for c in compared if c[1] <= c[2] - 1.0]
    cells = "; ".join(f"{t} ({g}, z* {s}): LP {shown(lp)} dB, GD {shown(gd)} dB"
                      for (g, t, s), lp, gd in compared)
    n_min = min(s["n"] for s in table)
    if not worse:
        word = "exceed" if len(better) > len(compared) / 2 else "match"
    else:
        word = "fall short of" if len(worse) > len(compared) / 2 else "partly match"
    reasons = []
    if better:
        text = "the LP is ahead on " + ", ".join(sorted({c[0][1] for c in better}))
        exact = [c for c in better if c[1] >= EXACT_DB]
        if exact:
            text += (f" (an exact fit of G(z*), median PSNR >= {EXACT_DB:.0f} dB, on "
                     f"{len(exact)} of {len(better)} of those settings)")
        reasons.append(text)
    if worse:
        reasons.append("behind on " + "; ".join(
            _behind(rows, setting) for setting in sorted({c[0] for c in worse})))
    caveat = f" ({n_min} instances per setting: indicative only)" if n_min < 20 else ""
    return (f"We {word} the paper's qualitative MNIST figures by median PSNR against G(z*): "
            f"{cells}; {'; '.join(reasons) or 'within 1 dB everywhere'}{caveat}."
            + _pattern_against_gd(rows))


def _pattern_against_gd(rows: list[dict[str, Any]]) -> str:
    """A sentence on the pattern method against gradient descent with the same prior, paired
    by instance (empty if no such pairs): median PSNRs and how often pattern's objective is
    no higher than gradient descent's."""
    def key(row: dict[str, Any]) -> tuple:
        return (row["generator"], row["task"], row["source"], float(row["noise_variance"]),
                float(row.get("prior") or 0.0), int(row["instance"]))

    gd = {key(r): r for r in rows if r["method"] == "gd"}
    pairs: dict[tuple, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for row in _sorted(rows):
        if row["method"] == "pattern" and key(row) in gd:
            pairs.setdefault(key(row)[:5], []).append((row, gd[key(row)]))
    if not pairs:
        return ""
    cells = []
    for (generator, task, source, variance, prior), members in pairs.items():
        no_higher = sum(1 for mine, theirs in members
                        if mine.get("objective") is not None
                        and theirs.get("objective") is not None
                        and mine["objective"] <= theirs["objective"])
        psnr_pattern = min(float(np.median([m["psnr"] for m, _ in members])), EXACT_DB)
        psnr_gd = min(float(np.median([t["psnr"] for _, t in members])), EXACT_DB)
        prior_text = "no prior" if not prior else (
            "MAP prior" if prior == prior_for(variance) else f"prior {prior:.2g}")
        cells.append(f"{task} ({generator}, z* {source}, {prior_text}): pattern "
                     f"{shown(psnr_pattern)} dB, GD {shown(psnr_gd)} dB, pattern's objective "
                     f"no higher on {no_higher} of {len(members)}")
    return (" The pattern method against gradient descent on the same loss and prior "
            "(median PSNR against G(z*), paired instances): " + "; ".join(cells) + ".")


def shown(value: float) -> str:
    """A median PSNR for a verdict, capped at EXACT_DB."""
    return f">= {EXACT_DB:.0f} (exact)" if value >= EXACT_DB else f"{value:.1f}"


def _behind(rows: list[dict[str, Any]], setting: tuple[str, str, str]) -> str:
    """What the rows say about a setting where the l_inf LP is behind: its noise variance
    and how often the LP's own status said the answer was not unique or not optimal."""
    generator, task, source = setting
    mine = [r for r in rows if (r["generator"], r["task"], r["source"]) == setting
            and r["method"] == "linf"]
    variances = sorted({float(r["noise_variance"]) for r in mine})
    noise = ("no noise" if variances == [0.0] else
             "noise variance " + "/".join(f"{v:g}" for v in variances) + " per pixel")
    flagged = sum(1 for r in mine if r.get("status") != "optimal")
    return (f"{task} ({generator}, z* {source}; {noise}; the l_inf LP's status is not "
            f"'optimal' on {flagged} of {len(mine)} instances)")
