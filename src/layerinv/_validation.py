"""Argument checks shared by the public functions."""

from __future__ import annotations

import argparse
import contextlib
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from layerinv.errors import InputError, OutputError


def as_float_array(value: object, name: str) -> np.ndarray:
    """Return `value` as a float64 array, or raise an InputError naming `name`.

    A complex array is refused: NumPy's cast would drop the imaginary part with only a
    ComplexWarning, and a network's outputs are real.
    """
    try:
        array = np.asarray(value)
        if np.iscomplexobj(array):
            raise InputError(f"{name} must be real; got a complex array (dtype {array.dtype}, "
                             f"shape {array.shape}); pass its .real or abs() if that is meant")
        array = array.astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
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
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or seed < 0):
        raise InputError(f"seed must be an int >= 0, a numpy Generator or None; got {seed!r}")
    return np.random.default_rng(seed)


# ------------------------------------------------------------------- command-line arguments
# Argparse `type=` checks: a bad value is refused while parsing, before any work, in one line
# ("argument --seed: must be an int >= 0; got '-1'"), exit status 2.
def int_arg(low: int) -> Callable[[str], int]:
    """An argparse type: an int >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {text!r}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def float_arg(low: float = 0.0, *, strict: bool = False,
              high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite float >= low (> low if strict), and <= high if given.

    NaN and the infinities are always refused: Python's float() accepts 'nan' and 'inf', and
    a NaN passes every comparison-based check written as `not value < low`.
    """
    expected = f"a finite number {'>' if strict else '>='} {low:g}"
    if high is not None:
        expected += f" and <= {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {expected}; got {text!r}") from None
        if not (np.isfinite(value) and (value > low if strict else value >= low)
                and (high is None or value <= high)):
            raise argparse.ArgumentTypeError(f"must be {expected}; got {text!r}")
        return value

    parse.__name__ = expected
    return parse


SEED = int_arg(0)
"""An argparse type for seeds: NumPy refuses negative seeds."""


def load_npy(path: str, name: str) -> np.ndarray:
    """A .npy array for the command-line option `name`, or an InputError naming both."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{name}: file {path!r} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{name}: {path!r} is a folder, not a .npy file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{name}: {path!r} is not a readable .npy array: {exc}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise InputError(f"{name}: {path!r} is an .npz archive; expected a .npy array "
                         f"(numpy.save)")
    if np.iscomplexobj(array):
        raise InputError(f"{name}: {path!r} holds a complex array (dtype {array.dtype}); "
                         f"expected real numbers (save its .real or abs() if that is meant)")
    return array


def output_path(path: str, name: str, *, suffix: str | None = None,
                inputs: Mapping[str, str | None] | None = None,
                create_folder: bool = False) -> Path:
    """The path an output option will be written to, checked before any work is done.

    `suffix` is appended when the path lacks it, as numpy.save does, so the caller prints and
    checks the file really written. Refused: an existing folder, a missing folder (unless
    `create_folder`), and a path that is one of `inputs` (option -> path), which would be
    overwritten. A folder that cannot be written to is an OutputError (a runtime failure).
    """
    if Path(path).is_dir():
        raise InputError(f"{name}: {path!r} is a folder; expected a file path to write")
    if suffix is not None and not path.endswith(suffix):
        path += suffix
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{name}: {path!r} is a folder; expected a file path to write")
    for option, given in (inputs or {}).items():
        if given is not None and _same_file(target, Path(given)):
            raise InputError(f"{name}: {path!r} is the file given to {option}; writing it "
                             f"would overwrite that input")
    folder = target.parent
    if not folder.is_dir():
        if folder.exists():
            raise InputError(f"{name}: {str(folder)!r} is not a folder, so {path!r} cannot "
                             f"be written")
        if not create_folder:
            raise InputError(f"{name}: the folder {str(folder)!r} of {path!r} does not exist")
    else:
        _probe_writable(target, name)
    return target


def check_distinct(paths: Mapping[str, Path | None]) -> None:
    """Refuse two output options naming the same file (the second would overwrite the first)."""
    given = [(name, path) for name, path in paths.items() if path is not None]
    for i, (name, path) in enumerate(given):
        for other, other_path in given[i + 1:]:
            if _same_file(path, other_path):
                raise InputError(f"{name} and {other} both name {str(path)!r}; give two files")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _temporary_name(target: Path) -> Path:
    real = Path(os.path.realpath(target))
    return real.with_name(f".{real.name}.{os.getpid()}.partial")


def _probe_writable(target: Path, name: str) -> None:
    """Create and remove a file beside `target`: the only reliable test (root, ACLs, read-only
    mounts, /proc) that the output can be written, and it runs before the work does."""
    probe = _temporary_name(target)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise OutputError(f"{name}: cannot write {str(target)!r}: "
                          f"{exc.strerror or exc}") from None
    probe.unlink(missing_ok=True)


def write_output(target: Path, name: str, write: Callable[[BinaryIO], object]) -> None:
    """Write a file through `write(handle)`, atomically: into a temporary file beside it, then
    renamed over it, so a full disk or a kill leaves no truncated output and never damages an
    existing file. An OSError is an OutputError naming the option."""
    temporary = _temporary_name(target)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(temporary, os.path.realpath(target))
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise OutputError(f"{name}: cannot write {str(target)!r}: "
                          f"{exc.strerror or exc}") from None


class _Stream:
    """A file seen through its `write` only. numpy.save writes a real file with tofile(),
    whose short write on a full disk says '3000 requested and 2032 written' and drops the
    errno; through write() the OSError says 'No space left on device' or 'File too large'."""

    def __init__(self, handle: BinaryIO):
        self.write = handle.write


def save_npy(target: Path, array: np.ndarray, name: str) -> None:
    """numpy.save to an output path checked by `output_path`; see `write_output`."""
    write_output(target, name,
                 lambda handle: np.save(_Stream(handle), array, allow_pickle=False))


def sample_rngs(seed: object, n_samples: int, stream: int) -> list[np.random.Generator]:
    """One generator per sample from `seed`: an int or None (the same stream for every
    sample: sample b of a batch then draws what a single call on it draws), a sequence of
    n_samples ints, or a numpy Generator (spawned). An int s gives default_rng([s, stream]),
    never default_rng(s): `stream` is a non-zero tag per use, so a user who drew z* with
    default_rng(0) and ran a method with seed 0 does not get z* as a start."""
    if isinstance(seed, np.random.Generator):
        return list(seed.spawn(n_samples))
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        return [_tagged_rng(seed, stream) for _ in range(n_samples)]
    if isinstance(seed, Sequence | np.ndarray) and not isinstance(seed, str):
        seeds = list(seed)
        if len(seeds) != n_samples or not all(
                isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
            raise InputError(f"seed as a sequence must hold one int per sample ({n_samples}); "
                             f"got {seed!r}")
        return [_tagged_rng(int(s), stream) for s in seeds]
    raise InputError(f"seed must be an int, a sequence of ints (one per sample), a numpy "
                     f"Generator or None; got {seed!r}")


def _tagged_rng(seed: int | None, stream: int) -> np.random.Generator:
    return np.random.default_rng(None if seed is None else [seed, stream])
