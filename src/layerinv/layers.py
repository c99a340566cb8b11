"""One layer of a generative network: x_out = act(W x_in + b)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from layerinv._validation import as_float_array, check_finite
from layerinv.activations import Activation, get_activation
from layerinv.errors import InputError


@dataclass(frozen=True, eq=False)
class Layer:
    """One dense layer x_out = act(weight @ x_in + bias); weight has shape (n_out, n_in)."""

    weight: np.ndarray
    bias: np.ndarray | None
    activation: Activation

    def __post_init__(self) -> None:
        weight = as_float_array(self.weight, "weight")
        if weight.ndim != 2 or 0 in weight.shape:
            raise InputError(f"weight must be a non-empty 2-D array (n_out, n_in); "
                             f"got shape {weight.shape}")
        check_finite(weight, "weight")
        object.__setattr__(self, "weight", np.ascontiguousarray(weight))
        if self.bias is not None:
            bias = as_float_array(self.bias, "bias")
            if bias.shape != (weight.shape[0],):
                raise InputError(f"bias must have shape ({weight.shape[0]},) to match weight "
                                 f"{weight.shape}; got shape {bias.shape}")
            check_finite(bias, "bias")
            object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "activation", get_activation(self.activation))

    @property
    def n_in(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])

    def preactivation(self, x: np.ndarray) -> np.ndarray:
        """W x + b for a batch x of shape (B, n_in)."""
        u = x @ self.weight.T
        return u if self.bias is None else u + self.bias

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.activation.forward(self.preactivation(x))


def check_chain(layers: Sequence[Layer]) -> list[Layer]:
    """The layers as a list, checked: at least one, all Layers, each fed by the one before."""
    layers = list(layers)
    if not layers:
        raise InputError("layers must hold at least one Layer; got an empty list")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise InputError(f"layers[{i}] must be a layerinv.Layer; got "
                             f"{type(layer).__name__}")
    for i in range(1, len(layers)):
        if layers[i].n_in != layers[i - 1].n_out:
            raise InputError(
                f"layers[{i}] takes {layers[i].n_in} inputs but layers[{i - 1}] gives "
                f"{layers[i - 1].n_out} outputs"
            )
    return layers
