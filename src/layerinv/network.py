"""Generative networks: forward pass, random nets, save and load, PyTorch.

`Layer` (one layer) lives in `layers.py`; it is importable from here too.
"""

from __future__ import annotations

import itertools
import os
import zipfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import scipy.sparse

from layerinv._validation import check_batch, make_rng
from layerinv.activations import Activation, get_activation
from layerinv.convolution import Conv2dOperator
from layerinv.errors import InputError, NetworkFileError
from layerinv.layers import Layer, check_chain
from layerinv.operators import DenseOperator, LinearOperator, ProductOperator, SparseOperator

if TYPE_CHECKING:
    import torch

FILE_FORMAT = "layerinv-network"
FILE_VERSION = 3
"""Version 3 adds structured operators (`operator_i` names the kind, see `_operator_arrays`);
a network of dense layers alone is still written as version 2, which stores each activation as
its full name with parameters (`activation_i`, e.g. 'leaky_relu(0.2)', 'elu(1.0)'); version 1
stored the bare name and `slope_i`, still read."""
_DENSE_VERSION = 2
_GEOMETRY_SIZE = 12  # a convolution's integers: input shape, stride, padding, dilation,
#                      output padding (pairs) and transposed
_MAX_INT = 2**31 - 1  # no image side, stride or padding of a real network comes near


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

        Entries: format, version, n_layers, and per layer its operator's entries (a dense
        matrix: weight_i; others: operator_i, the kind, and their parameters, see
        `_operator_arrays`), bias_i (if any) and activation_i, the activation's name with its
        parameters (`repr`, e.g. 'elu(1.0)'). A convolution is stored by its kernel and
        geometry, not its matrix, and loads back bitwise.
        """
        arrays: dict[str, np.ndarray] = {
            "format": np.array(FILE_FORMAT),
            "version": np.array(_DENSE_VERSION),
            "n_layers": np.array(len(self.layers)),
        }
        for i, layer in enumerate(self.layers):
            entries = _operator_arrays(layer.operator, str(i))
            arrays.update(entries)
            if f"operator_{i}" in entries:
                arrays["version"] = np.array(FILE_VERSION)
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
                operator = _operator_from_arrays(arrays, str(i))
                layers.append(Layer(operator, arrays.get(f"bias_{i}"), activation))
            except InputError as exc:
                raise NetworkFileError(f"{source!r}: layer {i} is invalid: {exc}") from None
            except KeyError as exc:
                raise NetworkFileError(f"{source!r}: layer {i} lacks the entry {exc}") from None
        try:
            return cls(layers)
        except InputError as exc:
            raise NetworkFileError(f"{source!r}: {exc}") from None

    # ----------------------------------------------------------------- ONNX
    @classmethod
    def from_onnx(cls, source: str | os.PathLike[str] | Any) -> Network:
        """From an ONNX file or onnx.ModelProto holding one chain of Gemm, MatMul, Conv or
        ConvTranspose (+Add, +BatchNormalization) layers and activations
        (`_onnx_io.layers_from_onnx`; needs the `onnx` extra)."""
        from layerinv._onnx_io import layers_from_onnx

        return cls(layers_from_onnx(source))

    def to_onnx(self, path: str | os.PathLike[str], *, dtype: str = "float64") -> None:
        """Write the network as an ONNX file: Gemm (Conv or ConvTranspose for a convolution)
        + activation per layer, float64 unless dtype='float32' (activation slopes are float32
        attributes in ONNX)."""
        from layerinv._onnx_io import layers_to_onnx

        layers_to_onnx(self.layers, path, dtype=dtype)

    # ----------------------------------------------------------------- PyTorch
    @classmethod
    def from_torch(cls, module: torch.nn.Module, *,
                   input_shape: Sequence[int] | None = None) -> Network:
        """From an nn.Sequential in eval mode of Linear, convolution, batch norm, pooling,
        upsampling, reshape and activation modules (see `_torch_io.layers_from_module`).

        The network takes and gives flat vectors (an image in C-order of (C, H, W)).
        `input_shape` is one sample's input shape, needed where the first module is a
        convolution, e.g. (C, H, W).
        """
        from layerinv._torch_io import layers_from_module

        return cls(layers_from_module(module, input_shape))

    @classmethod
    def from_state_dict(cls, state: str | os.PathLike[str] | dict[str, Any], *,
                        layers: Sequence[str], activations: Sequence[str | Activation]) -> Network:
        """From a checkpoint whose decoder weights are named entries such as 'fc3.weight'."""
        from layerinv._torch_io import layers_from_state_dict

        return cls(layers_from_state_dict(state, layers=layers, activations=activations))

    def to_torch(self, dtype: torch.dtype | None = None) -> torch.nn.Sequential:
        """An equivalent nn.Sequential on the CPU (float32 unless `dtype` says otherwise),
        taking and giving flat (B, n) tensors; convolutions stay nn.Conv2d/ConvTranspose2d."""
        import torch

        from layerinv._torch_io import module_from_layers

        return module_from_layers(self.layers, torch.float32 if dtype is None else dtype)


def _operator_arrays(operator: LinearOperator, key: str) -> dict[str, np.ndarray]:
    """The file entries of one operator (`key`: the layer's index, '_j' added per factor).

    dense: weight_KEY; kinds: operator_KEY = 'sparse' (data_KEY, indices_KEY, indptr_KEY,
    shape_KEY), 'conv2d' (kernel_KEY, geometry_KEY: int64 input shape, stride, padding,
    dilation, output padding, transposed) or 'product' (n_factors_KEY, factors KEY_0, ...).
    """
    if isinstance(operator, DenseOperator):
        return {f"weight_{key}": operator.to_dense()}  # the dense matrix itself: an export
    if isinstance(operator, Conv2dOperator):
        geometry = [*operator.input_shape, *operator.stride, *operator.padding,
                    *operator.dilation, *operator.output_padding, int(operator.transposed)]
        return {f"operator_{key}": np.array("conv2d"), f"kernel_{key}": operator.kernel,
                f"geometry_{key}": np.array(geometry, dtype=np.int64)}
    if isinstance(operator, ProductOperator):
        arrays = {f"operator_{key}": np.array("product"),
                  f"n_factors_{key}": np.array(len(operator.factors))}
        for j, factor in enumerate(operator.factors):
            arrays.update(_operator_arrays(factor, f"{key}_{j}"))
        return arrays
    # Any other kind is stored by its sparse matrix (an export of its entries).
    csr = operator.to_sparse()
    return {f"operator_{key}": np.array("sparse"), f"data_{key}": csr.data,
            f"indices_{key}": csr.indices.astype(np.int64),
            f"indptr_{key}": csr.indptr.astype(np.int64),
            f"shape_{key}": np.array(csr.shape, dtype=np.int64)}


def _operator_from_arrays(arrays: dict[str, np.ndarray], key: str, depth: int = 0
                          ) -> LinearOperator:
    """The operator `_operator_arrays` wrote; InputError or KeyError when the entries are bad."""
    kind = arrays.get(f"operator_{key}")
    if kind is None:
        return DenseOperator(arrays[f"weight_{key}"], f"weight_{key}")
    kind = str(kind)
    if kind == "conv2d":
        g = _integers(arrays[f"geometry_{key}"], f"geometry_{key}", _GEOMETRY_SIZE)
        if g[11] not in (0, 1):
            raise InputError(f"geometry_{key}'s last entry (transposed) must be 0 or 1; got "
                             f"{g[11]}")
        return Conv2dOperator(arrays[f"kernel_{key}"], tuple(g[0:3]), stride=tuple(g[3:5]),
                              padding=tuple(g[5:7]), dilation=tuple(g[7:9]),
                              output_padding=tuple(g[9:11]), transposed=bool(g[11]))
    if kind == "product" and depth == 0:  # products are flat: no product inside one
        n = _integers(arrays[f"n_factors_{key}"], f"n_factors_{key}", 1)[0]
        if n > len(arrays):
            raise InputError(f"n_factors_{key} is {n}, more than the file's entries")
        return ProductOperator([_operator_from_arrays(arrays, f"{key}_{j}", depth + 1)
                                for j in range(n)])
    if kind == "sparse":
        shape = _integers(arrays[f"shape_{key}"], f"shape_{key}", 2)
        parts = [np.asarray(arrays[f"{part}_{key}"]) for part in ("data", "indices", "indptr")]
        if any(p.ndim != 1 for p in parts) or not all(
                np.issubdtype(p.dtype, np.integer) for p in parts[1:]):
            raise InputError(f"the sparse entries of operator {key} must be 1-D, with integer "
                             f"indices and indptr")
        try:
            csr = scipy.sparse.csr_array(tuple(parts), shape=tuple(shape))
        except ValueError as exc:
            raise InputError(f"the sparse entries of operator {key} are inconsistent: "
                             f"{exc}") from None
        return SparseOperator(csr, f"operator {key}")
    raise InputError(f"operator_{key} must be 'conv2d', 'product' or 'sparse'"
                     f"{' (products are not nested)' if kind == 'product' else ''}; got "
                     f"{kind!r}")


def _integers(value: np.ndarray, name: str, size: int) -> list[int]:
    array = np.asarray(value)
    if (not np.issubdtype(array.dtype, np.integer) or array.shape not in ((size,), ())
            or (array.shape == () and size != 1)):
        raise InputError(f"{name} must hold {size} integers; got dtype {array.dtype}, shape "
                         f"{array.shape}")
    values = [int(v) for v in array.reshape(-1)]
    if min(values) < 0 or max(values) > _MAX_INT:
        raise InputError(f"{name} must hold integers in [0, {_MAX_INT}]; got {values}")
    return values


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


DCGAN_STATISTICS_DRAWS = 64
"""The z ~ N(0, I) draws whose pre-activations give `random_dcgan`'s BatchNorm statistics."""


def random_dcgan(latent: int = 16, channels: Sequence[int] = (64, 32, 16), side: int = 4, *,
                 output_channels: int | None = None,
                 output_activation: str | Activation = "tanh",
                 activation: str | Activation = "relu", batchnorm: bool = True,
                 seed: int | np.random.Generator | None = None) -> Network:
    """A random DCGAN-style generator (Radford et al. 2016) with its BatchNorm folded.

    z (latent) -> Linear -> channels[0] x side x side, then ConvTranspose2d(c_i, c_{i+1}, 4,
    2, 1) per further entry of `channels` (each doubles the side), every one followed by
    BatchNorm and `activation`. With `output_channels`, one more ConvTranspose2d(channels[-1],
    output_channels, 4, 2, 1) and `output_activation`, without BatchNorm, as in DCGAN. The
    classic 64 x 64 x 3 generator is random_dcgan(100, (512, 256, 128, 64), 4,
    output_channels=3): its first ConvTranspose2d(100, 512, 4, 1, 0) acts on a 1 x 1 input,
    which is the Linear map used here.

    Weights are N(0, 0.02) and BatchNorm scales N(1, 0.02), DCGAN's initialisation. The
    BatchNorm statistics are those of each channel's pre-activations over
    DCGAN_STATISTICS_DRAWS seeded draws of z, as training would leave them (fresh statistics
    would shrink the signal by 0.02 sqrt(fan-in) per layer), and the shifts are N(0, 0.02).
    """
    channels = [int(c) for c in channels]
    if int(latent) < 1 or int(side) < 1 or not channels or min(channels) < 1 or (
            output_channels is not None and int(output_channels) < 1):
        raise InputError(f"latent, side and every channel count must be >= 1; got latent="
                         f"{latent}, side={side}, channels={channels}, output_channels="
                         f"{output_channels}")
    rng = make_rng(seed)
    hidden, last = get_activation(activation), get_activation(output_activation)
    h = rng.standard_normal((DCGAN_STATISTICS_DRAWS, int(latent)))
    shape = (channels[0], int(side), int(side))
    layers = []
    for index, c_out in enumerate(channels):
        if index == 0:
            operator: LinearOperator = DenseOperator(
                rng.normal(0.0, 0.02, size=(int(np.prod(shape)), int(latent))))
        else:
            operator, shape = _dcgan_convolution(shape, c_out, rng)
        bias = None
        if batchnorm:
            # One scale and shift per channel, from the statistics of u over the draws.
            u = operator.apply(h).reshape(len(h), shape[0], -1).transpose(1, 0, 2)
            u = u.reshape(shape[0], -1)
            scale = rng.normal(1.0, 0.02, size=shape[0]) / u.std(axis=1)
            shift = rng.normal(0.0, 0.02, size=shape[0]) - scale * u.mean(axis=1)
            pixels = shape[1] * shape[2]
            operator, bias = operator.scaled(np.repeat(scale, pixels)), np.repeat(shift, pixels)
        layers.append(Layer(operator, bias, hidden))
        h = layers[-1](h)
    if output_channels is not None:  # the output layer: no BatchNorm
        layers.append(Layer(_dcgan_convolution(shape, output_channels, rng)[0], None, last))
    return Network(layers)


def _dcgan_convolution(shape: tuple[int, int, int], c_out: int, rng: np.random.Generator
                       ) -> tuple[Conv2dOperator, tuple[int, int, int]]:
    """DCGAN's ConvTranspose2d(C, c_out, 4, 2, 1) on images `shape`, N(0, 0.02) weights, and
    its output shape (the side doubles)."""
    kernel = rng.normal(0.0, 0.02, size=(shape[0], int(c_out), 4, 4))
    operator = Conv2dOperator(kernel, shape, stride=2, padding=1, transposed=True)
    return operator, (int(c_out), 2 * shape[1], 2 * shape[2])
