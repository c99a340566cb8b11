"""Elementwise monotone activations and the preimage band of an observation.

For an observed output y and a slack t, the layer LP needs the set of pre-activations u with
act(u) within t of y. For every activation here that set is an interval whose ends are linear in
t on the regime the LP works in, so each row becomes

    lower - lower_slope * t  <=  u  <=  upper + upper_slope * t,      t >= t_floor,

with lower = -inf where the row has no lower end. `Band` holds these arrays. Rows are classified
once per solve with a threshold (see `Activation.band`); the classification is what makes the
bands linear, and `layer.py` re-classifies when the slack it finds says a row was ambiguous.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np

from layerinv.errors import DefaultSlopeWarning, InputError

# Sigmoid and tanh observations are clipped this far inside the open range before the inverse.
_OPEN_RANGE_MARGIN = 1e-12


@dataclass(frozen=True)
class Band:
    """Per-row interval on the pre-activation, linear in the slack t (see the module doc)."""

    lower: np.ndarray
    lower_slope: np.ndarray
    upper: np.ndarray
    upper_slope: np.ndarray
    t_floor: np.ndarray
    center: np.ndarray
    """act^-1(y) where the row pins u at t = 0 (two-sided rows), used by least squares."""

    @property
    def two_sided(self) -> np.ndarray:
        return np.isfinite(self.lower) & np.isfinite(self.upper)

    def at(self, t: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The interval ends for slack t (a scalar, or one slack per row)."""
        with np.errstate(invalid="ignore"):
            lo = np.where(np.isfinite(self.lower), self.lower - self.lower_slope * t, -np.inf)
            hi = np.where(np.isfinite(self.upper), self.upper + self.upper_slope * t, np.inf)
        return lo, hi


class Activation:
    """Base class. Subclasses define `forward`, `band` and the output range."""

    name: str = ""
    output_low: float = -np.inf
    output_high: float = np.inf

    def forward(self, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def band(self, y: np.ndarray, threshold: float) -> Band:
        """The preimage band of observation y; `threshold` separates ambiguous rows (ReLU)."""
        raise NotImplementedError

    @property
    def slope(self) -> float:
        return 0.0

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Activation)
            and self.name == other.name
            and self.slope == other.slope
        )

    def __hash__(self) -> int:
        return hash((self.name, self.slope))

    def __repr__(self) -> str:
        return self.name


def _two_sided(center: np.ndarray, slope: np.ndarray | float, y: np.ndarray,
               t_floor: np.ndarray | None = None) -> Band:
    slope = np.broadcast_to(np.asarray(slope, dtype=np.float64), y.shape).copy()
    return Band(
        lower=center.copy(),
        lower_slope=slope,
        upper=center.copy(),
        upper_slope=slope.copy(),
        t_floor=np.zeros_like(y) if t_floor is None else t_floor,
        center=center,
    )


class ReLU(Activation):
    name = "relu"
    output_low = 0.0

    def forward(self, u: np.ndarray) -> np.ndarray:
        return np.maximum(u, 0.0)

    def band(self, y: np.ndarray, threshold: float) -> Band:
        # Active rows (y > threshold): |u - y| <= t. The rest: u <= y + t (eq. 5 of the paper),
        # and since ReLU never goes below 0, the slack must reach -y where y is negative.
        active = y > threshold
        ones = np.ones_like(y)
        return Band(
            lower=np.where(active, y, -np.inf),
            lower_slope=ones,
            upper=y.copy(),
            upper_slope=ones.copy(),
            t_floor=np.maximum(-y, 0.0),
            center=np.where(active, y, np.nan),
        )


class LeakyReLU(Activation):
    name = "leaky_relu"

    def __init__(self, slope: float = 0.01):
        slope = float(slope)
        if not np.isfinite(slope) or slope <= 0:
            raise InputError(
                f"leaky_relu slope must be a finite number > 0 (a slope of 0 is relu; a negative "
                f"slope is not monotone and has no interval preimage); got {slope!r}"
            )
        self._slope = slope

    @property
    def slope(self) -> float:
        return self._slope

    def forward(self, u: np.ndarray) -> np.ndarray:
        return np.where(u >= 0, u, self._slope * u)

    def band(self, y: np.ndarray, threshold: float) -> Band:
        a = self._slope
        positive, negative = y > threshold, y < -threshold
        ambiguous = ~(positive | negative)
        center = np.where(negative, y / a, y)
        # An ambiguous row's exact preimage for t >= |y| is [(y - t)/a, y + t]; for smaller t
        # that interval lies inside the exact one, so every solution the LP returns is feasible.
        lower = np.where(positive, y, y / a)
        lower_slope = np.where(positive, 1.0, 1.0 / a)
        upper = np.where(negative, y / a, y)
        upper_slope = np.where(negative, 1.0 / a, 1.0)
        center = np.where(ambiguous, np.where(y >= 0, y, y / a), center)
        return Band(lower, lower_slope, upper, upper_slope, np.zeros_like(y), center)

    def __repr__(self) -> str:
        # repr of the float, not :g, so that the name parses back to exactly this slope.
        return f"leaky_relu({self._slope!r})"


class Identity(Activation):
    name = "identity"

    def forward(self, u: np.ndarray) -> np.ndarray:
        return np.array(u, dtype=np.float64, copy=True)

    def band(self, y: np.ndarray, threshold: float) -> Band:
        return _two_sided(y.copy(), 1.0, y)


class _Squashing(Activation):
    """Sigmoid and tanh: the band is first order in t around act^-1(y), y clipped into range."""

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _inverse_derivative(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def band(self, y: np.ndarray, threshold: float) -> Band:
        margin = _OPEN_RANGE_MARGIN * (self.output_high - self.output_low)
        clipped = np.clip(y, self.output_low + margin, self.output_high - margin)
        # A noisy observation outside the range is at least |y - clipped| from any output.
        return _two_sided(self._inverse(clipped), self._inverse_derivative(clipped), y,
                          t_floor=np.abs(y - clipped))


class Sigmoid(_Squashing):
    name = "sigmoid"
    output_low, output_high = 0.0, 1.0

    def forward(self, u: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(u, dtype=np.float64)))

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return np.log(y) - np.log1p(-y)

    def _inverse_derivative(self, y: np.ndarray) -> np.ndarray:
        return 1.0 / (y * (1.0 - y))


class Tanh(_Squashing):
    name = "tanh"
    output_low, output_high = -1.0, 1.0

    def forward(self, u: np.ndarray) -> np.ndarray:
        return np.tanh(u)

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return np.arctanh(y)

    def _inverse_derivative(self, y: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 - y * y)


ACTIVATION_NAMES = ("relu", "leaky_relu", "identity", "sigmoid", "tanh")
DEFAULT_LEAKY_SLOPE = 0.01
"""The slope of a 'leaky_relu' named without one: PyTorch's nn.LeakyReLU default."""

_SIMPLE = {"relu": ReLU, "identity": Identity, "linear": Identity, "sigmoid": Sigmoid,
           "tanh": Tanh}
_LEAKY_KEYS = ("leaky_relu", "leakyrelu")
_NAME = re.compile(r"^\s*([a-z_-]+)\s*"  # the name; then an optional '(slope)'
                   r"(?:\(\s*(?:(?:negative_slope|slope)\s*=\s*)?([^()]*?)\s*\))?\s*$")


def split_name(spec: str) -> tuple[str, float | None]:
    """('leaky_relu', 0.2) for 'leaky_relu(0.2)'; the parameter is None when none is written.

    Accepted spellings: any case, '-' for '_', 'leakyrelu', an empty '()', and PyTorch's
    'LeakyReLU(negative_slope=0.2)', so `str()` of an nn.LeakyReLU parses too.
    """
    match = _NAME.match(spec.lower())
    if match is None:
        raise InputError(f"activation must be one of {ACTIVATION_NAMES}, leaky_relu possibly "
                         f"with its slope as in 'leaky_relu(0.2)'; got {spec!r}")
    key, text = match.group(1).replace("-", "_"), match.group(2)
    if key not in _SIMPLE and key not in _LEAKY_KEYS:
        raise InputError(f"activation must be one of {ACTIVATION_NAMES}; got {spec!r}")
    key = "leaky_relu" if key in _LEAKY_KEYS else key
    if not text:
        return key, None
    if key not in _LEAKY_KEYS:
        raise InputError(f"activation {spec!r}: {key} takes no parameter; only leaky_relu has "
                         f"one (its slope, as in 'leaky_relu(0.2)')")
    try:
        return key, float(text)
    except ValueError:
        raise InputError(f"activation {spec!r}: the slope in parentheses must be a number, as "
                         f"in 'leaky_relu(0.2)'; got {text!r}") from None


def get_activation(spec: str | Activation, slope: float | None = None) -> Activation:
    """An Activation from a name or itself.

    Names: 'relu', 'identity' (or 'linear'), 'sigmoid', 'tanh', and 'leaky_relu(a)' with its
    slope a > 0; the slope may also come as `slope`. A 'leaky_relu' with no slope either way
    gets DEFAULT_LEAKY_SLOPE (0.01, as in PyTorch) and a DefaultSlopeWarning that says so:
    a checkpoint trained with another slope would silently give a different network.
    `repr()` of every activation is a name that parses back to an equal activation.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise InputError(
            f"activation must be one of {ACTIVATION_NAMES} or an Activation; got {spec!r}"
        )
    key, written = split_name(spec)
    if key != "leaky_relu":
        return _SIMPLE[key]()
    if written is not None and slope is not None and float(slope) != written:
        raise InputError(f"activation {spec!r} names the slope {written!r} but slope={slope!r} "
                         f"was given too; give one")
    chosen = written if written is not None else slope
    if chosen is None:
        warnings.warn(f"activation {spec!r} names no slope: using {DEFAULT_LEAKY_SLOPE} "
                      f"(PyTorch's default); write 'leaky_relu({DEFAULT_LEAKY_SLOPE})' to "
                      f"say so, or the slope the network was trained with, e.g. "
                      f"'leaky_relu(0.2)'", DefaultSlopeWarning, stacklevel=2)
        chosen = DEFAULT_LEAKY_SLOPE
    return LeakyReLU(chosen)
