"""The affine map between two activations, built op by op: what the PyTorch and the ONNX
readers share (`_torch_io`, `_onnx_io`), so that a batch norm folds the same way from either.

NumPy only (no PyTorch, no onnx): both optional readers import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from layerinv.activations import Activation
from layerinv.convolution import Conv2dOperator, _per_channel
from layerinv.layers import Layer
from layerinv.operators import LinearOperator, ProductOperator, SparseOperator


class AffineChain:
    """The affine map between two activations, built op by op: factors in the order of the
    matrix product (the last op first), a flat bias, and a diagonal scale waiting for the next
    operator's columns (a batch norm right after an activation)."""

    def __init__(self) -> None:
        self.factors: list[LinearOperator] = []
        self.bias: np.ndarray | None = None
        self.pending_scale: np.ndarray | None = None
        self.weighted = False  # holds a Linear or a convolution

    def add(self, operator: LinearOperator, bias: np.ndarray | None, weighted: bool) -> None:
        """The chain followed by x -> operator x + bias."""
        moved = None if self.bias is None else operator.apply(self.bias)
        if self.pending_scale is not None:
            operator = operator.scaled(columns=self.pending_scale)
            self.pending_scale = None
        self.factors.insert(0, operator)
        self.bias = bias if moved is None else moved if bias is None else moved + bias
        self.weighted = self.weighted or weighted

    def shift(self, values: np.ndarray) -> None:
        """The chain followed by x -> x + values (a bias added on its own)."""
        self.bias = values if self.bias is None else self.bias + values

    def affine(self, scale: np.ndarray, shift: np.ndarray) -> None:
        """The chain followed by x -> scale * x + shift (a batch norm, folded).

        A per-channel scale passes through poolings and upsamplings (channel-diagonal
        kernels commute with it) into the convolution before them, so that those stay
        what they were (and export as themselves)."""
        self.bias = shift if self.bias is None else scale * self.bias + shift
        if not self.factors:
            self.pending_scale = scale if self.pending_scale is None else scale * self.pending_scale
            return
        i = 0
        while i < len(self.factors) - 1 and _channel_diagonal(self.factors[i]):
            per_channel = _per_channel(scale, self.factors[i].output_shape)
            if per_channel is None:
                break
            scale = np.repeat(per_channel, int(np.prod(self.factors[i].input_shape[1:])))
            i += 1
        self.factors[i] = self.factors[i].scaled(rows=scale)

    def layer(self, activation: Activation) -> Layer:
        factors = list(self.factors)
        if self.pending_scale is not None:
            factors.insert(0, SparseOperator.diagonal(self.pending_scale))
        operator = factors[0] if len(factors) == 1 else ProductOperator(factors)
        return Layer(operator, self.bias, activation)


def _channel_diagonal(operator: LinearOperator) -> bool:
    """A convolution mapping each channel to itself alone (a pooling, an upsampling)."""
    if not isinstance(operator, Conv2dOperator):
        return False
    channels = operator.input_shape[0]
    if operator.output_shape[0] != channels:
        return False
    off = operator.kernel.copy()
    off[np.arange(channels), np.arange(channels)] = 0.0
    return not off.any()


def batch_norm_affine(shape: Sequence[int], mean: np.ndarray, var: np.ndarray, eps: float,
                      gamma: np.ndarray | None = None, beta: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift), flat over one sample of `shape` (C, ...), of an inference-mode batch
    norm: gamma (x - mean) / sqrt(var + eps) + beta, per channel (gamma, beta None: 1, 0)."""
    scale = 1.0 / np.sqrt(var + eps)
    if gamma is not None:
        scale = scale * gamma
    shift = -scale * mean
    if beta is not None:
        shift = shift + beta
    repeat = math.prod(shape[1:])
    return np.repeat(scale, repeat), np.repeat(shift, repeat)
