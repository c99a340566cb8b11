"""Elementwise monotone activations: everything layerinv knows about each one lives here.

An `Activation` owns its forward map and derivative, its output range, the preimage `Band` of
an observation (below), how much noise an observation alone proves (`noise_floor`), whether
its band is exact in the slack t (`exact_band`), its piecewise-linear form for the
mixed-integer encoding (`kink`, exact.py), its PyTorch module both ways (`to_torch`,
`activation_from_torch`), and its name with parameters (`repr()` parses back through
`get_activation`, and is what .npz files store). Adding an activation is one class here, one
line in `_CLASSES`, and its tests; no other module switches on an activation's name.

For an observed output y and a slack t, the layer LP needs the set of pre-activations u with
act(u) within t of y. For every activation here that set is an interval whose ends are linear in
t on the regime the LP works in, so each row becomes

    lower - lower_slope * t  <=  u  <=  upper + upper_slope * t,      t >= t_floor,

with lower = -inf where the row has no lower end. `Band` holds these arrays. Rows are classified
once per solve with a threshold (see `Activation.band`); the classification is what makes the
bands linear, and `_layer_inversion.py` re-classifies when the slack it finds says a row was
ambiguous.

PyTorch is imported only inside the two torch conversions, so this module works without it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from layerinv.errors import DefaultSlopeWarning, InputError, UnsupportedLayerError

# Observations of an activation with a bounded side (sigmoid, tanh, elu) are clipped this far
# (relative to `_Invertible._range_scale`) inside the open range before the inverse.
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


@dataclass(frozen=True)
class Kink:
    """A piecewise-linear activation: act(u) = above * u for u >= 0, below * u for u < 0.

    One kink at the origin (none when below == above: `linear`), below >= 0. This is the form
    exact.py's mixed-integer program encodes: a unit whose pre-activation range straddles 0
    gets one binary (u = p + q, act = above * p + below * q), the others a linear row.
    """

    below: float
    above: float = 1.0

    @property
    def linear(self) -> bool:
        return self.below == self.above

    def preimage(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The interval [u_low, u_high] of u with low <= act(u) <= high (empty: u_high < u_low
        or u_high = -inf)."""
        if self.below > 0:
            return (np.where(low >= 0, low / self.above, low / self.below),
                    np.where(high >= 0, high / self.above, high / self.below))
        # Flat below the kink: every u <= 0 gives 0, so a lower end <= 0 bounds nothing, and
        # an upper end below 0 leaves no u at all.
        return (np.where(low > 0, low / self.above, -np.inf),
                np.where(high >= 0, high / self.above, -np.inf))


class Parameter(NamedTuple):
    """An activation's one parameter: how it is named, in PyTorch too, and checked."""

    name: str
    """Its name in layerinv ('slope', 'alpha')."""
    torch_keyword: str
    """The torch.nn module's argument (and attribute) holding it."""
    default: float
    """The value of a name written without one (PyTorch's default), with a warning."""
    example: str
    """A name with a value, for messages and help ('leaky_relu(0.2)')."""
    why_positive: str
    """Why it must be > 0, for the error message."""


class Activation:
    """Base class of the activations (elementwise and non-decreasing).

    Subclasses define `name`, `forward`, `derivative` and `band`, and set the class
    attributes below where their defaults do not hold. An activation with one parameter
    (LeakyReLU's slope, ELU's alpha) derives from `_OneParameter`, describes it in `spec` (a
    `Parameter`) and returns it from `parameter`; its name is then `name(value)`.
    """

    name: ClassVar[str] = ""
    """The registry key: `repr()` is this name, with `(parameter)` where there is one."""
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other accepted spellings of the name ('linear' for identity)."""
    output_low: float = -np.inf
    output_high: float = np.inf
    exact_band: ClassVar[bool] = True
    """Whether the band at slack t lies inside {u : |act(u) - y| <= t} (piecewise-linear
    activations), so that a point inside the band provably fits. False for first-order bands
    (sigmoid, tanh, elu), whose fit the layer inversion checks in output space instead."""
    kink: Kink | None = None
    """The piecewise-linear form exact.py encodes; None where there is none (exact.py refuses)."""
    torch_name: ClassVar[str | None] = None
    """The torch.nn class computing it (None: no module, as for identity)."""
    spec: ClassVar[Parameter | None] = None
    """The one parameter, where there is one (`_OneParameter`)."""

    def forward(self, u: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def derivative(self, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """d act / du at u; `out` = forward(u) where the caller has it (sigmoid, tanh use it).

        At a kink the value is one of the one-sided derivatives (the one `forward`'s branch
        at u takes: ReLU's at 0 is 0, LeakyReLU's 1).
        """
        raise NotImplementedError

    def band(self, y: np.ndarray, threshold: float) -> Band:
        """The preimage band of observation y; `threshold` separates ambiguous rows (ReLU)."""
        raise NotImplementedError

    def noise_floor(self, y: np.ndarray) -> float:
        """A lower estimate of the noise amplitude in y read off y alone, for the ambiguity
        threshold (ReLU: the largest negative excursion, -min(y)); <= 0 where y shows none."""
        return 0.0

    def image(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The output interval of u in [low, high] (interval bound propagation): monotone."""
        return self.forward(low), self.forward(high)

    @property
    def parameter(self) -> float | None:
        """The value of the one parameter (None for an activation without)."""
        return None

    @property
    def slope(self) -> float:
        """LeakyReLU's slope; 0.0 for every other activation."""
        return 0.0

    def to_torch(self) -> Any:
        """The torch.nn module computing this activation, or None where none is needed (a
        Linear alone is identity). UnsupportedLayerError for an activation not registered."""
        if _REGISTRY.get(self.name) is not type(self):
            raise UnsupportedLayerError(
                f"activation {self!r} ({type(self).__name__}) has no PyTorch module here; "
                f"supported: {', '.join(ACTIVATION_NAMES)}")
        if self.torch_name is None:
            return None
        from torch import nn

        module = getattr(nn, self.torch_name)
        if self.spec is None:
            return module()
        return module(**{self.spec.torch_keyword: self.parameter})

    @classmethod
    def _from_torch(cls, module: Any, where: str) -> Activation:
        """The activation of a torch module of class `torch_name` (at index `where`)."""
        return cls()

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Activation)
            and self.name == other.name
            and self.parameter == other.parameter
        )

    def __hash__(self) -> int:
        return hash((self.name, self.parameter))

    def __repr__(self) -> str:
        # repr of the float, not :g, so that the name parses back to exactly this parameter.
        return self.name if self.parameter is None else f"{self.name}({self.parameter!r})"


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


class _OneParameter(Activation):
    """An activation with one parameter p > 0 (LeakyReLU's slope, ELU's alpha), where p = 0
    would be ReLU (so a torch module with 0 converts to ReLU) and p < 0 is not monotone."""

    spec: ClassVar[Parameter]

    def __init__(self, value: float):
        value = float(value)
        if not np.isfinite(value) or value <= 0:
            raise InputError(f"{self.name} {self.spec.name} must be a finite number > 0 "
                             f"({self.spec.why_positive}); got {value!r}")
        self._value = value

    @property
    def parameter(self) -> float:
        return self._value

    @classmethod
    def _from_torch(cls, module: Any, where: str) -> Activation:
        value = float(getattr(module, cls.spec.torch_keyword))
        if value == 0.0:
            return ReLU()
        if value < 0.0 or not np.isfinite(value):
            raise UnsupportedLayerError(
                f"{cls.torch_name} at index {where} has {cls.spec.torch_keyword} {value}; only "
                f"values >= 0 are monotone and have an interval preimage")
        return cls(value)


_SLOPE = Parameter("slope", "negative_slope", 0.01, "leaky_relu(0.2)",
                   "a slope of 0 is relu; a negative slope is not monotone and has no interval "
                   "preimage")
"""LeakyReLU's slope (PyTorch's default 0.01)."""
_ALPHA = Parameter("alpha", "alpha", 1.0, "elu(0.5)",
                   "alpha 0 is relu; a negative alpha is not monotone and has no interval "
                   "preimage")
"""ELU's alpha (PyTorch's default 1.0)."""


class ReLU(Activation):
    """max(u, 0). Rows observed above the ambiguity threshold pin u; the rest bound it above."""
    name = "relu"
    output_low = 0.0
    kink = Kink(0.0)
    torch_name = "ReLU"

    def forward(self, u: np.ndarray) -> np.ndarray:
        return np.maximum(u, 0.0)

    def derivative(self, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return (u > 0).astype(np.float64)

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

    def noise_floor(self, y: np.ndarray) -> float:
        # ReLU never outputs below 0: the largest negative excursion is noise.
        return -float(y.min())


class LeakyReLU(_OneParameter):
    """u for u >= 0, slope * u below (slope > 0: monotone, so every observation has an interval
    preimage). Named 'leaky_relu(slope)'."""
    name = "leaky_relu"
    aliases = ("leakyrelu",)
    torch_name = "LeakyReLU"
    spec = _SLOPE

    def __init__(self, slope: float = 0.01):
        super().__init__(slope)
        self.kink = Kink(self._value)

    @property
    def slope(self) -> float:
        return self._value

    def forward(self, u: np.ndarray) -> np.ndarray:
        return np.where(u >= 0, u, self._value * u)

    def derivative(self, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.where(u >= 0, 1.0, self._value)

    def band(self, y: np.ndarray, threshold: float) -> Band:
        a = self._value
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


class Identity(Activation):
    """u itself (a linear layer): every row pins u. Exported as `layerinv.IdentityActivation`."""
    name = "identity"
    aliases = ("linear",)
    kink = Kink(1.0)

    def forward(self, u: np.ndarray) -> np.ndarray:
        return np.array(u, dtype=np.float64, copy=True)

    def derivative(self, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.ones_like(u)

    def band(self, y: np.ndarray, threshold: float) -> Band:
        return _two_sided(y.copy(), 1.0, y)


class _Invertible(Activation):
    """Strictly increasing activations with a closed-form inverse (sigmoid, tanh, elu): the
    band is first order in t around act^-1(y), with half-width t / act'(act^-1(y)), y clipped
    into the open range first (the clipping raises the floor on t)."""

    exact_band = False

    @property
    def _range_scale(self) -> float:
        """The size the clipping margin is relative to: the width of a bounded range."""
        return self.output_high - self.output_low

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _inverse_derivative(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def band(self, y: np.ndarray, threshold: float) -> Band:
        margin = _OPEN_RANGE_MARGIN * self._range_scale
        clipped = np.clip(y, self.output_low + margin, self.output_high - margin)
        # A noisy observation outside the range is at least |y - clipped| from any output.
        return _two_sided(self._inverse(clipped), self._inverse_derivative(clipped), y,
                          t_floor=np.abs(y - clipped))


class Sigmoid(_Invertible):
    """1 / (1 + exp(-u)), range (0, 1); its band is first order in the slack around the inverse."""
    name = "sigmoid"
    output_low, output_high = 0.0, 1.0
    torch_name = "Sigmoid"

    def forward(self, u: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(u, dtype=np.float64)))

    def derivative(self, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = self.forward(u) if out is None else out
        return out * (1.0 - out)

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return np.log(y) - np.log1p(-y)

    def _inverse_derivative(self, y: np.ndarray) -> np.ndarray:
        return 1.0 / (y * (1.0 - y))


class Tanh(_Invertible):
    """tanh(u), range (-1, 1); its band is first order in the slack around the inverse."""
    name = "tanh"
    output_low, output_high = -1.0, 1.0
    torch_name = "Tanh"

    def forward(self, u: np.ndarray) -> np.ndarray:
        return np.tanh(u)

    def derivative(self, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        out = self.forward(u) if out is None else out
        return 1.0 - out * out

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return np.arctanh(y)

    def _inverse_derivative(self, y: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 - y * y)


class ELU(_OneParameter, _Invertible):
    """u for u > 0, alpha (exp(u) - 1) below (Clevert et al. 2016); range (-alpha, inf).

    Its inverse is exact (u = y above 0, log1p(y / alpha) on (-alpha, 0]); the band is first
    order in t like sigmoid's, with slopes 1 / act'(u): 1 above 0, 1 / (alpha + y) below.
    """

    name = "elu"
    torch_name = "ELU"
    spec = _ALPHA

    def __init__(self, alpha: float = 1.0):
        super().__init__(alpha)
        self.output_low = -self._value

    @property
    def alpha(self) -> float:
        return self._value

    @property
    def _range_scale(self) -> float:
        return self._value  # the range is unbounded above: the margin is relative to alpha

    def forward(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        # expm1 of min(u, 0): accurate near 0 and no overflow where the branch is not taken.
        return np.where(u > 0, u, self._value * np.expm1(np.minimum(u, 0.0)))

    def derivative(self, u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        # alpha exp(u), not out + alpha, which cancels where out is near -alpha.
        return np.where(u > 0, 1.0, self._value * np.exp(np.minimum(u, 0.0)))

    def _inverse(self, y: np.ndarray) -> np.ndarray:
        return np.where(y > 0, y, np.log1p(np.minimum(y, 0.0) / self._value))

    def _inverse_derivative(self, y: np.ndarray) -> np.ndarray:
        return np.where(y > 0, 1.0, 1.0 / (self._value + np.minimum(y, 0.0)))


# --------------------------------------------------------------------------- the registry
_CLASSES: tuple[type[Activation], ...] = (ReLU, LeakyReLU, Identity, Sigmoid, Tanh, ELU)
"""Every activation, by name, in the order messages list them: adding one is one entry here."""

_REGISTRY: dict[str, type[Activation]] = {cls.name: cls for cls in _CLASSES}
_SPELLINGS: dict[str, type[Activation]] = {
    **_REGISTRY, **{alias: cls for cls in _CLASSES for alias in cls.aliases}}

ACTIVATION_NAMES = tuple(_REGISTRY)
PIECEWISE_LINEAR_NAMES = tuple(cls.name for cls in _CLASSES if cls().kink is not None)
"""The activations exact.py's mixed-integer program encodes."""
TORCH_MODULES = tuple(str(cls.torch_name) for cls in _CLASSES if cls.torch_name is not None)
"""The torch.nn activation classes converted both ways."""
DEFAULT_LEAKY_SLOPE = LeakyReLU.spec.default
"""The slope of a 'leaky_relu' named without one: PyTorch's nn.LeakyReLU default."""

_WITH_PARAMETER: tuple[type[_OneParameter], ...] = tuple(
    cls for cls in _CLASSES if issubclass(cls, _OneParameter))
NAMES_HELP = (", ".join(ACTIVATION_NAMES[:-1]) + f" or {ACTIVATION_NAMES[-1]}; "
              + "; ".join(f"{cls.name} may carry its {cls.spec.name}, as in {cls.spec.example}"
                          for cls in _WITH_PARAMETER))
"""The names in words, for help texts."""

_NAME = re.compile(r"^\s*([a-z_-]+)\s*"  # the name; then an optional '(value)' or '(key=value)'
                   r"(?:\(\s*(?:([a-z_]+)\s*=\s*)?([^()]*?)\s*\))?\s*$")


def _parse(spec: str) -> tuple[type[Activation], float | None]:
    """The class named by spec and the parameter written in it (None where none is)."""
    examples = " or ".join(repr(cls.spec.example) for cls in _WITH_PARAMETER)
    match = _NAME.match(spec.lower())
    if match is None:
        raise InputError(f"activation must be one of {ACTIVATION_NAMES}, possibly with its "
                         f"parameter as in {examples}; got {spec!r}")
    key, keyword, text = match.group(1).replace("-", "_"), match.group(2), match.group(3)
    if key not in _SPELLINGS:
        raise InputError(f"activation must be one of {ACTIVATION_NAMES}; got {spec!r}")
    cls = _SPELLINGS[key]
    if not text:
        return cls, None
    if cls.spec is None:
        takes = ", ".join(f"{c.name} (its {c.spec.name}, as in {c.spec.example!r})"
                          for c in _WITH_PARAMETER)
        raise InputError(f"activation {spec!r}: {cls.name} takes no parameter; only {takes} "
                         f"take one")
    if keyword is not None and keyword not in (cls.spec.name, cls.spec.torch_keyword):
        raise InputError(f"activation {spec!r}: {cls.name}'s parameter is "
                         f"{cls.spec.name!r} (or {cls.spec.torch_keyword!r}); got {keyword!r}")
    try:
        return cls, float(text)
    except ValueError:
        raise InputError(f"activation {spec!r}: the {cls.spec.name} in parentheses must "
                         f"be a number, as in {cls.spec.example!r}; got {text!r}") from None


def split_name(spec: str) -> tuple[str, float | None]:
    """('leaky_relu', 0.2) for 'leaky_relu(0.2)'; the parameter is None when none is written.

    Accepted spellings: any case, '-' for '_', the aliases ('leakyrelu', 'linear'), an empty
    '()', and the parameter by keyword, PyTorch's included ('LeakyReLU(negative_slope=0.2)',
    'ELU(alpha=1.0)'), so `str()` of those modules parses too.
    """
    cls, value = _parse(spec)
    return cls.name, value


def parameter_name(spec: str) -> str | None:
    """The name of the parameter the activation named by spec takes ('slope' for leaky_relu,
    'alpha' for elu), None for one that takes none."""
    spec_of = _parse(spec)[0].spec
    return None if spec_of is None else spec_of.name


def get_activation(spec: str | Activation, slope: float | None = None) -> Activation:
    """An Activation from a name or itself.

    Names: 'relu', 'identity' (or 'linear'), 'sigmoid', 'tanh', 'leaky_relu(a)' with its
    slope a > 0 and 'elu(alpha)' with alpha > 0. `slope` is leaky_relu's slope where the name
    gives none (the other activations ignore it: old .npz files store 0 for them). An
    activation with a parameter named without one gets PyTorch's default (leaky_relu 0.01,
    elu 1.0) and a DefaultSlopeWarning that says so: a checkpoint trained with another value
    would silently give a different network. `repr()` of every activation is a name that
    parses back to an equal activation.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise InputError(
            f"activation must be one of {ACTIVATION_NAMES} or an Activation; got {spec!r}"
        )
    cls, written = _parse(spec)
    if cls.spec is None:
        return cls()
    given = slope if cls.spec.name == "slope" else None
    if written is not None and given is not None and float(given) != written:
        raise InputError(f"activation {spec!r} names the slope {written!r} but slope={slope!r} "
                         f"was given too; give one")
    chosen = written if written is not None else given
    if chosen is None:
        default, what = cls.spec.default, cls.spec.name
        warnings.warn(f"activation {spec!r} names no {what}: using {default} (PyTorch's "
                      f"default); write '{cls.name}({default})' to say so, or the {what} the "
                      f"network was trained with, e.g. '{cls.spec.example}'",
                      DefaultSlopeWarning, stacklevel=2)
        chosen = default
    return cls(chosen)  # type: ignore[call-arg]


def activation_from_torch(module: Any, where: str = "") -> Activation | None:
    """The activation a torch.nn module computes (`where`: its index, for messages), or None
    where the module is not one of TORCH_MODULES. LeakyReLU(0) and ELU(alpha=0) are relu; a
    negative parameter is an UnsupportedLayerError."""
    from torch import nn

    for cls in _CLASSES:
        if cls.torch_name is not None and isinstance(module, getattr(nn, cls.torch_name)):
            return cls._from_torch(module, where)
    return None
