"""Exceptions raised by layerinv.

Every error names the argument, what was expected and what came, in the style of
scikit-learn's validation messages. Solver outcomes (infeasible, not unique, not converged)
are statuses in the result objects, never exceptions.
"""

from __future__ import annotations


class LayerinvError(Exception):
    """Base class of every error raised by layerinv."""


class InputError(LayerinvError, ValueError):
    """An argument has the wrong shape, type or value (NaN, Inf, out of range)."""


class UnsupportedLayerError(LayerinvError, TypeError):
    """A PyTorch module or activation that layerinv cannot represent."""


class NetworkFileError(LayerinvError, OSError):
    """A file that is not a layerinv network, or is corrupt, truncated or unsafe."""
