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
10 restarts, seed 0), 'lp+gd' (the l_inf LP per instance, then `gradient.refine`'s steps from
its answer), and 'encoder' (the amortised baseline: z = the encoder's mean of the
observation, hidden pixels set to 0). The gradient methods run every instance of a call in
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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from layerinv._walk import Inversion, invert
from layerinv.datasets import IMAGE_SIDE, IMAGE_SIZE
from layerinv.errors import InputError
from layerinv.network import Layer, Network
from layerinv.pretrained import Encoder, mnist_digits, mnist_encoder, mnist_generator
from layerinv.results import GRADIENT_METHODS

METHODS = ("linf", "l1", "gd", "lp+gd", "encoder")
SOURCES = ("gaussian", "digit")
MASKS = ("random", "block")
NOISE_VARIANCE = 0.3
KEEP = 0.9
BLOCK = 10
BLOCK_MARGIN = 4
FIGURE_COLUMNS = 8
FIGURE_METHODS = ("linf", "gd")
METHOD_LABELS = {"linf": "$\\ell_\\infty$ LP", "l1": "$\\ell_1$ LP", "gd": "gradient descent",
                 "lp+gd": "LP + GD", "encoder": "encoder"}


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
    return Network([*net.layers[:-1], Layer(last.weight[keep], bias, last.activation)])


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
def invert_method(net: Network, x: np.ndarray, method: str) -> Inversion:
    """`layerinv.invert(net, x, method)`; the gradient methods with the bora2017 preset."""
    if method in ("gd", "lp+gd"):
        return invert(net, x, method, progress=False, preset="bora2017")
    return invert(net, x, method, progress=False)


def _estimate(method: str, net: Network, masked: Network, encoder: Encoder | None,
              instance: Instance) -> tuple[np.ndarray, str, float]:
    """(z_hat, status, seconds) of one method on one instance."""
    x = instance.observation[instance.keep]
    started = time.perf_counter()
    if method == "encoder":
        if encoder is None:
            raise InputError("method 'encoder' needs an encoder")
        filled = np.where(instance.keep, instance.observation, 0.0)
        z = encoder(filled)
        return z, "encoder", time.perf_counter() - started
    result = invert_method(masked, x, method)
    seconds = time.perf_counter() - started
    return np.asarray(result.z, dtype=np.float64), str(result.status), seconds


def psnr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """10 log10(1 / MSE) (peak 1, pixels in [0, 1]); inf for a perfect match."""
    mse = float(np.mean((np.asarray(estimate) - np.asarray(reference)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)




def _estimate_gradient(method: str, net: Network, instances: Sequence[Instance]
                       ) -> list[tuple[np.ndarray, str, float]]:
    """(z_hat, status, seconds) per instance of a gradient method, all instances in one
    tensor; seconds = the gradient stage's wall time / n (+ the instance's LP time)."""
    from layerinv._gradient import gradient_descent, refine

    observed = np.stack([instance.keep for instance in instances])
    x = np.where(observed, np.stack([instance.observation for instance in instances]), 0.0)
    mask = None if observed.all() else observed
    lp_seconds = [0.0] * len(instances)
    options: dict[str, Any] = {"observed": mask, "preset": "bora2017", "seed": 0,
                               "progress": False}
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
                  progress: bool | None = None) -> Run:
    """Every method on every instance: the rows (one per pair) and the images G(z_hat)."""
    methods = list(methods)
    for method in methods:
        if method not in METHODS:
            raise InputError(f"methods must be drawn from {METHODS}; got {method!r}")
    rows: list[dict[str, Any]] = []
    estimates = {m: np.zeros((len(instances), IMAGE_SIZE)) for m in methods}
    bar = tqdm(total=len(instances) * len(methods), desc=f"{describe['task']} ({net.widths})",
               unit="solve", disable=progress is False, delay=0.0 if progress else 2.0)
    with bar:
        batched = {}
        for method in methods:
            if method in GRADIENT_METHODS:
                batched[method] = _estimate_gradient(method, net, instances)
                bar.update(len(instances))
        for position, instance in enumerate(instances):
            masked = masked_network(net, instance.keep)
            for method in methods:
                if method in batched:
                    z_hat, status, seconds = batched[method][position]
                else:
                    z_hat, status, seconds = _estimate(method, net, masked, encoder, instance)
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
                progress: bool | None = None) -> Run:
    """`denoise`, keeping the images (for figures)."""
    net, encoder, digits, labels = _setup(kind, generator, encoder, source)
    instances = make_instances(net, encoder, n, source=source, variance=variance, seed=seed,
                               digits=digits, labels=labels)
    describe = {"task": "denoise", "generator": kind if generator is None else "custom",
                "source": source, "mask": None, "noise_variance": variance}
    return run_instances(net, encoder, instances, methods, describe=describe, seed=seed,
                         progress=progress)


def inpaint_run(kind: str = "relu", *, n: int = 100, mask: str = "random", keep: float = KEEP,
                block: int = BLOCK, variance: float = 0.0, source: str = "gaussian",
                methods: Iterable[str] = METHODS, seed: int = 0,
                generator: Network | None = None, encoder: Encoder | None = None,
                progress: bool | None = None) -> Run:
    """`inpaint`, keeping the images (for figures)."""
    net, encoder, digits, labels = _setup(kind, generator, encoder, source)
    instances = make_instances(net, encoder, n, source=source, variance=variance, mask=mask,
                               keep=keep, block=block, seed=seed, digits=digits, labels=labels)
    describe = {"task": f"inpaint-{mask}", "generator": kind if generator is None else "custom",
                "source": source,
                "mask": f"keep {keep:g}" if mask == "random" else f"block {block}x{block}",
                "noise_variance": variance}
    return run_instances(net, encoder, instances, methods, describe=describe, seed=seed,
                         progress=progress)


def denoise(kind: str = "relu", *, n: int = 100, source: str = "gaussian",
            variance: float = NOISE_VARIANCE, methods: Iterable[str] = METHODS, seed: int = 0,
            generator: Network | None = None, encoder: Encoder | None = None,
            figure: str | Path | None = None, progress: bool | None = None
            ) -> list[dict[str, Any]]:
    """Denoising: x = G(z*) + N(0, variance) per pixel; one row per (instance, method).

    `kind` picks the shipped generator ('relu' or 'leaky_relu'); `generator` (and `encoder`)
    replace it. `figure` saves the paper's grid of the first instances as a PNG.
    """
    run = denoise_run(kind, n=n, source=source, variance=variance, methods=methods, seed=seed,
                      generator=generator, encoder=encoder, progress=progress)
    if figure is not None:
        figure_grid(run, figure, title=_title(run.rows[0]))
    return run.rows


def inpaint(kind: str = "relu", *, n: int = 100, mask: str = "random", keep: float = KEEP,
            block: int = BLOCK, variance: float = 0.0, source: str = "gaussian",
            methods: Iterable[str] = METHODS, seed: int = 0, generator: Network | None = None,
            encoder: Encoder | None = None, figure: str | Path | None = None,
            progress: bool | None = None) -> list[dict[str, Any]]:
    """Inpainting: a random-pixel or block mask, with (variance 0.3) or without noise."""
    run = inpaint_run(kind, n=n, mask=mask, keep=keep, block=block, variance=variance,
                      source=source, methods=methods, seed=seed, generator=generator,
                      encoder=encoder, progress=progress)
    if figure is not None:
        figure_grid(run, figure, title=_title(run.rows[0]))
    return run.rows


# ------------------------------------------------------------------------------ tables
SUMMARY_KEYS = ("generator", "task", "source", "noise_variance", "method")


def summarise(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (generator, task, source, noise, method): n, medians and the recovered share.

    'recovered' is the share of instances with latent relative error < 1e-6.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in SUMMARY_KEYS), []).append(row)
    table = []
    for key, members in groups.items():
        errors = np.array([r["latent_error"] for r in members])
        digit = [r["psnr_digit"] for r in members if r["psnr_digit"] is not None]
        table.append({
            **dict(zip(SUMMARY_KEYS, key, strict=True)),
            "n": len(members),
            "latent_error": float(np.median(errors)),
            "recovered": float(np.mean(errors < 1e-6)),
            "psnr": float(np.median([r["psnr"] for r in members])),
            "psnr_digit": float(np.median(digit)) if digit else None,
            "seconds": float(np.median([r["seconds"] for r in members])),
        })
    return table


def format_summary(summary: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of `summarise`'s output."""
    lines = ["| generator | task | z* | noise var. | method | n | median latent err. | "
             "err. < 1e-6 | median PSNR vs G(z*) (dB) | median PSNR vs digit (dB) | "
             "median s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        digit = "" if s["psnr_digit"] is None else f"{s['psnr_digit']:.1f}"
        lines.append(
            f"| {s['generator']} | {s['task']} | {s['source']} | {s['noise_variance']:g} | "
            f"{s['method']} | {s['n']} | {s['latent_error']:.2e} | {s['recovered']:.2f} | "
            f"{_db(s['psnr'])} | {digit} | {s['seconds']:.4f} |")
    return "\n".join(lines)


def _db(value: float) -> str:
    return "inf" if np.isinf(value) else f"{value:.1f}"


def _title(row: dict[str, Any]) -> str:
    noise = (f"noise variance {row['noise_variance']:g}" if row["noise_variance"]
             else "no noise")
    what = row["task"] if row["mask"] is None else f"{row['task']} ({row['mask']})"
    return f"{what}, {noise}, z* {row['source']}, generator {row['generator']}"


# ------------------------------------------------------------------------------ figures
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _observation_rgb(instance: Instance) -> np.ndarray:
    """The observation clipped to [0, 1] for display, hidden pixels in blue."""
    grey = np.clip(instance.observation, 0.0, 1.0)
    rgb = np.repeat(grey[:, None], 3, axis=1)
    rgb[~instance.keep] = (0.25, 0.45, 0.95)
    return rgb.reshape(IMAGE_SIDE, IMAGE_SIDE, 3)


def figure_grid(run: Run, path: str | Path, *, methods: Sequence[str] = FIGURE_METHODS,
                columns: int = FIGURE_COLUMNS, title: str | None = None) -> Path:
    """The paper's grid: rows Observation / Ground truth / each method; one column each for
    the first `columns` instances. Images are shown clipped to [0, 1]. Writes a PNG."""
    plt = _pyplot()
    methods = [m for m in methods if m in run.estimates]
    shown = run.instances[:columns]
    labels = ["Observation", "Ground truth", *(METHOD_LABELS[m] for m in methods)]
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
    return _save(fig, plt, path)


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
    plt = _pyplot()
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
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


TASKS: dict[str, Callable[..., list[dict[str, Any]]]] = {"denoise": denoise, "inpaint": inpaint}
