"""Conversion between layerinv layers and ONNX models (the `onnx` package, the `[onnx]` extra).

Only imported lazily (by `Network.from_onnx` / `to_onnx` and `layerinv.vnnlib`), so layerinv
works without onnx installed. Works on layer lists, as `_torch_io` does (network.py imports
this module, so it cannot import network.py back).

Reading (`layers_from_onnx`). A graph is read as one chain from its single input to its single
output, node by node in the file's (topological) order; every tensor is either a constant (an
initializer, a Constant node, or shape arithmetic folded here) or the data: the one tensor that
depends on the input. A data node must take the latest data tensor (a tensor used twice, or a
node joining two, is a branch: refused). What each data op does is one table entry:

- `_LINEAR_OPS` (Gemm, MatMul) open a layer with its linear operator (the table maps an op to
  an operator and a bias; the convolutional ops will be entries here);
- Add adds a constant to the open layer's bias;
- `_ACTIVATION_OPS` (Relu, LeakyRelu, Tanh, Sigmoid, Elu) close the open layer;
- `_RESHAPE_OPS` (Identity, Flatten, Reshape, Squeeze, Unsqueeze) only reshape: layerinv's
  vectors are the flattened (C order) per-sample tensors, so a reshape that keeps the batch
  axis first and the per-sample size is a no-op; one that moves the batch axis is refused.

A layer left open at the next linear op or at the end gets the identity activation. Shapes
are tracked with the batch size the file states, or a stand-in (`_BATCH_STAND_IN`) where it is
symbolic, so that the exporters' Shape -> Slice -> Concat -> Reshape chains fold to constants.
Every other dimension must be a number: a symbolic feature dimension is a shape that matters.

Writing (`model_from_layers`, `layers_to_onnx`) builds the graph with onnx.helper directly
(Gemm with transB=1 per layer, then its activation's node): no exporter, no PyTorch, and the
weights stay float64 unless dtype='float32' is asked for (what most verifiers load).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from layerinv.activations import Activation, get_activation
from layerinv.errors import InputError, NetworkFileError, OutputError, UnsupportedLayerError
from layerinv.layers import Layer, check_chain

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
# Convolutional ops wait for a convolution operator (operators.py): refused by name for now.
_NOT_YET = ("Conv", "ConvTranspose", "BatchNormalization")
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
    """The layers of a Network equal to an ONNX model: one chain of fully connected layers.

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
        self.open: list[Any] | None = None  # [operator, bias, node] of the layer being read

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
            raise UnsupportedLayerError(f"{self.where} holds no Gemm or MatMul: no layer")
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
        outputs = [o for o in node.output if o]
        if len(outputs) != 1:
            raise UnsupportedLayerError(f"{self.where}: {name} has {len(outputs)} outputs; a "
                                        f"chain node has one")
        op = node.op_type
        if op in _NOT_YET:
            raise UnsupportedLayerError(
                f"{self.where}: {name} is a convolutional op, not supported yet (layerinv "
                f"reads fully connected networks from ONNX for now); {_supported()}")
        if op in _LINEAR_OPS:
            self._close(get_activation("identity"))
            operator, bias, self.shape = _LINEAR_OPS[op](self, node, name)
            self.open = [operator, bias, name]
        elif op == "Add":
            self._add(node, name)
        elif op in _ACTIVATION_OPS:
            if self.open is None:
                raise UnsupportedLayerError(
                    f"{self.where}: {name} does not follow a Gemm or MatMul: each activation "
                    f"must come right after one linear op")
            self._close(_activation(node, name, self.where))
        elif op in _RESHAPE_OPS:
            self.shape = self._reshape(node, name, _RESHAPE_OPS[op](self, node))
        else:
            raise UnsupportedLayerError(f"{self.where}: {name} is not supported; "
                                        f"{_supported()}")
        self.used.add(self.data)
        self.data = outputs[0]
        self.shapes[self.data] = self.shape

    def _close(self, activation: Activation) -> None:
        if self.open is not None:
            operator, bias, name = self.open
            try:
                self.layers.append(Layer(operator, bias, activation))
            except InputError as exc:
                raise UnsupportedLayerError(f"{self.where}: {name}: {exc}") from None
            self.open = None

    def _add(self, node: Any, name: str) -> None:
        if self.open is None:
            raise UnsupportedLayerError(
                f"{self.where}: {name} does not follow a Gemm or MatMul: an Add of a constant "
                f"is read as the bias of the linear op right before it")
        other = [i for i in node.input if i != self.data]
        if len(other) != 1:
            raise UnsupportedLayerError(f"{self.where}: {name} adds the data to itself; only a "
                                        f"constant bias can be added")
        addend = self.float_const(other[0], name)
        bias = _bias_of(addend, self.shape, name, self.where)
        self.open[1] = bias if self.open[1] is None else self.open[1] + bias

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


_LINEAR_OPS: dict[str, Callable[[_Chain, Any, str], tuple[Any, Any, tuple[int, ...]]]] = {
    "Gemm": _gemm,
    "MatMul": _matmul,
}
"""ONNX op -> (linear operator or matrix (n_out, n_in), bias or None, output shape)."""


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

SUPPORTED_OPS = (*_LINEAR_OPS, "Add (a bias)", *_ACTIVATION_OPS, *_RESHAPE_OPS,
                 "Constant and shape arithmetic on constants")
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
    """An onnx.ModelProto computing the layers' map: per layer a Gemm (transB=1), then the
    activation's op (none for identity). Input (batch, k), output (batch, n), batch symbolic.

    dtype 'float64' keeps the weights exactly; 'float32' rounds them (what most verifiers and
    runtimes load; a verifier's answer is then about the rounded network). An activation's
    parameter (leaky_relu's slope, elu's alpha) is an ONNX attribute, which is float32 in
    every file: leaky_relu(0.3) is written, and read back, as leaky_relu(float32(0.3)) =
    leaky_relu(0.30000001192092896); slopes such as 0.25 or 0.5 stay exact.
    """
    onnx = _onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    if dtype not in ("float32", "float64"):
        raise InputError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    layers = check_chain(layers)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes, inits = [], []
    current = input_name
    for i, layer in enumerate(layers):
        # An export: the file holds the dense matrix.
        inits.append(numpy_helper.from_array(layer.operator.to_dense().astype(dtype),
                                             f"layer{i}.weight"))
        gemm_inputs = [current, f"layer{i}.weight"]
        if layer.bias is not None:
            inits.append(numpy_helper.from_array(layer.bias.astype(dtype), f"layer{i}.bias"))
            gemm_inputs.append(f"layer{i}.bias")
        last = i == len(layers) - 1
        op = _onnx_op(layer.activation, i)
        linear_out = output_name if last and op is None else f"layer{i}.linear"
        nodes.append(helper.make_node("Gemm", gemm_inputs, [linear_out], name=f"layer{i}.gemm",
                                      transB=1))
        current = linear_out
        if op is not None:
            out = output_name if last else f"layer{i}.out"
            attrs = {} if layer.activation.parameter is None else {
                "alpha": float(layer.activation.parameter)}
            nodes.append(helper.make_node(op, [current], [out], name=f"layer{i}.{op.lower()}",
                                          **attrs))
            current = out
    graph = helper.make_graph(
        nodes, "layerinv",
        [helper.make_tensor_value_info(input_name, elem, ["batch", layers[0].n_in])],
        [helper.make_tensor_value_info(output_name, elem, ["batch", layers[-1].n_out])],
        initializer=inits)
    model = helper.make_model(graph, producer_name="layerinv",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model


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
