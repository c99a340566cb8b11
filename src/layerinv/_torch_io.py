"""Conversion between layerinv networks and PyTorch modules or checkpoints.

Only imported lazily (by `Network.from_torch`, `from_state_dict` and `to_torch`), so layerinv
works without PyTorch installed. Everything is converted to float64 numpy on the CPU, because
the layer LPs are solved in float64 whatever precision or device the model was trained in.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from layerinv._affine import AffineChain, batch_norm_affine
from layerinv.activations import (
    TORCH_MODULES,
    Activation,
    Identity,
    activation_from_torch,
    get_activation,
)
from layerinv.convolution import Conv2dOperator
from layerinv.errors import InputError, NetworkFileError, UnsupportedLayerError
from layerinv.layers import Layer, check_chain
from layerinv.operators import DenseOperator, LinearOperator, ProductOperator

SUPPORTED_MODULES = (
    "Linear", "Conv2d", "ConvTranspose2d (groups=1, zero padding)",
    "BatchNorm1d", "BatchNorm2d (eval mode, running statistics)", "Dropout (eval mode)",
    "Upsample", "UpsamplingNearest2d (nearest, integer scale)",
    "AvgPool2d (no ceil_mode; count_include_pad or no padding)", "Flatten", "Unflatten",
    *TORCH_MODULES, "Identity", "layerinv's Bias",
)
# Keys under which training scripts commonly nest the state dict in a checkpoint.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict")
_MAX_KEYS_SHOWN = 20
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)


class Bias(nn.Module):
    """x + bias for a fixed tensor of one sample's shape: what `to_torch` emits where a layer's
    bias fits no module before it (after an upsampling or a pooling), read back by from_torch."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = nn.Parameter(bias.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


# --------------------------------------------------------------------- module -> layers
def layers_from_module(module: nn.Module, input_shape: Sequence[int] | None = None
                       ) -> list[Layer]:
    """The layers of a Network equal to an nn.Sequential in eval mode; anything the layers
    cannot represent is refused with its index path.

    Between two activations, the affine modules (Linear, convolutions, batch norms, poolings,
    upsamplings, reshapes, eval-mode dropouts) form one layer's operator and bias, except that
    each Linear or convolution after another one starts a new layer (the one before gets the
    identity activation, as a Linear alone did). Nested Sequentials are flattened; nn.Identity
    is a no-op. The network's vectors are flat, in C-order of each image (C, H, W); the shape
    is followed through the modules, and a convolution's input shape must be known: from an
    Unflatten or a convolution before it, or `input_shape` (one sample's shape) for the first.
    """
    shape = _input_shape(input_shape)
    if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
        children = [("0", module)]
    elif not isinstance(module, nn.Module):
        raise InputError(f"module must be a torch.nn.Sequential; got {type(module).__name__}")
    elif not isinstance(module, nn.Sequential):
        raise UnsupportedLayerError(
            f"module must be a torch.nn.Sequential (or a single nn.Linear or convolution); got "
            f"{type(module).__name__}. Wrap the decoder in nn.Sequential, or use "
            f"Network.from_state_dict with the names of its Linear layers"
        )
    else:
        children = list(_flatten(module, ""))
    layers: list[Layer] = []
    chain: AffineChain | None = None
    for path, child in children:
        activation = activation_from_torch(child, path)
        if activation is not None:
            if chain is None:
                raise UnsupportedLayerError(
                    f"{type(child).__name__} at index {path} does not follow a Linear layer "
                    f"or another linear module: each activation must come after one")
            layers.append(_close(chain, activation, path))
            chain = None
            continue
        if isinstance(child, nn.Flatten | nn.Unflatten):
            shape = _reshape(child, shape, path)
            continue
        if isinstance(child, _DROPOUTS):
            _check_eval(child, path, "is random in training mode")
            continue
        weighted = isinstance(child, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)
        if weighted and chain is not None and chain.weighted:
            layers.append(_close(chain, Identity(), path))
            chain = None
        step = _affine_step(child, shape, path)
        if chain is None:
            chain = AffineChain()
        if step.operator is not None:
            chain.add(step.operator, step.bias, weighted)
        else:
            chain.affine(step.scale, step.shift)
        shape = step.output_shape
    if chain is not None:
        layers.append(_close(chain, Identity(), "the end"))
    if not layers:
        raise UnsupportedLayerError("the Sequential holds no Linear layer or other linear "
                                    "module (a convolution, a pooling, an upsampling)")
    return check_chain(layers)


def _close(chain: AffineChain, activation: Activation, path: str) -> Layer:
    try:
        return chain.layer(activation)
    except InputError as exc:
        raise UnsupportedLayerError(f"the layer closed at index {path}: {exc}") from None


def _input_shape(value: Sequence[int] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value)
        ok = len(shape) >= 1 and min(shape) >= 1 and all(int(v) == v for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"input_shape must be one sample's shape, a tuple of positive ints "
                         f"such as (C, H, W); got {value!r}")
    return shape


def _flatten(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """(path, module) for every non-Sequential, non-Identity leaf, paths like '1.0'."""
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            yield from _flatten(child, path + ".")
        elif not isinstance(child, nn.Identity):
            yield path, child


def _unsupported(module: nn.Module, path: str, why: str = "") -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"{type(module).__name__} at index {path} is not supported{why}; supported modules: "
        f"{', '.join(SUPPORTED_MODULES)}"
    )


def _check_eval(module: nn.Module, path: str, why: str) -> None:
    if module.training:
        raise UnsupportedLayerError(
            f"{type(module).__name__} at index {path} is in training mode, where it {why}; "
            f"call module.eval() before converting")


def _reshape(module: nn.Flatten | nn.Unflatten, shape: tuple[int, ...] | None, path: str
             ) -> tuple[int, ...] | None:
    """One sample's shape after a Flatten or Unflatten (None: not known yet)."""
    if shape is None:
        if isinstance(module, nn.Unflatten) and module.dim in (1, -1) and -1 not in tuple(
                module.unflattened_size):
            return tuple(int(v) for v in module.unflattened_size)
        if isinstance(module, nn.Flatten):
            return None
        raise UnsupportedLayerError(
            f"{type(module).__name__} at index {path} comes before the input's shape is known; "
            f"pass input_shape=(...) (one sample's shape) to Network.from_torch")
    try:
        with torch.device("meta"):
            return tuple(module(torch.empty((1, *shape))).shape[1:])
    except RuntimeError as exc:
        raise UnsupportedLayerError(
            f"{type(module).__name__} at index {path} cannot reshape one sample of shape "
            f"{shape}: {_first_line(exc)}") from None


class _Step:
    """One affine module: x -> operator x + bias, or x -> scale * x + shift (a batch norm)."""

    def __init__(self, n_in: int, output_shape: tuple[int, ...], *,
                 operator: LinearOperator | None = None, bias: np.ndarray | None = None,
                 scale: np.ndarray | None = None, shift: np.ndarray | None = None):
        self.n_in, self.output_shape = n_in, output_shape
        self.operator, self.bias, self.scale, self.shift = operator, bias, scale, shift


def _affine_step(child: nn.Module, shape: tuple[int, ...] | None, path: str) -> _Step:
    if isinstance(child, nn.Linear):
        return _linear_step(child, shape, path)
    if isinstance(child, _BATCH_NORMS):
        return _batch_norm_step(child, shape, path)
    if isinstance(child, Bias):
        bias = _to_numpy(child.bias)
        if shape is not None and bias.shape != shape:
            raise UnsupportedLayerError(f"Bias at index {path} has shape {bias.shape} but its "
                                        f"input has shape {shape}")
        return _Step(bias.size, bias.shape, scale=np.ones(bias.size), shift=bias.reshape(-1))
    if isinstance(child, (*_CONVOLUTIONS, nn.Upsample, nn.AvgPool2d)):
        image = _image(child, shape, path)
        operator, bias = _image_operator(child, image, path)
        return _Step(operator.n_in, operator.output_shape, operator=operator, bias=bias)
    raise _unsupported(child, path)


def _linear_step(linear: nn.Linear, shape: tuple[int, ...] | None, path: str) -> _Step:
    if shape is not None and shape != (linear.in_features,):
        what = ("a flat input" if len(shape) != 1 else f"{linear.in_features} inputs")
        raise UnsupportedLayerError(
            f"Linear at index {path} takes {what} but gets shape {shape}"
            + ("; add nn.Flatten() before it" if len(shape) != 1 else ""))
    # PyTorch conversion, an export's reverse: module.weight is the nn.Linear's tensor.
    weight = _to_numpy(linear.weight)
    return _Step(linear.in_features, (linear.out_features,), operator=DenseOperator(weight),
                 bias=_bias(linear))


def _batch_norm_step(norm: nn.Module, shape: tuple[int, ...] | None, path: str) -> _Step:
    _check_eval(norm, path, "normalises by the batch's statistics and updates its running "
                            "ones")
    if norm.running_mean is None:
        raise UnsupportedLayerError(
            f"{type(norm).__name__} at index {path} has no running statistics "
            f"(track_running_stats=False), so it normalises by the batch's even in eval mode")
    dims = (1, 2) if isinstance(norm, nn.BatchNorm1d) else (3,)
    if shape is None and isinstance(norm, nn.BatchNorm1d):
        shape = (norm.num_features,)
    if shape is None or len(shape) not in dims or shape[0] != norm.num_features:
        expected = "(C,) or (C, L)" if dims == (1, 2) else "(C, H, W)"
        raise UnsupportedLayerError(
            f"{type(norm).__name__} at index {path} takes inputs of shape {expected} with "
            f"C = {norm.num_features} but gets shape {shape}"
            + ("; pass input_shape=(...) to Network.from_torch" if shape is None else ""))
    # PyTorch import (an export's reverse): norm.weight is gamma, a vector
    gamma = _to_numpy(norm.weight) if norm.affine else None
    scale, shift = batch_norm_affine(shape, _to_numpy(norm.running_mean),
                                     _to_numpy(norm.running_var), norm.eps, gamma,
                                     _to_numpy(norm.bias) if norm.affine else None)
    return _Step(int(np.prod(shape)), shape, scale=scale, shift=shift)


def _image(child: nn.Module, shape: tuple[int, ...] | None, path: str) -> tuple[int, int, int]:
    name = type(child).__name__
    if shape is None:
        raise UnsupportedLayerError(
            f"{name} at index {path} needs its input image's shape: pass "
            f"input_shape=(C, H, W) to Network.from_torch, or put nn.Unflatten(1, (C, H, W)) "
            f"before it")
    if len(shape) != 3:
        raise UnsupportedLayerError(
            f"{name} at index {path} takes an image (C, H, W) but gets shape {shape}"
            + ("; put nn.Unflatten(1, (C, H, W)) before it" if len(shape) == 1 else ""))
    channels = getattr(child, "in_channels", shape[0])
    if shape[0] != channels:
        raise UnsupportedLayerError(f"{name} at index {path} takes {channels} channels but "
                                    f"gets shape {shape}")
    return shape[0], shape[1], shape[2]


def _image_operator(child: nn.Module, image: tuple[int, int, int], path: str
                    ) -> tuple[Conv2dOperator, np.ndarray | None]:
    """A convolution, an upsampling or a pooling as a convolution operator, and its bias."""
    try:
        if isinstance(child, nn.Upsample):
            return _upsample(child, image, path), None
        if isinstance(child, nn.AvgPool2d):
            return _avg_pool(child, image, path), None
        return _convolution(child, image, path)
    except InputError as exc:
        raise UnsupportedLayerError(f"{type(child).__name__} at index {path}: {exc}") from None


def _convolution(conv: nn.Conv2d | nn.ConvTranspose2d, image: tuple[int, int, int], path: str
                 ) -> tuple[Conv2dOperator, np.ndarray | None]:
    if conv.groups != 1:
        raise _unsupported(conv, path, f" with groups={conv.groups} (only groups=1)")
    if conv.padding_mode != "zeros":
        raise _unsupported(conv, path, f" with padding_mode={conv.padding_mode!r} (only "
                                       f"'zeros')")
    padding = conv.padding
    if isinstance(padding, str):  # Conv2d's 'valid' or 'same' (stride 1)
        padding = _same_padding(conv, path) if padding == "same" else (0, 0)
    transposed = isinstance(conv, nn.ConvTranspose2d)
    # PyTorch conversion, an export's reverse: module.weight is the convolution's kernel.
    kernel = _to_numpy(conv.weight)
    operator = Conv2dOperator(
        kernel, image, stride=tuple(conv.stride), padding=tuple(padding),
        dilation=tuple(conv.dilation), transposed=transposed,
        output_padding=tuple(conv.output_padding) if transposed else 0)
    bias = None
    if conv.bias is not None:
        bias = np.repeat(_to_numpy(conv.bias), operator.output_shape[1] * operator.output_shape[2])
    return operator, bias


def _same_padding(conv: nn.Conv2d, path: str) -> tuple[int, int]:
    total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
    if any(t % 2 for t in total):
        raise _unsupported(conv, path, " with padding='same' and an even kernel extent "
                                       "(PyTorch pads it unevenly)")
    return total[0] // 2, total[1] // 2


def _upsample(up: nn.Upsample, image: tuple[int, int, int], path: str) -> Conv2dOperator:
    """Nearest upsampling by an integer factor s: ConvTranspose2d(C, C, s, stride=s) with the
    identity kernel (output pixel (i s + a, j s + b) copies input pixel (i, j))."""
    if up.mode != "nearest":
        raise _unsupported(up, path, f" with mode={up.mode!r} (only 'nearest')")
    factors = _upsample_factors(up, image)
    if factors is None:
        raise _unsupported(up, path, f" with size={up.size!r}, scale_factor="
                                     f"{up.scale_factor!r} on an input of shape {image} (only "
                                     f"integer scale factors)")
    channels = image[0]
    kernel = np.zeros((channels, channels, *factors))
    kernel[np.arange(channels), np.arange(channels)] = 1.0
    return Conv2dOperator(kernel, image, stride=factors, transposed=True)


def _upsample_factors(up: nn.Upsample, image: tuple[int, int, int]) -> tuple[int, int] | None:
    if up.size is not None:
        size = up.size if isinstance(up.size, tuple | list) else (up.size, up.size)
        if len(size) != 2 or any(int(n) % m for n, m in zip(size, image[1:], strict=True)):
            return None
        return int(size[0]) // image[1], int(size[1]) // image[2]
    scale = up.scale_factor
    scale = tuple(scale) if isinstance(scale, tuple | list) else (scale, scale)
    if len(scale) != 2 or any(float(f) != int(f) or f < 1 for f in scale):
        return None
    return int(scale[0]), int(scale[1])


def _avg_pool(pool: nn.AvgPool2d, image: tuple[int, int, int], path: str) -> Conv2dOperator:
    """Average pooling: a convolution whose kernel is 1/divisor on the diagonal channels."""
    kernel_size = _two(pool.kernel_size)
    stride = _two(pool.stride if pool.stride else pool.kernel_size)
    padding = _two(pool.padding)
    if pool.ceil_mode:
        raise _unsupported(pool, path, " with ceil_mode=True")
    if not pool.count_include_pad and padding != (0, 0):
        raise _unsupported(pool, path, " with count_include_pad=False and padding")
    divisor = pool.divisor_override or kernel_size[0] * kernel_size[1]
    channels = image[0]
    kernel = np.zeros((channels, channels, *kernel_size))
    kernel[np.arange(channels), np.arange(channels)] = 1.0 / divisor
    return Conv2dOperator(kernel, image, stride=stride, padding=padding)


def _two(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, tuple | list) else (
        int(value), int(value))


def _bias(linear: nn.Module) -> np.ndarray | None:
    return None if linear.bias is None else _to_numpy(linear.bias)


def _to_numpy(value: Any) -> Any:
    """Tensors (any dtype, any device) as float64 numpy; other values are left to Layer."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return value


# --------------------------------------------------------------------- layers -> module
def module_from_layers(layers: Sequence[Layer], dtype: torch.dtype = torch.float32
                       ) -> nn.Sequential:
    """An nn.Sequential (on the CPU, of `dtype`) computing the same map on flat (B, n) tensors.

    Each operator becomes its modules (a product: one per factor, the first applied first):
    a dense or sparse matrix an nn.Linear (the dense export), a convolution an nn.Conv2d or
    nn.ConvTranspose2d, or nn.Upsample / nn.AvgPool2d where its kernel is theirs; nn.Unflatten
    and nn.Flatten go where the shape changes between flat and image, and a last Flatten
    returns flat outputs. A layer's bias goes into its last module, or a `Bias` module after
    it where that module has none or a per-channel bias cannot hold it. Identity layers emit
    no activation module, which `layers_from_module` reads back as identity (a Linear or a
    convolution starts a new layer), so the round trip keeps the layers.
    """
    modules: list[nn.Module] = []
    shape: tuple[int, ...] = (layers[0].n_in,) if layers else ()
    for i, layer in enumerate(layers):
        operator = layer.operator
        factors = list(operator.factors) if isinstance(operator, ProductOperator) else [operator]
        for k, factor in enumerate(reversed(factors)):
            bias = layer.bias if k == len(factors) - 1 else None
            shape = _append_factor(modules, factor, bias, shape)
        act = _activation_module(layer.activation, i)
        if act is not None:
            modules.append(act)
    if len(shape) != 1:
        modules.append(nn.Flatten())
    return nn.Sequential(*modules).to(dtype=dtype, device="cpu")


def _append_factor(modules: list[nn.Module], factor: LinearOperator, bias: np.ndarray | None,
                   shape: tuple[int, ...]) -> tuple[int, ...]:
    """Appends the modules of one operator (and its bias); returns the shape after them."""
    if isinstance(factor, Conv2dOperator):
        if shape != factor.input_shape:
            if len(shape) != 1:
                modules.append(nn.Flatten())
            modules.append(nn.Unflatten(1, factor.input_shape))
        module, takes_bias = _image_module(factor, bias)
        modules.append(module)
        out_shape: tuple[int, ...] = factor.output_shape
    else:
        if len(shape) != 1:
            modules.append(nn.Flatten())
        module = nn.Linear(factor.n_in, factor.n_out, bias=bias is not None, dtype=torch.float64)
        with torch.no_grad():
            # An export: nn.Linear holds the dense matrix (linear.weight: torch's parameter).
            linear = module
            linear.weight.copy_(torch.from_numpy(factor.to_dense()))
            if bias is not None:
                linear.bias.copy_(torch.from_numpy(bias))
        modules.append(module)
        takes_bias, out_shape = True, (factor.n_out,)
    if bias is not None and not takes_bias:
        modules.append(Bias(torch.from_numpy(bias.reshape(out_shape))))
    return out_shape


def _image_module(op: Conv2dOperator, bias: np.ndarray | None) -> tuple[nn.Module, bool]:
    """The module of a convolution operator, and whether it took the bias."""
    if (special := _pooling_or_upsampling(op)) is not None:
        return special, False
    per_channel = None
    if bias is not None:
        by_channel = bias.reshape(op.output_shape[0], -1)
        if np.all(by_channel == by_channel[:, :1]):
            per_channel = by_channel[:, 0]
    kind = nn.ConvTranspose2d if op.transposed else nn.Conv2d
    extra = {"output_padding": op.output_padding} if op.transposed else {}
    module = kind(op.input_shape[0], op.output_shape[0], op.kernel.shape[2:], stride=op.stride,
                  padding=op.padding, dilation=op.dilation, bias=per_channel is not None,
                  dtype=torch.float64, **extra)
    with torch.no_grad():
        # An export: the convolution's kernel is the module's parameter (conv.weight).
        conv = module
        conv.weight.copy_(torch.tensor(op.kernel))
        if per_channel is not None:
            conv.bias.copy_(torch.from_numpy(per_channel))
    return module, per_channel is not None or bias is None


def _pooling_or_upsampling(op: Conv2dOperator) -> nn.Module | None:
    """nn.Upsample or nn.AvgPool2d where the operator's kernel is what from_torch makes of
    them (a diagonal kernel of one value), else None."""
    channels, kh, kw = op.input_shape[0], *op.kernel.shape[2:]
    if op.output_shape[0] != channels or op.dilation != (1, 1):
        return None
    value = op.kernel[0, 0, 0, 0]
    diagonal = np.zeros_like(op.kernel)
    diagonal[np.arange(channels), np.arange(channels)] = value
    if not np.array_equal(op.kernel, diagonal):
        return None
    if (op.transposed and value == 1.0 and op.stride == (kh, kw) and op.padding == (0, 0)
            and op.output_padding == (0, 0)):
        return nn.Upsample(scale_factor=(float(kh), float(kw)), mode="nearest")
    if not op.transposed and all(2 * p <= k for p, k in zip(op.padding, (kh, kw), strict=True)):
        if value == 1.0 / (kh * kw):
            return nn.AvgPool2d((kh, kw), op.stride, op.padding)
        divisor = round(1.0 / value) if value > 0 else 0
        if divisor >= 1 and value == 1.0 / divisor:
            return nn.AvgPool2d((kh, kw), op.stride, op.padding, divisor_override=divisor)
    return None


def _activation_module(act: Activation, index: int) -> nn.Module | None:
    """Layer `index`'s activation as a module (`Activation.to_torch`), None for identity."""
    try:
        return act.to_torch()
    except UnsupportedLayerError as exc:
        raise UnsupportedLayerError(f"layer {index}: {exc}") from None


# --------------------------------------------------------------------- state dicts
def layers_from_state_dict(state: str | os.PathLike[str] | Mapping[str, Any], *,
                          layers: Sequence[str],
                          activations: Sequence[str | Activation]) -> list[Layer]:
    """The layers of a Network from named Linear weights in a checkpoint, e.g. the decoder of a
    larger model.

    `state` is a path to a torch.save file (loaded with weights_only=True, so a checkpoint that
    would run code is refused), a state dict, or a checkpoint dict holding one under
    'state_dict' or 'model_state_dict'. Layer i uses `{layers[i]}.weight`, the optional
    `{layers[i]}.bias` and `activations[i]`.
    """
    prefixes, acts = _check_layer_specs(layers, activations)
    if isinstance(state, str | os.PathLike):
        source, error = f"checkpoint {os.fspath(state)!r}", NetworkFileError
        loaded = _load_checkpoint(state)
    elif isinstance(state, Mapping):
        source, error, loaded = "the state dict", InputError, state
    else:
        raise InputError(f"state must be a path or a state dict; got {type(state).__name__}")
    tensors = _unwrap(loaded, source, error)
    built = [_state_layer(tensors, p, a, source, error)
             for p, a in zip(prefixes, acts, strict=True)]
    try:
        return check_chain(built)
    except InputError as exc:
        raise error(f"{source}: layers {prefixes}: {exc}") from None


def _check_layer_specs(layers: Sequence[str], activations: Sequence[str | Activation]
                       ) -> tuple[list[str], list[Activation]]:
    if isinstance(layers, str) or not all(isinstance(p, str) for p in layers):
        raise InputError(f"layers must be a list of name prefixes such as ['fc3', 'fc4']; "
                         f"got {layers!r}")
    if isinstance(activations, str | Activation):
        raise InputError(f"activations must be a list with one entry per layer; "
                         f"got {activations!r}")
    if not layers:
        raise InputError("layers must name at least one layer; got an empty list")
    if len(activations) != len(layers):
        raise InputError(f"activations must have one entry per layer: layers has {len(layers)} "
                         f"entries but activations has {len(activations)}")
    return list(layers), [get_activation(a) for a in activations]


def _load_checkpoint(path: str | os.PathLike[str]) -> Any:
    name = os.fspath(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise NetworkFileError(f"checkpoint {name!r} does not exist") from None
    except pickle.UnpicklingError as exc:
        raise NetworkFileError(
            f"checkpoint {name!r} was refused for safety: it holds objects other than tensors "
            f"and plain containers, which could run code when unpickled (or it is not a PyTorch "
            f"checkpoint at all), so torch.load(weights_only=True) would not read it. "
            f"Detail: {_unpickling_detail(exc)}"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:
        raise NetworkFileError(
            f"checkpoint {name!r} is not a readable PyTorch checkpoint (corrupt, truncated or "
            f"another format): {type(exc).__name__}: {_first_line(exc)}"
        ) from None


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _unpickling_detail(exc: Exception) -> str:
    """The line of torch's long weights_only message that says what was found."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if line.startswith(("Unsupported", "Trying to load"))]
    return (specific or lines or [type(exc).__name__])[0]


def _unwrap(loaded: Any, source: str, error: type[Exception]) -> Mapping[str, Any]:
    if not isinstance(loaded, Mapping):
        raise error(f"{source} holds a {type(loaded).__name__}, not a state dict")
    for key in CHECKPOINT_KEYS:
        if isinstance(loaded.get(key), Mapping):
            return loaded[key]
    return loaded


def _state_layer(tensors: Mapping[str, Any], prefix: str, act: Activation, source: str,
                 error: type[Exception]) -> Layer:
    key = f"{prefix}.weight"
    if key not in tensors:
        raise error(f"{source} has no entry {key!r}; available keys: {_key_list(tensors)}")
    try:
        return Layer(_to_numpy(tensors[key]), _to_numpy(tensors.get(f"{prefix}.bias")), act)
    except InputError as exc:
        raise error(f"{source}: layer {prefix!r}: {exc}") from None


def _key_list(tensors: Mapping[str, Any]) -> str:
    keys = [str(k) for k in tensors]
    shown = ", ".join(repr(k) for k in keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return shown + (f", ... ({more} more)" if more > 0 else "") if keys else "(none)"
