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

from layerinv.activations import (
    TORCH_MODULES,
    Activation,
    Identity,
    activation_from_torch,
    get_activation,
)
from layerinv.errors import InputError, NetworkFileError, UnsupportedLayerError
from layerinv.layers import Layer, check_chain

SUPPORTED_MODULES = ("Linear", *TORCH_MODULES, "Identity", "Flatten (first only)",
                     "Unflatten (last only)")
# Keys under which training scripts commonly nest the state dict in a checkpoint.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict")
_MAX_KEYS_SHOWN = 20


# --------------------------------------------------------------------- module -> layers
def layers_from_module(module: nn.Module) -> list[Layer]:
    """The layers of a Network equal to an nn.Sequential of Linear layers, each followed by at
    most one activation; anything the layer LPs cannot represent is refused with its path.

    Nested Sequentials are flattened; nn.Identity is a no-op and skipped; nn.Flatten may open
    and nn.Unflatten may close the model (image decoders) and are dropped.
    """
    if isinstance(module, nn.Linear):
        # PyTorch conversion, an export's reverse: module.weight is the nn.Linear's tensor.
        return [Layer(_to_numpy(module.weight), _bias(module), Identity())]
    if not isinstance(module, nn.Module):
        raise InputError(f"module must be a torch.nn.Sequential; got {type(module).__name__}")
    if not isinstance(module, nn.Sequential):
        raise UnsupportedLayerError(
            f"module must be a torch.nn.Sequential (or a single nn.Linear); got "
            f"{type(module).__name__}. Wrap the decoder in nn.Sequential, or use "
            f"Network.from_state_dict with the names of its Linear layers"
        )
    children = list(_flatten(module, ""))
    layers: list[Layer] = []
    pending: nn.Linear | None = None
    for index, (path, child) in enumerate(children):
        if isinstance(child, nn.Linear):
            if pending is not None:
                layers.append(_layer(pending, Identity()))
            pending = child
        elif (activation := activation_from_torch(child, path)) is not None:
            if pending is None:
                raise UnsupportedLayerError(
                    f"{type(child).__name__} at index {path} does not follow a Linear layer: "
                    f"each activation must come right after one Linear"
                )
            layers.append(_layer(pending, activation))
            pending = None
        elif not _is_edge_reshape(child, index, len(children)):
            raise _unsupported(child, path)
    if pending is not None:
        layers.append(_layer(pending, Identity()))
    if not layers:
        raise UnsupportedLayerError("the Sequential holds no Linear layer")
    return check_chain(layers)


def _flatten(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    """(path, module) for every non-Sequential, non-Identity leaf, paths like '1.0'."""
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            yield from _flatten(child, path + ".")
        elif not isinstance(child, nn.Identity):
            yield path, child


def _is_edge_reshape(module: nn.Module, index: int, count: int) -> bool:
    return ((isinstance(module, nn.Flatten) and index == 0)
            or (isinstance(module, nn.Unflatten) and index == count - 1))


def _unsupported(module: nn.Module, path: str) -> UnsupportedLayerError:
    name = type(module).__name__
    where = ""
    if isinstance(module, nn.Flatten | nn.Unflatten):
        where = " (Flatten is allowed only first and Unflatten only last)"
    return UnsupportedLayerError(
        f"{name} at index {path} is not supported{where}; supported modules: "
        f"{', '.join(SUPPORTED_MODULES)}"
    )


def _layer(linear: nn.Linear, activation: Activation) -> Layer:
    # PyTorch conversion, an export's reverse: linear.weight is the nn.Linear's tensor.
    return Layer(_to_numpy(linear.weight), _bias(linear), activation)


def _bias(linear: nn.Linear) -> np.ndarray | None:
    return None if linear.bias is None else _to_numpy(linear.bias)


def _to_numpy(value: Any) -> Any:
    """Tensors (any dtype, any device) as float64 numpy; other values are left to Layer."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return value


# --------------------------------------------------------------------- layers -> module
def module_from_layers(layers: Sequence[Layer]) -> nn.Sequential:
    """An nn.Sequential (float32, CPU) computing the same map, for use in PyTorch code.

    Identity layers emit no activation module, which `layers_from_module` reads back as
    identity, so the round trip keeps weights and activations.
    """
    modules: list[nn.Module] = []
    for i, layer in enumerate(layers):
        linear = nn.Linear(layer.n_in, layer.n_out, bias=layer.bias is not None)
        with torch.no_grad():
            # An export: nn.Linear holds the dense matrix (linear.weight: torch's parameter).
            linear.weight.copy_(torch.from_numpy(layer.operator.to_dense()))
            if layer.bias is not None:
                linear.bias.copy_(torch.from_numpy(layer.bias))
        modules.append(linear)
        act = _activation_module(layer.activation, i)
        if act is not None:
            modules.append(act)
    return nn.Sequential(*modules).to(dtype=torch.float32, device="cpu")


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
