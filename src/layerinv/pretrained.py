"""The MNIST generators, encoders and held-out digits shipped inside layerinv (no download).

- `mnist_generator(kind)`: the decoder of a VAE trained on 9,000 real MNIST digits, as a
  `Network`: 'relu' is 20 x 60 x 784, ReLU, no bias, ReLU on the output (Lei et al. 2019's
  network); 'leaky_relu' is 20 x 200 x 500 x 784, LeakyReLU(0.2), no bias; 'conv' is
  convolutional, with biases: 20 -> 1568 (dense, ReLU; a 32 x 7 x 7 image) -> 3136 (a
  transposed 4 x 4 stride-2 convolution to 16 x 14 x 14, ReLU) -> 784 (another, to
  1 x 28 x 28, ReLU), its BatchNorms folded; piecewise linear like the other two, but its
  last layer narrows (3136 -> 784): not invertible one layer at a time, the methods that
  solve the whole network (linf's joint solve, 'pattern', 'exact') invert it.
- `mnist_encoder(kind)`: that VAE's encoder, an `Encoder` (numpy only): `encoder(x)` maps
  images (B, 784) or (784,) in [0, 1] to the posterior mean (B, 20): the amortised baseline.
- `mnist_digits()`: 200 real digits that no shipped VAE saw in training.
- `mnist_metadata(kind)`: how the VAE was trained (epochs, loss, seed, data, quality).

The files live in `layerinv/data/` and are read with importlib.resources, so they work from an
installed wheel; `directory=` reads the same files written elsewhere by `layerinv train-mnist`.
Provenance and licence of the digits: `layerinv/data/README.md`. None of this needs PyTorch.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from layerinv._validation import check_batch
from layerinv.datasets import IMAGE_SIZE, Digits
from layerinv.errors import InputError, NetworkFileError
from layerinv.network import Network

KINDS = ("relu", "leaky_relu", "conv")
"""The shipped generators."""
PAPER_KINDS = ("relu", "leaky_relu")
"""The two with the paper's decoders: what the reproduction's MNIST experiment runs."""
LATENT_DIM = 20
HELDOUT_FILE = "mnist_heldout_digits.npz"


@dataclass(frozen=True)
class Encoder:
    """A VAE encoder: an MLP whose last layer (identity) gives [mean, log-variance]."""

    network: Network
    latent_dim: int = LATENT_DIM

    def __post_init__(self) -> None:
        if self.network.output_dim != 2 * self.latent_dim:
            raise InputError(f"an encoder network must output 2 * latent_dim = "
                             f"{2 * self.latent_dim} numbers; got {self.network.output_dim}")

    @property
    def input_dim(self) -> int:
        return self.network.input_dim

    def encode(self, x: object) -> tuple[np.ndarray, np.ndarray]:
        """(mean, log-variance) of q(z | x) for images (B, 784) or (784,)."""
        batch, single = check_batch(x, self.input_dim, "x")
        out = self.network.forward(batch)
        mean, logvar = out[:, :self.latent_dim], out[:, self.latent_dim:]
        return (mean[0], logvar[0]) if single else (mean, logvar)

    def __call__(self, x: object) -> np.ndarray:
        """The posterior mean: z = encoder mean, the amortised inversion."""
        return self.encode(x)[0]


def mnist_generator(kind: str = "relu", *, directory: str | os.PathLike[str] | None = None
                    ) -> Network:
    """The decoder of the shipped MNIST VAE ('relu', 'leaky_relu' or 'conv') as a Network."""
    return _load_network(f"mnist_{_check_kind(kind)}_decoder.npz", directory)


def mnist_encoder(kind: str = "relu", *, directory: str | os.PathLike[str] | None = None
                  ) -> Encoder:
    """The encoder of the same VAE: callable on images (B, 784) -> posterior means (B, 20)."""
    return Encoder(_load_network(f"mnist_{_check_kind(kind)}_encoder.npz", directory))


def mnist_digits(*, directory: str | os.PathLike[str] | None = None) -> Digits:
    """200 held-out real MNIST digits: images (200, 784) in [0, 1] and labels (200,)."""
    with _DataFile(HELDOUT_FILE, directory) as path, np.load(path, allow_pickle=False) as data:
        images = data["images"].reshape(-1, IMAGE_SIZE).astype(np.float64) / 255.0
        labels = data["labels"].astype(np.int64)
    return Digits(images, labels)


def mnist_metadata(kind: str = "relu", *, directory: str | os.PathLike[str] | None = None
                   ) -> dict[str, Any]:
    """The training record of a shipped VAE (the JSON written by `layerinv train-mnist`)."""
    with _DataFile(f"mnist_{_check_kind(kind)}.json", directory) as path:
        return json.loads(Path(path).read_text())


def _load_network(name: str, directory: str | os.PathLike[str] | None) -> Network:
    with _DataFile(name, directory) as path:
        return Network.load(path)


class _DataFile:
    """Context manager: a real file path for a data file, shipped or in `directory`."""

    def __init__(self, name: str, directory: str | os.PathLike[str] | None):
        self.name, self.directory = name, directory
        self.stack = ExitStack()

    def __enter__(self) -> Path:
        if self.directory is not None:
            path = Path(self.directory) / self.name
        else:
            resource = resources.files("layerinv").joinpath("data", self.name)
            path = self.stack.enter_context(resources.as_file(resource))
        if not Path(path).is_file():
            where = (repr(str(self.directory)) if self.directory is not None
                     else "the installed package (layerinv/data)")
            raise NetworkFileError(f"{self.name} is missing from {where}; reinstall layerinv, "
                                   f"or write it with `layerinv train-mnist --out DIR`")
        return Path(path)

    def __exit__(self, *exc: object) -> None:
        self.stack.close()


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
    return kind
