"""Fully connected generative networks: forward pass, random nets, save and load, PyTorch.

`Layer` (one layer) lives in `layers.py`; it is importable from here too.
"""

from __future__ import annotations

import itertools
import os
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from layerinv._validation import check_batch, make_rng
from layerinv.activations import Activation, get_activation
from layerinv.errors import InputError, NetworkFileError
from layerinv.layers import Layer, check_chain

if TYPE_CHECKING:
    import torch

FILE_FORMAT = "layerinv-network"
FILE_VERSION = 2
"""Version 2 stores each activation as its full name with parameters (`activation_i`, e.g.
'leaky_relu(0.2)', 'elu(1.0)'); version 1 stored the bare name and `slope_i`, still read."""


class Network:
    """An ordered list of layers: G(z) = x_d with x_0 = z, x_i = act_i(W_i x_{i-1} + b_i).

    Each W_i is a linear operator (`layers.Layer.operator`; dense unless built otherwise).
    """

    def __init__(self, layers: Sequence[Layer]):
        layers = check_chain(layers)
        self.layers: list[Layer] = layers

    @property
    def input_dim(self) -> int:
        return self.layers[0].n_in

    @property
    def output_dim(self) -> int:
        return self.layers[-1].n_out

    @property
    def widths(self) -> list[int]:
        """[k, n_1, ..., n_d]."""
        return [self.input_dim] + [layer.n_out for layer in self.layers]

    def __len__(self) -> int:
        return len(self.layers)

    def __repr__(self) -> str:
        acts = ", ".join(repr(layer.activation) for layer in self.layers)
        return f"Network(widths={self.widths}, activations=[{acts}])"

    def forward(self, z: object, *, return_hidden: bool = False) -> Any:
        """G(z) for z of shape (k,) or (B, k); with return_hidden, also [x_0, ..., x_d]."""
        batch, single = check_batch(z, self.input_dim, "z")
        hidden = [batch]
        for layer in self.layers:
            hidden.append(layer(hidden[-1]))
        if single:
            hidden = [h[0] for h in hidden]
        return (hidden[-1], hidden) if return_hidden else hidden[-1]

    __call__ = forward

    # ----------------------------------------------------------------- files
    def save(self, path: str | os.PathLike[str] | BinaryIO) -> None:
        """Write the network to an .npz file (no pickles), or to an open binary file.

        Entries: format, version, n_layers, and per layer weight_i, bias_i (if any) and
        activation_i, the activation's name with its parameters (`repr`, e.g. 'elu(1.0)').
        """
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FILE_FORMAT),
            "version": np.array(FILE_VERSION),
            "n_layers": np.array(len(self.layers)),
        }
        for i, layer in enumerate(self.layers):
            arrays[f"weight_{i}"] = layer.operator.to_dense()  # an export: the file is dense
            if layer.bias is not None:
                arrays[f"bias_{i}"] = layer.bias
            arrays[f"activation_{i}"] = np.array(repr(layer.activation))
        if hasattr(path, "write"):
            np.savez(path, **arrays)
            return
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Network:
        """Read a network written by `save`; anything else is a NetworkFileError."""
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise NetworkFileError(
                    f"network file {str(path)!r} is a .npy array, not a layerinv .npz network "
                    f"(written by Network.save or `layerinv random-network`)")
            with data:
                return cls._from_arrays({key: data[key] for key in data.files}, str(path))
        except FileNotFoundError:
            raise NetworkFileError(f"network file {str(path)!r} does not exist") from None
        except IsADirectoryError:
            raise NetworkFileError(f"network file {str(path)!r} is a folder") from None
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
            if isinstance(exc, NetworkFileError):
                raise
            raise NetworkFileError(
                f"network file {str(path)!r} is not a readable layerinv .npz network "
                f"(corrupt, truncated or another format): {type(exc).__name__}: {exc}"
            ) from None

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], source: str) -> Network:
        if arrays.get("format") is None or str(arrays["format"]) != FILE_FORMAT:
            raise NetworkFileError(f"{source!r} is not a layerinv network: its 'format' entry is "
                                   f"missing or not {FILE_FORMAT!r}")
        if int(arrays["version"]) > FILE_VERSION:
            raise NetworkFileError(f"{source!r} was written by a newer layerinv (file version "
                                   f"{int(arrays['version'])}; this one reads {FILE_VERSION})")
        layers = []
        for i in range(int(arrays["n_layers"])):
            try:
                # Version 1 files name the activation bare and store its slope beside it.
                slope = arrays.get(f"slope_{i}")
                activation = get_activation(str(arrays[f"activation_{i}"]),
                                            None if slope is None else float(slope))
                layers.append(Layer(arrays[f"weight_{i}"], arrays.get(f"bias_{i}"), activation))
            except InputError as exc:
                raise NetworkFileError(f"{source!r}: layer {i} is invalid: {exc}") from None
            except KeyError as exc:
                raise NetworkFileError(f"{source!r}: layer {i} lacks the entry {exc}") from None
        try:
            return cls(layers)
        except InputError as exc:
            raise NetworkFileError(f"{source!r}: {exc}") from None

    # ----------------------------------------------------------------- PyTorch
    @classmethod
    def from_torch(cls, module: torch.nn.Module) -> Network:
        """From an nn.Sequential of Linear and activation modules (see `_torch_io`)."""
        from layerinv._torch_io import layers_from_module

        return cls(layers_from_module(module))

    @classmethod
    def from_state_dict(cls, state: str | os.PathLike[str] | dict[str, Any], *,
                        layers: Sequence[str], activations: Sequence[str | Activation]) -> Network:
        """From a checkpoint whose decoder weights are named entries such as 'fc3.weight'."""
        from layerinv._torch_io import layers_from_state_dict

        return cls(layers_from_state_dict(state, layers=layers, activations=activations))

    def to_torch(self) -> torch.nn.Sequential:
        """An equivalent nn.Sequential (float32, CPU)."""
        from layerinv._torch_io import module_from_layers

        return module_from_layers(self.layers)


def random_network(widths: Sequence[int], activation: str | Activation = "relu", *,
                   output_activation: str | Activation | None = None, bias: bool = False,
                   seed: int | np.random.Generator | None = None) -> Network:
    """A random expansive network with i.i.d. N(0, 1/n_out) weights, as in the paper.

    widths = [k, n_1, ..., n_d]. With bias=True the biases are drawn N(0, 1/n_out) too.
    `output_activation` (default: `activation`) sets the last layer's activation.
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2 or min(widths) < 1:
        raise InputError(f"widths must list at least two positive sizes [k, n_1, ...]; "
                         f"got {widths}")
    rng = make_rng(seed)
    hidden_act = get_activation(activation)
    last_act = hidden_act if output_activation is None else get_activation(output_activation)
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        scale = 1.0 / np.sqrt(n_out)
        weight = rng.normal(0.0, scale, size=(n_out, n_in))
        b = rng.normal(0.0, scale, size=n_out) if bias else None
        layers.append(Layer(weight, b, last_act if i == len(widths) - 2 else hidden_act))
    return Network(layers)
