"""Train the MNIST VAEs whose decoders layerinv ships (needs PyTorch).

Three variational autoencoders (Kingma and Welling, 2014) with a 20-dimensional latent, two
with the decoders of Lei, Jalal, Dhillon and Dimakis (NeurIPS 2019, section 5) (PAPER_KINDS)
and one convolutional:

- 'relu': decoder 20 x 60 x 784, ReLU, no bias, ReLU also on the output (the paper's network);
- 'leaky_relu': decoder 20 x 200 x 500 x 784, LeakyReLU (slope 0.2) on every layer, no bias;
- 'conv': Linear(20, 32*7*7) -> Unflatten(32, 7, 7) -> BatchNorm2d -> ReLU ->
  ConvTranspose2d(32, 16, 4, stride 2, padding 1) -> BatchNorm2d -> ReLU ->
  ConvTranspose2d(16, 1, 4, 2, 1) -> Flatten -> ReLU, with biases (CONV_MODULES). Exported
  (BatchNorm folded with its running statistics) it is three layers, 20 -> 1568 (dense) ->
  3136 (16 x 14 x 14) -> 784 (1 x 28 x 28), the last two `Conv2dOperator`s.

Why this 'conv' decoder (issue 14): a DCGAN-style generator small enough to ship (41,489
weights) and to train in minutes on one thread, whose every activation is piecewise linear. Its
output is a ReLU, as the paper's 'relu' decoder has, not a sigmoid: the whole network is then
piecewise linear, so the exact MILP (`layerinv.exact`), the pattern method's joint solve and
method='auto' all apply to it as they do to the dense ones. BatchNorm trains in training mode
(batch statistics) and is folded at export (`decoder.eval()` before `Network.from_torch`). Its
layers are not all expansive (3136 -> 784 in the last): a layer-wise LP's pre-image of that
layer is not unique, and the l_inf/l_1 methods need the joint solve of the whole network
(`invert(..., joint=True)`, the default); it is the shipped test case for that.

All share one encoder architecture, 784 x 256 (ReLU, with bias) x 40 (identity, with bias),
whose 40 outputs are [mean (20), log-variance (20)] of the Gaussian posterior q(z | x).

The loss per digit is the negative ELBO of a Gaussian decoder with fixed variance 1/2,
sum_j (x_j - G(z)_j)^2 + beta * KL(q(z|x) || N(0, I)), beta = 1, with one reparameterised
sample of z per digit, averaged over the batch; Adam. Seeding: `torch.manual_seed(seed)` before
the weights are initialised, and a torch.Generator seeded with `seed` for the batch order and the
reparameterisation noise; the train/held-out split is `numpy.random.default_rng(seed)`. The
same seed and data give the same weights on the same machine and thread count (float32 sums
can differ in their last bits with another BLAS or thread count).

The trained weights are float32; they are written with `Network.save` and then re-packed with
float32 arrays in a compressed archive (`save_compact`): `Network.load` reads it back exactly
(float32 to float64 is exact), at a quarter of the size. Arrays that float32 does not hold
exactly stay float64: the conv decoder's first two layers, whose BatchNorm is folded in
float64.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from layerinv._version import __version__
from layerinv.datasets import IMAGE_SIZE, load_mnist
from layerinv.errors import InputError
from layerinv.network import Network
from layerinv.pretrained import KINDS, PAPER_KINDS

LATENT_DIM = 20
ENCODER_HIDDEN = 256
LEAKY_SLOPE = 0.2
DECODER_WIDTHS = {"relu": (LATENT_DIM, 60, IMAGE_SIZE),
                  "leaky_relu": (LATENT_DIM, 200, 500, IMAGE_SIZE)}
"""The dense decoders' widths (no bias); 'conv' is CONV_CHANNELS on a CONV_SIDE grid."""
CONV_CHANNELS = (32, 16)
"""The conv decoder's channels on its 7 x 7 and 14 x 14 grids (then 1 on 28 x 28)."""
CONV_SIDE = 7
DEFAULT_EPOCHS = {"relu": 100, "leaky_relu": 100, "conv": 100}
DEFAULT_BATCH_SIZE = 250
DEFAULT_LR = 2e-3
DEFAULT_BETA = 1.0
HELDOUT_FILE = "mnist_heldout_digits.npz"


def decoder_file(kind: str) -> str:
    return f"mnist_{kind}_decoder.npz"


def encoder_file(kind: str) -> str:
    return f"mnist_{kind}_encoder.npz"


def metadata_file(kind: str) -> str:
    return f"mnist_{kind}.json"


# ------------------------------------------------------------------------------ models
def build_decoder(kind: str) -> nn.Sequential:
    """The decoder of a kind: the paper's (Linear layers without bias, each followed by its
    activation) or the convolutional one (`build_conv_decoder`)."""
    if _check_kind(kind) == "conv":
        return build_conv_decoder()
    widths = DECODER_WIDTHS[kind]
    modules: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(widths):
        modules.append(nn.Linear(n_in, n_out, bias=False))
        modules.append(nn.ReLU() if kind == "relu" else nn.LeakyReLU(LEAKY_SLOPE))
    return nn.Sequential(*modules)


def build_conv_decoder(channels: Sequence[int] = CONV_CHANNELS, side: int = CONV_SIDE
                       ) -> nn.Sequential:
    """Linear to channels[0] x side x side, then per further channel count a stride-2
    ConvTranspose2d (4 x 4, padding 1: the side doubles) to it and to one channel last; a
    BatchNorm2d and a ReLU after each but the last, and a ReLU on the flat output."""
    first, *rest = channels
    modules: list[nn.Module] = [nn.Linear(LATENT_DIM, first * side * side),
                                nn.Unflatten(1, (first, side, side))]
    for n_in, n_out in itertools.pairwise([first, *rest, 1]):
        modules += [nn.BatchNorm2d(n_in), nn.ReLU(), nn.ConvTranspose2d(n_in, n_out, 4, 2, 1)]
    modules += [nn.Flatten(), nn.ReLU()]
    return nn.Sequential(*modules)


def build_encoder(hidden: int = ENCODER_HIDDEN, latent: int = LATENT_DIM) -> nn.Sequential:
    """784 x hidden (ReLU) x 2*latent (identity): outputs [mean, log-variance]."""
    return nn.Sequential(nn.Linear(IMAGE_SIZE, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))


@dataclass
class TrainedVAE:
    """A trained VAE: its decoder and encoder as layerinv Networks, and how it was trained."""

    kind: str
    decoder: Network
    encoder: Network
    history: list[dict[str, float]]
    """Per epoch: mean reconstruction term, mean KL term, mean loss, seconds so far."""
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def train_vae(images: np.ndarray, kind: str = "relu", *, epochs: int | None = None,
              batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
              beta: float = DEFAULT_BETA, seed: int = 0,
              progress: bool | None = None) -> TrainedVAE:
    """Train one VAE on images (N, 784) in [0, 1]; see the module docstring for the loss."""
    kind = _check_kind(kind)
    epochs = DEFAULT_EPOCHS[kind] if epochs is None else int(epochs)
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch_size must be >= 1; got {epochs}, {batch_size}")
    data = np.asarray(images, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] != IMAGE_SIZE or len(data) == 0:
        raise InputError(f"images must have shape (N, {IMAGE_SIZE}); got {data.shape}")
    torch.manual_seed(seed)
    encoder, decoder = build_encoder(), build_decoder(kind)
    generator = torch.Generator().manual_seed(seed)
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    x_all = torch.from_numpy(data)
    n = len(x_all)
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    bar = tqdm(range(epochs), desc=f"train VAE ({kind})", unit="epoch",
               disable=progress is False, delay=0.0 if progress else 2.0)
    for epoch in bar:
        order = torch.randperm(n, generator=generator)
        totals = np.zeros(2)
        for start in range(0, n, batch_size):
            x = x_all[order[start:start + batch_size]]
            mean, logvar = encoder(x).chunk(2, dim=1)
            noise = torch.randn(mean.shape, generator=generator)
            z = mean + noise * torch.exp(0.5 * logvar)
            recon = (decoder(z) - x).square().sum(1).mean()
            kl = (-0.5 * (1.0 + logvar - mean.square() - logvar.exp())).sum(1).mean()
            loss = recon + beta * kl
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            totals += np.array([recon.item(), kl.item()]) * len(x)
        recon_mean, kl_mean = totals / n
        history.append({"epoch": epoch + 1, "reconstruction": float(recon_mean),
                        "kl": float(kl_mean), "loss": float(recon_mean + beta * kl_mean),
                        "seconds": time.perf_counter() - started})
        bar.set_postfix(loss=f"{recon_mean + beta * kl_mean:.2f}", kl=f"{kl_mean:.2f}")
    bar.close()
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "beta": beta, "seed": seed,
              "optimizer": "Adam (betas 0.9, 0.999)", "training_digits": n}
    seconds = time.perf_counter() - started
    # Eval mode: BatchNorm folds with its running statistics (from_torch refuses training mode).
    decoder.eval()
    encoder.eval()
    return TrainedVAE(kind, Network.from_torch(decoder), Network.from_torch(encoder),
                      history, config, seconds)


def split_heldout(n: int, heldout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of a seeded permutation; held-out come first in it."""
    if not 0 < heldout < n:
        raise InputError(f"heldout must be between 1 and {n - 1} (the data hold {n} digits); "
                         f"got {heldout}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[heldout:]), order[:heldout]


# ------------------------------------------------------------------------------ files
def save_compact(net: Network, path: str | os.PathLike[str]) -> None:
    """`Network.save`, re-packed compressed with float32 arrays where that loses nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "net.npz"
        net.save(plain)
        with np.load(plain, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    for key, value in arrays.items():
        if value.dtype == np.float64 and value.ndim > 0:
            small = value.astype(np.float32)
            if np.array_equal(small.astype(np.float64), value):
                arrays[key] = small
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    Path(path).write_bytes(buffer.getvalue())
    back = Network.load(path)
    for a, b in zip(back.layers, net.layers, strict=True):
        # The file's contents against the network's: an export, compared dense.
        assert np.array_equal(a.operator.to_dense(), b.operator.to_dense()), \
            "compact save changed the weights"


def reconstruction_error(decoder: Network, encoder: Network, images: np.ndarray) -> dict:
    """Held-out reconstruction through encoder mean then decoder: MSE and PSNR (peak 1)."""
    mean = encoder.forward(images)[:, :decoder.input_dim]
    recon = decoder.forward(mean)
    mse = np.mean((recon - images) ** 2, axis=1)
    return {"mse_mean": float(mse.mean()), "mse_median": float(np.median(mse)),
            "psnr_median": float(np.median(10 * np.log10(1.0 / np.maximum(mse, 1e-300)))),
            "digits": len(images)}


def train_mnist(data: str | os.PathLike[str], out: str | os.PathLike[str], *,
                kinds: Sequence[str] = PAPER_KINDS, heldout: int = 1000, ship: int = 200,
                limit: int | None = None, epochs: int | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
                beta: float = DEFAULT_BETA, seed: int = 0,
                progress: bool | None = None) -> dict[str, Any]:
    """Train the VAEs on a digits file and write what `layerinv.pretrained` reads to `out`.

    The first `limit` digits of the file are used (all if None); `heldout` of them, chosen by a
    seeded permutation, are kept out of training, and the first `ship` held-out digits are
    written as uint8 to HELDOUT_FILE with their labels and indices in the file. For each kind:
    the decoder and encoder (.npz, `save_compact`) and a JSON of the training metadata.
    Returns a summary: the paths written and, per kind, the held-out reconstruction error.
    """
    kinds = [_check_kind(k) for k in kinds]
    digits = load_mnist(data)
    images, labels = digits.images, digits.labels
    if limit is not None:
        if limit < 2:
            raise InputError(f"limit must be >= 2; got {limit}")
        images = images[:limit]
        labels = None if labels is None else labels[:limit]
    train_idx, heldout_idx = split_heldout(len(images), heldout, seed)
    if not 0 <= ship <= heldout:
        raise InputError(f"ship must be between 0 and heldout ({heldout}); got {ship}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = {"file": Path(data).name, "sha256": _sha256(data), "digits_used": len(images),
              "training_digits": len(train_idx), "heldout_digits": len(heldout_idx),
              "split_seed": seed}
    written: list[str] = []
    shipped = heldout_idx[:ship]
    grey = np.round(images[shipped] * 255).astype(np.uint8).reshape(-1, 28, 28)
    held_path = out / HELDOUT_FILE
    np.savez_compressed(held_path, images=grey,
                        labels=(np.full(ship, -1) if labels is None
                                else labels[shipped]).astype(np.int16),
                        indices=shipped.astype(np.int32))
    written.append(str(held_path))
    summary: dict[str, Any] = {"files": written, "quality": {}}
    for kind in kinds:
        result = train_vae(images[train_idx], kind, epochs=epochs, batch_size=batch_size,
                           lr=lr, beta=beta, seed=seed, progress=progress)
        quality = reconstruction_error(result.decoder, result.encoder, images[heldout_idx])
        paths = [out / decoder_file(kind), out / encoder_file(kind), out / metadata_file(kind)]
        save_compact(result.decoder, paths[0])
        save_compact(result.encoder, paths[1])
        meta = {
            "kind": kind,
            **decoder_architecture(kind, result.decoder),
            "encoder_widths": list(result.encoder.widths),
            "encoder_output": "[mean (20), log-variance (20)]",
            "loss": "sum of squared errors + beta * KL(q(z|x) || N(0, I)), batch mean",
            **result.config,
            "final": result.history[-1],
            "history": result.history,
            "train_seconds": result.seconds,
            "heldout_reconstruction": quality,
            "data": source,
            "versions": {"layerinv": __version__, "torch": torch.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "torch_threads": torch.get_num_threads(),
        }
        paths[2].write_text(json.dumps(meta, indent=1) + "\n")
        written.extend(str(p) for p in paths)
        summary["quality"][kind] = quality
    return summary


def decoder_architecture(kind: str, decoder: Network) -> dict[str, Any]:
    """The decoder's entries of a kind's metadata JSON: widths, activations and bias; for
    'conv' also the PyTorch modules it was trained as and the exported layers' operators."""
    entries: dict[str, Any] = {
        "decoder_widths": list(decoder.widths),
        "decoder_activations": [repr(layer.activation) for layer in decoder.layers],
        "decoder_bias": any(layer.bias is not None for layer in decoder.layers),
    }
    if kind == "conv":
        entries["decoder_modules"] = [repr(module) for module in build_decoder(kind)]
        entries["decoder_layers"] = [repr(layer.operator) for layer in decoder.layers]
        entries["batch_norm"] = ("trained in training mode (batch statistics), folded into "
                                 "the layers before it with its running statistics")
    return entries


def _sha256(path: str | os.PathLike[str]) -> str:
    target = Path(path)
    if target.is_dir():
        return ""
    return hashlib.sha256(target.read_bytes()).hexdigest()


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    return kind
