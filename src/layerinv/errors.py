"""Exceptions raised by layerinv.

Every error names the argument, what was expected and what came, in the style of
scikit-learn's validation messages. Solver outcomes (infeasible, not unique, not converged)
are statuses in the result objects, never exceptions.

Usage errors and runtime failures (decision)
--------------------------------------------
Each class says which kind it is with the class attribute `usage`:

- `usage = True`: the caller gave something wrong (a value, a shape, a file that is not what
  the argument expects). Fixing the call fixes it. The command line exits 2.
- `usage = False` (the default of `LayerinvError`): the call was right but the work could not
  be done (a full disk, a read-only location, a lost worker, an unreachable cluster). The
  command line exits 1.

An error that can be either is two classes (e.g. `NetworkFileError`, the file named is not a
network, against `OutputError`, a result could not be written). `is_usage_error(exc)` reads the
marker; an exception that is not a LayerinvError (OSError, MemoryError, ...) is a runtime failure.
"""

from __future__ import annotations

from typing import ClassVar


class LayerinvError(Exception):
    """Base class of every error raised by layerinv; a runtime failure unless `usage` is True."""

    usage: ClassVar[bool] = False


class InputError(LayerinvError, ValueError):
    """An argument has the wrong shape, type or value (NaN, Inf, out of range)."""

    usage = True


class UnsupportedLayerError(LayerinvError, TypeError):
    """A PyTorch module or activation that layerinv cannot represent."""

    usage = True


class NetworkFileError(LayerinvError, OSError):
    """A file that is not a layerinv network, or is corrupt, truncated or unsafe."""

    usage = True


class OutputError(LayerinvError, OSError):
    """A result could not be written (full disk, read-only location): a runtime failure."""


class DefaultSlopeWarning(UserWarning):
    """An activation was named without its parameter, and the documented default was used."""


def is_usage_error(exc: BaseException) -> bool:
    """True for a LayerinvError marked as the caller's mistake (exit 2), else False."""
    return isinstance(exc, LayerinvError) and bool(getattr(exc, "usage", False))
