"""Conversion between layerinv layers and ONNX models (the `onnx` package, the `[onnx]` extra).

Only imported lazily (by `Network.from_onnx` / `to_onnx` and `layerinv.vnnlib`), so layerinv
works without onnx installed. Works on layer lists, as `_torch_io` does (network.py imports
this module, so it cannot import network.py back).

Reading (`layers_from_onnx`). A graph is read as one chain from its single input to its single
output, node by node in the file's (topological) order; every tensor is either a constant (an
initializer, a Constant node, or shape arithmetic folded here) or the data: the one tensor that
depends on the input. A data node must take the latest data tensor (a tensor used twice, or a
node joining two, is a branch: refused). What each data op does is one table entry:

- `_LINEAR_OPS` (Gemm, MatMul, Conv, ConvTranspose) open a layer with its linear operator
  (the table maps an op to an operator, a bias and the output shape); a convolution's is a
  `Conv2dOperator` on the (C, H, W) image the tracked shape gives (group=1, symmetric pads,
  auto_pad NOTSET: anything else refused by name);
- Add adds a constant to the open layer's bias, and BatchNormalization (inference form) is
  folded into the open layer as `Network.from_torch` folds an eval BatchNorm (the shared
  `_affine.AffineChain`): its scale goes into the operator's rows (a convolution's kernel,
  per channel), or, right after an activation, into the next linear op's columns;
- `_ACTIVATION_OPS` (Relu, LeakyRelu, Tanh, Sigmoid, Elu) close the open layer;
- `_RESHAPE_OPS` (Identity, Flatten, Reshape, Squeeze, Unsqueeze) only reshape: layerinv's
  vectors are the flattened (C order) per-sample tensors, so a reshape that keeps the batch
  axis first and the per-sample size is a no-op; one that moves the batch axis is refused.

A layer left open at the next linear op or at the end gets the identity activation. Shapes
are tracked with the batch size the file states, or a stand-in (`_BATCH_STAND_IN`) where it is
symbolic, so that the exporters' Shape -> Slice -> Concat -> Reshape chains fold to constants.
Every other dimension must be a number: a symbolic feature dimension is a shape that matters.

Writing (`model_from_layers`, `layers_to_onnx`) builds the graph with onnx.helper directly: per
layer a Conv or ConvTranspose for a convolution operator (kernel and geometry, never its
matrix; Reshape / Flatten nodes where the flat vectors meet images) or a Gemm with the dense
matrix for any other operator (a product too), then its activation's node. No exporter, no
PyTorch, and the weights stay float64 unless dtype='float32' is asked for (what most
verifiers load).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from layerinv._affine import AffineChain, batch_norm_affine
from layerinv.activations import Activation, get_activation
from layerinv.convolution import Conv2dOperator, _per_channel
from layerinv.errors import InputError, NetworkFileError, OutputError, UnsupportedLayerError
from layerinv.layers import Layer, check_chain
from layerinv.operators import DenseOperator, LinearOperator

# A symbolic batch size is replaced by this while shapes are folded: a prime no feature
# dimension is likely to equal, so a reshape that moves the batch axis cannot pass by chance.
_BATCH_STAND_IN = 9973
_FLOAT_TYPES = {"float16", "float32", "float64"}
# ONNX op -> (layerinv activation name, default of its `alpha` attribute or None).
_ACTIVATION_OPS: dict[str, tuple[str, float | None]] = {
    "Relu": ("relu", None),
    "LeakyRelu": ("leaky_relu", 0.01),
    "Tanh": ("tanh", None),
    "Sigmoid": ("sigmoid", None),
    "Elu": ("elu", 1.0),
}
# torch.nn class of an activation (Activation.torch_name) -> the ONNX op computing it; its one
# parameter (LeakyReLU's slope, ELU's alpha) is the op's `alpha` attribute.
_ONNX_OF_TORCH = {"ReLU": "Relu", "LeakyReLU": "LeakyRelu", "Tanh": "Tanh",
                  "Sigmoid": "Sigmoid", "ELU": "Elu"}
# Linear image ops that `_torch_io` reads as convolution operators (from nn.AvgPool2d and a
# nearest nn.Upsample) but this reader does not yet: refused by name.
_NOT_YET = ("AveragePool", "Resize", "Upsample")
# What a data node must follow, in messages.
_LINEAR_TEXT = "linear op (Gemm, MatMul, Conv or ConvTranspose)"
OPSET = 17
"""The opset of the files written (ONNX 1.12 and later read it)."""
_IR_VERSION = 8  # the IR version of opset 17, so that older runtimes load the files


# --------------------------------------------------------------------------- loading
def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise UnsupportedLayerError(
            "reading and writing ONNX needs the onnx package: pip install 'layerinv[onnx]'"
        ) from None
    return onnx


def _load(source: object) -> tuple[Any, str]:
    """(checked ModelProto, its description for messages) from a path or a ModelProto."""
    onnx = _onnx()
    if isinstance(source, onnx.ModelProto):
        model, where = source, "the ONNX model"
    elif isinstance(source, str | os.PathLike):
        where = f"ONNX file {os.fspath(source)!r}"
        if not os.path.isfile(source):
            what = "is a directory" if os.path.isdir(source) else "does not exist"
            raise NetworkFileError(f"{where} {what}")
        try:
            model = onnx.load(os.fspath(source))
        except Exception as exc:  # protobuf's DecodeError, external data, ...: one clear error
            raise NetworkFileError(f"{where} is not a readable ONNX model (corrupt, truncated "
                                   f"or another format): {_first_line(exc)}") from None
    else:
        raise InputError(f"source must be a path to an .onnx file or an onnx.ModelProto; got "
                         f"{type(source).__name__}")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError and protobuf errors
        raise NetworkFileError(f"{where} is not a valid ONNX model: {_first_line(exc)}") from None
    return model, where


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


# --------------------------------------------------------------------------- reading
def layers_from_onnx(source: object) -> list[Layer]:
    """The layers of a Network equal to an ONNX model: one chain of fully connected and
    convolutional layers.

    `source` is a path to an .onnx file or an onnx.ModelProto. Supported ops: see
    `SUPPORTED_OPS`. A file that is not ONNX is a NetworkFileError; a graph layerinv cannot
    represent (an unsupported op, a branch, several inputs or outputs, a symbolic feature
    dimension, non-float weights) an UnsupportedLayerError naming the node.
    """
    model, where = _load(source)
    return _Chain(model.graph, where).read()


class _Chain:
    """The state of reading one graph: its constants, the data tensor, the layers so far."""

    def __init__(self, graph: Any, where: str):
        self.graph, self.where = graph, where
        self.consts: dict[str, np.ndarray] = {}
        for tensor in graph.initializer:
            self.consts[tensor.name] = _array(tensor, f"{where}: initializer {tensor.name!r}")
        self.data, self.shape = self._input()
        self.shapes = {self.data: self.shape}  # every data tensor's shape (for Shape nodes)
        self.used: set[str] = set()  # data tensors already consumed by a data node
        self.layers: list[Layer] = []
        self.open: AffineChain | None = None  # the layer being read (its affine map so far)
        self.open_name = ""  # the node that opened it, for messages

    # ----------------------------------------------------------------- the graph's ends
    def _input(self) -> tuple[str, tuple[int, ...]]:
        inputs = [v for v in self.graph.input if v.name not in self.consts]
        if len(inputs) != 1:
            raise UnsupportedLayerError(
                f"{self.where} has {len(inputs)} inputs ({[v.name for v in inputs]}); layerinv "
                f"reads networks with exactly one input (the latent z)")
        value = inputs[0]
        tensor = value.type.tensor_type if value.type.HasField("tensor_type") else None
        if tensor is None or _dtype_name(tensor.elem_type) not in _FLOAT_TYPES:
            raise UnsupportedLayerError(
                f"{self.where}: input {value.name!r} must be a float tensor (float16, float32 "
                f"or float64); got {_type_text(value)}")
        if not tensor.HasField("shape"):
            raise UnsupportedLayerError(f"{self.where}: input {value.name!r} has no shape; "
                                        f"export with a fixed feature size")
        dims = list(tensor.shape.dim)
        if len(dims) < 2:
            raise UnsupportedLayerError(
                f"{self.where}: input {value.name!r} has shape {_dims_text(dims)}; layerinv "
                f"reads networks whose input is (batch, features...): export with a batch of "
                f"one, e.g. torch.randn(1, k)")
        batch = dims[0].dim_value if dims[0].HasField("dim_value") else _BATCH_STAND_IN
        features = []
        for i, dim in enumerate(dims[1:], start=1):
            if not dim.HasField("dim_value") or dim.dim_value < 1:
                raise UnsupportedLayerError(
                    f"{self.where}: input {value.name!r} has shape {_dims_text(dims)}: axis "
                    f"{i} is symbolic, a dynamic shape that matters (only the batch axis, "
                    f"axis 0, may be symbolic); export with fixed feature sizes")
            features.append(dim.dim_value)
        return value.name, (max(int(batch), 1), *features)

    def read(self) -> list[Layer]:
        for node in self.graph.node:
            self._node(node)
        outputs = [v.name for v in self.graph.output]
        if len(outputs) != 1:
            raise UnsupportedLayerError(
                f"{self.where} has {len(outputs)} outputs ({outputs}); layerinv reads networks "
                f"with exactly one output")
        if outputs[0] != self.data:
            raise UnsupportedLayerError(
                f"{self.where}: the output {outputs[0]!r} is not the end of the chain from the "
                f"input (that is {self.data!r}): the graph is not a single chain")
        self._close(get_activation("identity"))
        if not self.layers:
            raise UnsupportedLayerError(f"{self.where} holds no {_LINEAR_TEXT}: no layer")
        try:
            return check_chain(self.layers)
        except InputError as exc:
            raise UnsupportedLayerError(f"{self.where}: {exc}") from None

    # ----------------------------------------------------------------- one node
    def _node(self, node: Any) -> None:
        name = f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedLayerError(f"{self.where}: {name} is in the custom domain "
                                        f"{node.domain!r}; {_supported()}")
        data_inputs = [i for i in node.input if i and (i == self.data or i in self.used)]
        if not data_inputs:
            self._fold(node, name)
            return
        if node.op_type == "Shape":  # reads only the data's shape: not a use of the data
            self._set_const(node, _shape_op(self.shapes[data_inputs[0]], node))
            return
        if len(set(data_inputs)) > 1 or data_inputs[0] != self.data:
            raise UnsupportedLayerError(
                f"{self.where}: {name} takes {sorted(set(data_inputs))}, but the chain is at "
                f"{self.data!r}: the graph branches or joins (a tensor used twice), and "
                f"layerinv reads only a single chain of layers")
        if len(data_inputs) > 1:
            raise UnsupportedLayerError(
                f"{self.where}: {name} takes the data {self.data!r} more than once (as in z * z "
                f"or z @ z): not a layer; weights must be constants")
        op = node.op_type
        if op in _NOT_YET:
            raise UnsupportedLayerError(
                f"{self.where}: {name} is not supported yet (Network.from_torch reads its "
                f"PyTorch module as a convolution, the ONNX reader does not); {_supported()}")
        if op in _LINEAR_OPS:
            operator, bias, shape = _LINEAR_OPS[op](self, node, name)
            if self.open is not None and self.open.weighted:
                self._close(get_activation("identity"))
            self._chain(name).add(_operator(operator, name, self.where), bias, weighted=True)
            self.shape = shape
        elif op == "Add":
            self._add(node, name)
        elif op == "BatchNormalization":
            self._chain(name).affine(*_batch_norm(self, node, name))
        elif op in _ACTIVATION_OPS:
            if self.open is None:
                raise UnsupportedLayerError(
                    f"{self.where}: {name} does not follow a {_LINEAR_TEXT}: each activation "
                    f"must come right after one")
            self._close(_activation(node, name, self.where))
        elif op in _RESHAPE_OPS:
            self.shape = self._reshape(node, name, _RESHAPE_OPS[op](self, node))
        else:
            raise UnsupportedLayerError(f"{self.where}: {name} is not supported; "
                                        f"{_supported()}")
        # Checked after the op's own checks, so that a training-mode BatchNormalization (three
        # outputs) is refused for what it is.
        outputs = [o for o in node.output if o]
        if len(outputs) != 1:
            raise UnsupportedLayerError(f"{self.where}: {name} has {len(outputs)} outputs; a "
                                        f"chain node has one")
        self.used.add(self.data)
        self.data = outputs[0]
        self.shapes[self.data] = self.shape

    def _chain(self, name: str) -> AffineChain:
        """The open layer's affine map, opened by node `name` where none is open (a batch norm
        right after an activation scales the next linear op's columns)."""
        if self.open is None:
            self.open, self.open_name = AffineChain(), name
        return self.open

    def _close(self, activation: Activation) -> None:
        if self.open is not None:
            try:
                self.layers.append(self.open.layer(activation))
            except InputError as exc:
                raise UnsupportedLayerError(f"{self.where}: {self.open_name}: {exc}") from None
            self.open = None

    def _add(self, node: Any, name: str) -> None:
        if self.open is None:
            raise UnsupportedLayerError(
                f"{self.where}: {name} does not follow a {_LINEAR_TEXT}: an Add of a constant "
                f"is read as the bias of the linear op right before it")
        other = [i for i in node.input if i != self.data]
        if len(other) != 1:
            raise UnsupportedLayerError(f"{self.where}: {name} adds the data to itself; only a "
                                        f"constant bias can be added")
        addend = self.float_const(other[0], name)
        self.open.shift(_bias_of(addend, self.shape, name, self.where))

    def _reshape(self, node: Any, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        if (len(shape) < 2 or shape[0] != self.shape[0]
                or math.prod(shape[1:]) != math.prod(self.shape[1:])):
            raise UnsupportedLayerError(
                f"{self.where}: {name} reshapes the data from {_shape_text(self.shape)} to "
                f"{_shape_text(shape)}: only reshapes that keep the batch axis first and the "
                f"per-sample size are supported (they leave the flat vectors alone)")
        return shape

    # ----------------------------------------------------------------- constants
    def const(self, name: str, node_name: str) -> np.ndarray:
        if name not in self.consts:
            raise UnsupportedLayerError(
                f"{self.where}: {node_name} needs {name!r} as a constant (an initializer or "
                f"Constant), but it is not one")
        return self.consts[name]

    def float_const(self, name: str, node_name: str) -> np.ndarray:
        """A constant that enters the network's map: it must be floating point."""
        value = self.const(name, node_name)
        if value.dtype.name not in _FLOAT_TYPES:
            raise UnsupportedLayerError(
                f"{self.where}: {node_name}: the weight {name!r} has dtype {value.dtype}; "
                f"weights must be floating point (float16, float32 or float64)")
        return value.astype(np.float64)

    def _set_const(self, node: Any, value: np.ndarray) -> None:
        self.consts[node.output[0]] = value

    def _fold(self, node: Any, name: str) -> None:
        """A node of constants only: shape arithmetic folded here (the exporters' Reshape
        targets), or refused."""
        fold = _FOLD_OPS.get(node.op_type)
        if fold is None:
            raise UnsupportedLayerError(
                f"{self.where}: {name} computes on constants only, and layerinv folds only "
                f"shape arithmetic ({', '.join(sorted(_FOLD_OPS))}); {_supported()}")
        inputs = [self.const(i, name) if i else None for i in node.input]
        try:
            value = fold(node, inputs)
        except (ValueError, IndexError, TypeError, ZeroDivisionError, KeyError) as exc:
            raise UnsupportedLayerError(f"{self.where}: {name} could not be folded: "
                                        f"{_first_line(exc)}") from None
        self._set_const(node, np.asarray(value))


# --------------------------------------------------------------------------- data ops
def _gemm(chain: _Chain, node: Any, name: str) -> tuple[np.ndarray, np.ndarray | None,
                                                        tuple[int, ...]]:
    """Y = alpha A op(B) + beta C with A the data (batch, n_in), B and C constants."""
    attrs = _attributes(node)
    inputs = list(node.input) + [""] * (3 - len(node.input))
    if inputs[0] != chain.data or attrs.get("transA", 0):
        raise UnsupportedLayerError(
            f"{chain.where}: {name} must take the data as its first input A, untransposed "
            f"(transA=0), and constant B and C")
    if len(chain.shape) != 2:
        raise UnsupportedLayerError(
            f"{chain.where}: {name} takes data of shape {_shape_text(chain.shape)}; Gemm needs "
            f"(batch, features)")
    b = chain.float_const(inputs[1], name)
    if b.ndim != 2:
        raise UnsupportedLayerError(f"{chain.where}: {name}: B has shape {b.shape}, not 2-D")
    weight = float(attrs.get("alpha", 1.0)) * (b if attrs.get("transB", 0) else b.T)
    if weight.shape[1] != chain.shape[1]:
        raise UnsupportedLayerError(
            f"{chain.where}: {name}: the weight takes {weight.shape[1]} inputs but the data has "
            f"{chain.shape[1]} features")
    out = (chain.shape[0], weight.shape[0])
    bias = None
    if inputs[2]:
        c = float(attrs.get("beta", 1.0)) * chain.float_const(inputs[2], name)
        bias = _bias_of(c, out, name, chain.where)
    return weight, bias, out


def _matmul(chain: _Chain, node: Any, name: str) -> tuple[np.ndarray, None, tuple[int, ...]]:
    """Y = A B with A the data (batch, 1, ..., 1, n_in) and B a constant (n_in, n_out)."""
    if list(node.input[:1]) != [chain.data]:
        raise UnsupportedLayerError(f"{chain.where}: {name} must take the data as its first "
                                    f"input A and a constant matrix B (A @ B)")
    b = chain.float_const(node.input[1], name)
    shape = chain.shape
    if b.ndim != 2 or b.shape[0] != shape[-1] or any(d != 1 for d in shape[1:-1]):
        raise UnsupportedLayerError(
            f"{chain.where}: {name} multiplies data of shape {_shape_text(shape)} by B of shape "
            f"{b.shape}; supported: data (batch, n) or (batch, 1, ..., 1, n) times B (n, m)")
    return b.T, None, (*shape[:-1], b.shape[1])


def _conv(chain: _Chain, node: Any, name: str) -> tuple[Conv2dOperator, np.ndarray | None,
                                                        tuple[int, ...]]:
    """Conv or ConvTranspose on images (batch, C, H, W): X the data, W and B constants."""
    attrs = _attributes(node)
    inputs = list(node.input) + [""] * (3 - len(node.input))
    if inputs[0] != chain.data:
        raise UnsupportedLayerError(f"{chain.where}: {name} must take the data as its first "
                                    f"input X, and constant W and B")
    if len(chain.shape) != 4:
        raise UnsupportedLayerError(
            f"{chain.where}: {name} takes data of shape {_shape_text(chain.shape)}; layerinv "
            f"reads 2-D convolutions, on images (batch, C, H, W)")
    kernel = chain.float_const(inputs[1], name)
    operator = _conv_operator(kernel, chain.shape[1:], attrs, node.op_type == "ConvTranspose",
                              f"{chain.where}: {name}")
    bias = None
    if inputs[2]:
        b = chain.float_const(inputs[2], name)
        if b.shape != (operator.output_shape[0],):
            raise UnsupportedLayerError(
                f"{chain.where}: {name}: B has shape {b.shape}; expected one value per output "
                f"channel, ({operator.output_shape[0]},)")
        bias = np.repeat(b, operator.output_shape[1] * operator.output_shape[2])
    return operator, bias, (chain.shape[0], *operator.output_shape)


def _conv_operator(kernel: np.ndarray, image: tuple[int, ...], attrs: dict[str, Any],
                   transposed: bool, what: str) -> Conv2dOperator:
    """The Conv2dOperator of a Conv / ConvTranspose node's attributes (ONNX's defaults)."""
    group = int(attrs.get("group", 1))
    if group != 1:
        raise UnsupportedLayerError(f"{what} has group={group}; only group=1 is supported "
                                    f"(no grouped or depthwise convolutions)")
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad != "NOTSET":
        raise UnsupportedLayerError(f"{what} has auto_pad={auto_pad!r}; only NOTSET (explicit "
                                    f"pads) is supported")
    if "output_shape" in attrs:
        raise UnsupportedLayerError(f"{what} has an output_shape attribute; only explicit pads "
                                    f"and output_padding are supported")
    if kernel.ndim != 4:
        raise UnsupportedLayerError(f"{what}: W has shape {kernel.shape}; a 2-D convolution's "
                                    f"kernel is 4-D")
    shape = [int(v) for v in attrs.get("kernel_shape", kernel.shape[2:])]
    if shape != list(kernel.shape[2:]):
        raise UnsupportedLayerError(f"{what} has kernel_shape {shape} but W has shape "
                                    f"{kernel.shape}")
    pads = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
    if len(pads) != 4 or pads[:2] != pads[2:]:
        raise UnsupportedLayerError(
            f"{what} has pads {pads} (begin h, w, end h, w); only symmetric padding (begin = "
            f"end) is supported")
    extra = {"output_padding": _ints(attrs, "output_padding")} if transposed else {}
    try:
        return Conv2dOperator(kernel, image, stride=_ints(attrs, "strides", 1),
                              padding=tuple(pads[:2]), dilation=_ints(attrs, "dilations", 1),
                              transposed=transposed, **extra)
    except InputError as exc:
        raise UnsupportedLayerError(f"{what}: {exc}") from None


def _ints(attrs: dict[str, Any], key: str, default: int = 0) -> tuple[int, ...]:
    """A per-axis attribute (strides, dilations, output_padding) of a 2-D op, ONNX's default
    on both axes where it is absent."""
    return tuple(int(v) for v in attrs.get(key, (default, default)))


def _operator(weight: np.ndarray | LinearOperator, name: str, where: str) -> LinearOperator:
    if isinstance(weight, LinearOperator):
        return weight
    try:
        return DenseOperator(weight)
    except InputError as exc:  # a non-finite weight
        raise UnsupportedLayerError(f"{where}: {name}: {exc}") from None


_LINEAR_OPS: dict[str, Callable[[_Chain, Any, str], tuple[Any, Any, tuple[int, ...]]]] = {
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Conv": _conv,
    "ConvTranspose": _conv,
}
"""ONNX op -> (linear operator or matrix (n_out, n_in), bias or None, output shape)."""


def _batch_norm(chain: _Chain, node: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift), flat, of an inference-mode BatchNormalization of the data."""
    if int(_attributes(node).get("training_mode", 0)):
        raise UnsupportedLayerError(
            f"{chain.where}: {name} has training_mode=1, where it normalises by the batch's "
            f"statistics; export the model in eval mode (model.eval())")
    inputs = list(node.input)
    if len(inputs) != 5 or inputs[0] != chain.data:
        raise UnsupportedLayerError(f"{chain.where}: {name} must take the data as its first "
                                    f"input X, and constant scale, B, mean and var")
    channels = chain.shape[1] if len(chain.shape) >= 2 else 0
    gamma, beta, mean, var = (chain.float_const(i, name) for i in inputs[1:])
    for what, values in zip(("scale", "B", "mean", "var"), (gamma, beta, mean, var),
                            strict=True):
        if values.shape != (channels,):
            raise UnsupportedLayerError(
                f"{chain.where}: {name}: {what} has shape {values.shape} but the data has "
                f"shape {_shape_text(chain.shape)}; expected one value per channel (axis 1)")
    eps = float(_attributes(node).get("epsilon", 1e-5))
    return batch_norm_affine(chain.shape[1:], mean, var, eps, gamma, beta)


def _bias_of(value: np.ndarray, shape: tuple[int, ...], name: str, where: str) -> np.ndarray:
    """A constant added to data of `shape` (batch first), as a flat per-sample bias."""
    try:
        broadcast = np.broadcast_shapes(value.shape, shape)
    except ValueError:
        broadcast = None
    varies = value.ndim == len(shape) and value.shape[0] != 1
    if broadcast != tuple(shape) or varies:
        raise UnsupportedLayerError(
            f"{where}: {name} adds a constant of shape {value.shape} to data of shape "
            f"{_shape_text(shape)}; a bias must broadcast to the data without changing its "
            f"shape or varying along the batch axis")
    return np.broadcast_to(value, shape)[0].reshape(-1).astype(np.float64)


def _activation(node: Any, name: str, where: str) -> Activation:
    key, default = _ACTIVATION_OPS[node.op_type]
    if default is None:
        return get_activation(key)
    alpha = float(_attributes(node).get("alpha", default))
    if alpha == 0.0:
        return get_activation("relu")
    if not (alpha > 0.0 and math.isfinite(alpha)):
        raise UnsupportedLayerError(
            f"{where}: {name} has alpha {alpha}; only values >= 0 are monotone and have an "
            f"interval preimage")
    return get_activation(f"{key}({alpha!r})")


def _flatten_shape(chain: _Chain, node: Any) -> tuple[int, ...]:
    axis = int(_attributes(node).get("axis", 1))
    shape = chain.shape
    axis = axis + len(shape) if axis < 0 else axis
    return (math.prod(shape[:axis]), math.prod(shape[axis:]))


def _reshape_shape(chain: _Chain, node: Any) -> tuple[int, ...]:
    target = [int(v) for v in chain.const(node.input[1], "Reshape").reshape(-1)]
    allowzero = int(_attributes(node).get("allowzero", 0))
    shape = list(chain.shape)
    out = [shape[i] if (v == 0 and not allowzero and i < len(shape)) else v
           for i, v in enumerate(target)]
    if out.count(-1) == 1:
        known = math.prod(v for v in out if v != -1)
        out[out.index(-1)] = math.prod(shape) // known if known else 0
    return tuple(out)


def _axes(chain: _Chain, node: Any) -> list[int] | None:
    if len(node.input) > 1 and node.input[1]:
        return [int(v) for v in chain.const(node.input[1], node.op_type).reshape(-1)]
    axes = _attributes(node).get("axes")
    return None if axes is None else [int(v) for v in axes]


def _squeeze_shape(chain: _Chain, node: Any) -> tuple[int, ...]:
    shape, axes = chain.shape, _axes(chain, node)
    drop = ({i for i, d in enumerate(shape) if d == 1} if axes is None
            else {a % len(shape) for a in axes})
    return tuple(d for i, d in enumerate(shape) if i not in drop)


def _unsqueeze_shape(chain: _Chain, node: Any) -> tuple[int, ...]:
    axes = _axes(chain, node) or []
    rank = len(chain.shape) + len(axes)
    where = {a % rank for a in axes}
    dims = iter(chain.shape)
    return tuple(1 if i in where else next(dims) for i in range(rank))


_RESHAPE_OPS: dict[str, Callable[[_Chain, Any], tuple[int, ...]]] = {
    "Identity": lambda chain, node: chain.shape,
    "Flatten": _flatten_shape,
    "Reshape": _reshape_shape,
    "Squeeze": _squeeze_shape,
    "Unsqueeze": _unsqueeze_shape,
}
"""ONNX op -> the data's new shape (the flat vectors are unchanged)."""

SUPPORTED_OPS = (*_LINEAR_OPS, "Add (a bias)", "BatchNormalization (inference)",
                 *_ACTIVATION_OPS, *_RESHAPE_OPS, "Constant and shape arithmetic on constants")
"""The ONNX ops `layers_from_onnx` reads, for messages and docs."""


def _supported() -> str:
    return f"supported ops: {', '.join(SUPPORTED_OPS)}"


# --------------------------------------------------------------------------- folding
def _constant(node: Any, inputs: list) -> np.ndarray:
    onnx = _onnx()
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if attr.name == "value":
            return _array(value, f"Constant node {node.name!r}")
        if attr.name in ("value_float", "value_floats"):
            return np.asarray(value, dtype=np.float32)
        if attr.name in ("value_int", "value_ints"):
            return np.asarray(value, dtype=np.int64)
    raise ValueError("a Constant node without a numeric value")


def _shape_op(shape: tuple[int, ...], node: Any) -> np.ndarray:
    attrs = _attributes(node)
    start, end = attrs.get("start", 0), attrs.get("end")
    return np.array(shape[start:end], dtype=np.int64)


def _slice(node: Any, inputs: list) -> np.ndarray:
    data, starts, ends = inputs[0], inputs[1], inputs[2]
    axes = inputs[3] if len(inputs) > 3 and inputs[3] is not None else range(len(starts))
    steps = inputs[4] if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        index[int(a)] = slice(int(s), int(e), int(st))
    return data[tuple(index)]


def _cast(node: Any, inputs: list) -> np.ndarray:
    to = _onnx().helper.tensor_dtype_to_np_dtype(int(_attributes(node)["to"]))
    return inputs[0].astype(to)


def _div(node: Any, inputs: list) -> np.ndarray:
    a, b = inputs
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return np.trunc(a / b).astype(np.result_type(a, b))  # ONNX integer division truncates
    return a / b


def _mod(node: Any, inputs: list) -> np.ndarray:
    a, b = inputs
    return np.fmod(a, b) if _attributes(node).get("fmod", 0) else np.mod(a, b)


def _squeeze_const(node: Any, inputs: list) -> np.ndarray:
    axes = inputs[1] if len(inputs) > 1 and inputs[1] is not None else _attributes(node).get(
        "axes")
    return np.squeeze(inputs[0], axis=None if axes is None else tuple(int(a) for a in axes))


def _unsqueeze_const(node: Any, inputs: list) -> np.ndarray:
    axes = inputs[1] if len(inputs) > 1 and inputs[1] is not None else _attributes(node)["axes"]
    return np.expand_dims(inputs[0], tuple(int(a) for a in axes))


def _reshape_const(node: Any, inputs: list) -> np.ndarray:
    target = [int(v) for v in inputs[1].reshape(-1)]
    shape = inputs[0].shape
    target = [shape[i] if v == 0 and not _attributes(node).get("allowzero", 0) else v
              for i, v in enumerate(target)]
    return inputs[0].reshape(target)


_FOLD_OPS: dict[str, Callable[[Any, list], np.ndarray]] = {
    "Constant": _constant,
    "Identity": lambda node, inputs: inputs[0],
    "Shape": lambda node, inputs: _shape_op(inputs[0].shape, node),
    "Gather": lambda node, inputs: np.take(inputs[0], inputs[1].astype(np.int64),
                                           axis=int(_attributes(node).get("axis", 0))),
    "Slice": _slice,
    "Concat": lambda node, inputs: np.concatenate(inputs, axis=int(_attributes(node)["axis"])),
    "Squeeze": _squeeze_const,
    "Unsqueeze": _unsqueeze_const,
    "Reshape": _reshape_const,
    "Cast": _cast,
    "Add": lambda node, inputs: inputs[0] + inputs[1],
    "Sub": lambda node, inputs: inputs[0] - inputs[1],
    "Mul": lambda node, inputs: inputs[0] * inputs[1],
    "Div": _div,
    "Mod": _mod,
}
"""Ops evaluated here when every input is a constant (the exporters' shape arithmetic)."""


# --------------------------------------------------------------------------- helpers
def _attributes(node: Any) -> dict[str, Any]:
    helper = _onnx().helper
    return {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}


def _array(tensor: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(_onnx().numpy_helper.to_array(tensor))
    except Exception as exc:  # external data missing, a malformed tensor
        raise NetworkFileError(f"{what} could not be read: {_first_line(exc)}") from None


def _dtype_name(elem_type: int) -> str:
    try:
        return np.dtype(_onnx().helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:  # an undefined or non-numpy element type
        return f"element type {elem_type}"


def _type_text(value: Any) -> str:
    if not value.type.HasField("tensor_type"):
        return f"a {value.type.WhichOneof('value') or 'untyped'} value"
    return f"a {_dtype_name(value.type.tensor_type.elem_type)} tensor"


def _dims_text(dims: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else
                           repr(d.dim_param or "?") for d in dims) + ")"


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join("batch" if i == 0 and d == _BATCH_STAND_IN else str(d)
                           for i, d in enumerate(shape)) + ")"


# --------------------------------------------------------------------------- writing
def model_from_layers(layers: Sequence[Layer], *, dtype: str = "float64",
                      input_name: str = "z", output_name: str = "x") -> Any:
    """An onnx.ModelProto computing the layers' map. Per layer its linear op, then the
    activation's op (none for identity): a convolution operator is a Conv or ConvTranspose
    node (its kernel and geometry; a Reshape before it where the data is not yet its input
    image, its bias as B where it is per channel, else an Add), any other operator a Gemm
    (transB=1) holding its dense matrix (a Flatten before it where the data is an image).
    Input (batch, k), output (batch, n) (a last Flatten where it is an image), batch symbolic.

    dtype 'float64' keeps the weights exactly; 'float32' rounds them (what most verifiers and
    runtimes load; a verifier's answer is then about the rounded network). An activation's
    parameter (leaky_relu's slope, elu's alpha) is an ONNX attribute, which is float32 in
    every file: leaky_relu(0.3) is written, and read back, as leaky_relu(float32(0.3)) =
    leaky_relu(0.30000001192092896); slopes such as 0.25 or 0.5 stay exact.
    """
    onnx = _onnx()
    helper = onnx.helper
    if dtype not in ("float32", "float64"):
        raise InputError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    layers = check_chain(layers)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = _Graph(input_name, dtype)
    for i, layer in enumerate(layers):
        if isinstance(layer.operator, Conv2dOperator):
            graph.conv(layer.operator, layer.bias, i)
        else:
            graph.gemm(layer, i)
        op = _onnx_op(layer.activation, i)
        if op is not None:
            attrs = {} if layer.activation.parameter is None else {
                "alpha": float(layer.activation.parameter)}
            graph.node(op, [graph.data], f"layer{i}.{op.lower()}", **attrs)
    graph.flatten("output.flatten")
    graph.nodes[-1].output[0] = output_name  # the last node's output is the graph's
    model = helper.make_model(
        helper.make_graph(
            graph.nodes, "layerinv",
            [helper.make_tensor_value_info(input_name, elem, ["batch", layers[0].n_in])],
            [helper.make_tensor_value_info(output_name, elem, ["batch", layers[-1].n_out])],
            initializer=graph.inits),
        producer_name="layerinv", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model


class _Graph:
    """The graph being written: its nodes and initializers, the data tensor, and the data's
    image shape (C, H, W) where it is 4-D (None: flat (batch, n), as layerinv's vectors)."""

    def __init__(self, data: str, dtype: str):
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.data, self.dtype = data, dtype
        self.image: tuple[int, int, int] | None = None

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(_onnx().numpy_helper.from_array(value, name))
        return name

    def param(self, name: str, value: np.ndarray) -> str:
        """A weight, kernel or bias, in the dtype of the file."""
        return self.const(name, value.astype(self.dtype))

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> None:
        """A node on the data; its output (named as the node) is the data after it."""
        self.nodes.append(_onnx().helper.make_node(op, inputs, [name], name=name, **attrs))
        self.data = name

    def flatten(self, name: str) -> None:
        if self.image is not None:
            self.node("Flatten", [self.data], name, axis=1)
            self.image = None

    def gemm(self, layer: Layer, i: int) -> None:
        self.flatten(f"layer{i}.flatten")
        # An export: the file holds the dense matrix.
        inputs = [self.data, self.param(f"layer{i}.weight", layer.operator.to_dense())]
        if layer.bias is not None:
            inputs.append(self.param(f"layer{i}.bias", layer.bias))
        self.node("Gemm", inputs, f"layer{i}.gemm", transB=1)

    def conv(self, op: Conv2dOperator, bias: np.ndarray | None, i: int) -> None:
        if self.image != op.input_shape:  # flat vectors (or another image) -> the input image
            shape = self.const(f"layer{i}.image_shape",
                               np.array([-1, *op.input_shape], dtype=np.int64))
            self.node("Reshape", [self.data, shape], f"layer{i}.to_image")
        inputs = [self.data, self.param(f"layer{i}.kernel", op.kernel)]
        per_channel = None if bias is None else _per_channel(bias, op.output_shape)
        if per_channel is not None:
            inputs.append(self.param(f"layer{i}.bias", per_channel))
        kind = "ConvTranspose" if op.transposed else "Conv"
        extra = {"output_padding": list(op.output_padding)} if op.transposed else {}
        self.node(kind, inputs, f"layer{i}.{kind.lower()}", kernel_shape=list(
            op.kernel.shape[2:]), strides=list(op.stride), pads=[*op.padding, *op.padding],
            dilations=list(op.dilation), group=1, **extra)
        self.image = op.output_shape
        if bias is not None and per_channel is None:  # a bias that varies within a channel
            self.node("Add", [self.data, self.param(f"layer{i}.bias", bias.reshape(
                op.output_shape))], f"layer{i}.add")


def _onnx_op(activation: Activation, index: int) -> str | None:
    """The ONNX op of a layer's activation (None for identity: the Gemm alone)."""
    if activation.torch_name is None:
        return None
    if activation.torch_name not in _ONNX_OF_TORCH:
        raise UnsupportedLayerError(f"layer {index}: activation {activation!r} has no ONNX op "
                                    f"here; supported: {', '.join(_ACTIVATION_OPS)}")
    return _ONNX_OF_TORCH[activation.torch_name]


def layers_to_onnx(layers: Sequence[Layer], path: str | os.PathLike[str], *,
                   dtype: str = "float64") -> None:
    """Write `model_from_layers(layers, dtype=dtype)` to `path` (an .onnx file)."""
    model = model_from_layers(layers, dtype=dtype)
    try:
        with open(path, "wb") as handle:
            handle.write(model.SerializeToString())
    except OSError as exc:
        raise OutputError(f"could not write the ONNX file {os.fspath(path)!r}: {exc}") from None
