"""Argument checks shared by the public functions."""

from __future__ import annotations

import numbers

import numpy as np

from .errors import InputError


def as_float_array(value: object, name: str) -> np.ndarray:
    """Return `value` as a float64 array, or raise an InputError naming `name`."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{name} must be a numeric array; got {type(value).__name__} ({exc})"
        ) from None
    return array


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise an InputError naming `name` and the first bad position if `array` has NaN/Inf."""
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(array[where]) else "Inf"
        raise InputError(
            f"{name} must be finite; found {kind} at index {where} "
            f"({int(bad.sum())} non-finite entries in all)"
        )


def check_batch(value: object, width: int, name: str) -> tuple[np.ndarray, bool]:
    """Validate a vector (width,) or a batch (B, width).

    Returns the batch as a (B, width) float64 array and whether the input was a single vector.
    """
    array = as_float_array(value, name)
    if array.ndim == 1:
        single = True
        array = array[None, :]
    elif array.ndim == 2:
        single = False
    else:
        raise InputError(
            f"{name} must have shape ({width},) or (batch, {width}); got shape {array.shape}"
        )
    if array.shape[1] != width:
        raise InputError(
            f"{name} must have {width} entries per sample (shape ({width},) or (batch, {width})); "
            f"got shape {array.shape}"
        )
    if array.shape[0] == 0:
        raise InputError(f"{name} must hold at least one sample; got shape {array.shape}")
    check_finite(array, name)
    return array, single


def check_positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    """Return `value` as a float after checking it is a finite (non-negative or) positive number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a real number; got {value!r}")
    number = float(value)
    if not np.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        expected = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise InputError(f"{name} must be {expected}; got {value!r}")
    return number


def check_choice(value: object, choices: tuple[str, ...], name: str) -> str:
    """Return `value` if it is one of `choices`, else raise an InputError listing them."""
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return str(value)


def make_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A numpy Generator from a seed or an existing Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise InputError(f"seed must be an int, a numpy Generator or None; got {seed!r}")
    return np.random.default_rng(seed)


def load_npy(path: str, name: str) -> np.ndarray:
    """A .npy array for the command-line option `name`, or an InputError naming both."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{name}: file {path!r} does not exist") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{name}: {path!r} is not a readable .npy array: {exc}") from None
