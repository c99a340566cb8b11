"""One layer of a generative network: x_out = act(W x_in + b)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from layerinv._validation import as_float_array, check_finite
from layerinv.activations import Activation, get_activation
from layerinv.errors import InputError
from layerinv.operators import LinearOperator, as_operator


class Layer:
    """One layer x_out = act(W x_in + b), W a linear operator (n_out, n_in).

    `weight` may be an array (it becomes a `DenseOperator`) or any `operators.LinearOperator`;
    `operator` is the operator, `weight` its dense matrix (an export: code that solves asks
    the operator for what it needs instead, so that structured operators stay structured).
    Immutable: build a new Layer to change one.
    """

    __slots__ = ("activation", "bias", "n_in", "n_out", "operator")

    def __init__(self, weight: np.ndarray | LinearOperator, bias: np.ndarray | None,
                 activation: str | Activation):
        operator = as_operator(weight, "weight")
        if bias is not None:
            bias = as_float_array(bias, "bias")
            if bias.shape != (operator.n_out,):
                raise InputError(f"bias must have shape ({operator.n_out},) to match weight "
                                 f"{operator.shape}; got shape {bias.shape}")
            check_finite(bias, "bias")
        object.__setattr__(self, "operator", operator)
        object.__setattr__(self, "n_out", operator.n_out)  # the output and input sizes
        object.__setattr__(self, "n_in", operator.n_in)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "activation", get_activation(activation))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Layer is immutable; build a new Layer to change {name!r}")

    def __reduce__(self) -> tuple:
        # Pickled as its constructor call (worker processes receive networks by pickle).
        return (Layer, (self.operator, self.bias, self.activation))

    def __repr__(self) -> str:
        return (f"Layer({self.operator!r}, bias={'yes' if self.bias is not None else 'no'}, "
                f"activation={self.activation!r})")

    @property
    def weight(self) -> np.ndarray:
        """The dense matrix W (n_out, n_in): an export of `operator`."""
        return self.operator.to_dense()


    def preactivation(self, x: np.ndarray) -> np.ndarray:
        """W x + b for a batch x of shape (B, n_in)."""
        u = self.operator.apply(x)
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
