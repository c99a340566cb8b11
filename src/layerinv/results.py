"""The results of layerinv, one module: `LayerReport` (one layer), `Inversion` (the walk and the
gradient methods), `Reconstruction` (inverse problems), `PreimageResult` and `ClosestResult`
(exact answers), and `Status`, the one vocabulary of every status they report.

This module imports nothing of the rest of layerinv (the standard library and NumPy only):
every solver, method and command builds these types, so they sit below all of them.

Single and batch. Every builder computes a batch, shape (B, ...), and hands it to
`Inversion.from_batch` / `Reconstruction.from_batch` with `single`: whether the caller gave
one observation, shape (n,). That is the one place where per-sample fields are unwrapped to
plain scalars (`unwrap`), and the result keeps the flag (`single`), so nothing has to guess it
from a field's type (a `Status` is a str, and so is every element of a batch's status array).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class Status(StrEnum):
    """Every status layerinv reports, one vocabulary for every method and solver.

    A StrEnum: each member equals its string value (`Status.OPTIMAL == "optimal"`), so
    statuses compare, format, print and store (JSON, SQLite) as plain strings; `repr` is the
    string's too, so a result's repr and every printed status read as before.
    """

    # The LP methods, a sample or a layer (worst first in STATUSES).
    OPTIMAL = "optimal"
    NOT_UNIQUE = "not_unique"
    NOT_REALIZABLE = "not_realizable"
    NOISE_BOUND_VIOLATED = "noise_bound_violated"
    FIT_LOST = "fit_lost"
    SOLVER_ERROR = "solver_error"
    # A solver backend's answer to one LP or MILP (exact.py: `preimage`, `closest`).
    INFEASIBLE = "infeasible"
    NUMERICAL_ERROR = "numerical_error"
    FEASIBLE = "feasible"
    TIME_LIMIT = "time_limit"
    # Iterative methods (gradient descent, projected gradient descent, an LP solver's cap).
    CONVERGED = "converged"
    STALLED = "stalled"
    DIVERGED = "diverged"
    MAX_STEPS = "max_steps"
    # The pattern method (`_pattern.py`): a whole-network fit on one activation region.
    LOCAL_OPTIMUM = "local_optimum"
    NOT_IDENTIFIABLE = "not_identifiable"

    def __repr__(self) -> str:
        return repr(self.value)


LAYER_STATUSES = (Status.OPTIMAL, Status.NOT_UNIQUE, Status.NOT_REALIZABLE,
                  Status.NOISE_BOUND_VIOLATED, Status.SOLVER_ERROR)
"""A layer's status (`LayerReport.status`)."""

STATUSES = (Status.SOLVER_ERROR, Status.FIT_LOST, Status.NOISE_BOUND_VIOLATED,
            Status.NOT_REALIZABLE, Status.NOT_UNIQUE, Status.OPTIMAL)
"""A sample's status, worst first: the worst of its layers' statuses (LAYER_STATUSES),
or 'fit_lost' where the returned z does not keep the output layer's fit (see `Inversion`)."""

GRADIENT_METHODS = ("gd", "lp+gd")


def unwrap(values: Any, single: bool, scalar: Callable[[Any], Any] = lambda value: value
           ) -> Any:
    """Sample 0 of a batch, as `scalar(values[0])`, for a single observation; else the batch.

    The one place where a result's per-sample fields lose their batch axis.
    """
    return scalar(values[0]) if single else values


def _statuses(values: Sequence) -> np.ndarray:
    """A batch's statuses as an object array of Status members (a foreign string: ValueError)."""
    return np.array([Status(value) for value in values], dtype=object)


@dataclass
class LayerReport:
    """What happened in one layer's inversion."""

    layer: int
    """Index of the layer in the network (0 = the one that takes z)."""
    method: str
    status: Status
    """One of LAYER_STATUSES."""
    eps: float
    """Achieved l_inf residual ||act(W h + b) - y||_inf in this layer's output space."""
    objective: float
    """The LP's optimal value (t for linf, sum of t_j for l1, 0 for least squares)."""
    n_active: int
    """Rows that pin the pre-activation (two-sided bands) in the final classification."""
    n_inputs: int
    unique: bool
    """The pinned rows have full column rank: the layer's pre-image is locally unique."""
    sigma_min: float
    """A proven lower bound on the smallest singular value of the pinned rows (in output
    units); nan without certify."""
    error_bound: float
    """Certificate: ||h - h*||_inf <= sqrt(n_active) max_i ||row i of W_A^+||_2 (eps +
    incoming), incoming bounding the error of this layer's observation, the row norms from
    the inverse Cholesky factor with their rounding margin (ARCHITECTURE.md, "Certificates").
    inf when not unique, nan without certify."""
    error_estimate: float
    """Typical size of ||h - h*||_inf, 2 eps max_i ||(W_A^+)_i||_2 (measured within a factor
    1.5 of the true error on noisy 20 x 250 x 600 nets): the next layer's ambiguity threshold."""
    solver: str
    """'lstsq', 'ipm' or 'highs'."""
    iterations: int
    seconds: float
    message: str = ""

    def __post_init__(self) -> None:
        self.status = Status(self.status)


@dataclass
class PatternReport:
    """What the pattern method found for one sample (`_pattern.py`)."""

    loss: str
    """'l2', 'linf' or 'l1' (each plus prior ||z||^2)."""
    objective: float
    """The objective at z (l2: the mean square of the residual, as gradient descent's)."""
    regions_visited: int
    """Regions solved in the certified local searches (the Gauss-Newton phase not counted)."""
    local_optimum: bool
    """Certified: optimal on its region (KKT), and no flip across a binding face improves."""
    sigma_min: float
    """Smallest singular value of A J_P, the measured Jacobian on z's region."""
    identifiable: bool
    """A J_P has full column rank: z is the only point of its region with its output."""
    error_bound: float
    """||z - z*||_inf <= this, valid where z* lies in z's region (inf: not identifiable)."""
    pattern: tuple = field(repr=False)
    """Per layer, which units are on at z (bool arrays)."""
    starts: int
    """The Gauss-Newton starts descended: all of them, or only the fixed ones (z = 0 and a
    given start) where one of those already fitted exactly ('optimal')."""
    seconds: float
    message: str = ""
    hops: int = 0
    """The Gauss-Newton hops descended around the best start (`_pattern.HOPS`; 0 where a
    start already fitted exactly or none were asked for)."""


@dataclass
class Inversion:
    """The result of `invert`, modelled on scipy.optimize.OptimizeResult.

    For a single observation (shape (n,)) `z` has shape (k,), `success` is a bool, `status` a
    Status (a str) and `layers` a list of LayerReport; for a batch (B, n), a batch of one
    included, they gain a leading batch axis (`status`: an object array of Status). `single`
    says which. Builders make it with `from_batch`.
    """

    z: np.ndarray
    success: np.ndarray | bool
    status: np.ndarray | Status
    """LP methods, one of STATUSES. Except for 'fit_lost' and 'solver_error', each promises
    that z keeps the output layer's fit: ||G(z) - x||_inf <= FIT_FACTOR (10) eps + FIT_FLOOR
    (1e-6) max|x|, eps the last layer's residual (`layers[-1].eps`), checked on the z
    returned.
    'optimal': every layer solved and uniquely invertible. 'not_unique': some layer's
    pre-image is not unique; z is one of them. 'not_realizable': the exact method on data
    outside the range; z is the l_inf fit. 'noise_bound_violated': the observation provably
    contradicts the stated noise bound; z is the fit found as if no bound had been stated.
    'fit_lost': ||G(z) - x|| breaks that promise (a non-unique layer handed down a point the
    layers below cannot produce); each layer's own status stays in `layers`. 'solver_error'.
    With joint=True a sample a layer left 'not_unique' or 'fit_lost' is solved on the whole
    network: 'optimal' (a zero-residual fit) or 'local_optimum' (noisy data) then certify
    its region (`regions`), 'not_unique' says that region is rank-deficient too.
    'pattern' and the samples 'auto' refined: 'optimal' (zero residual on an identifiable
    region), 'local_optimum' (certified), 'not_identifiable', 'max_steps' or 'solver_error';
    `success` is 'optimal' or 'local_optimum'.
    Gradient methods: the stop reason, one of gradient.GD_STATUSES ('converged', 'stalled',
    'diverged', 'max_steps'), and `success` is judged on the fit. 'pgd': one of
    reconstruct's PGD_STATUSES ('converged', 'stalled', 'max_steps')."""
    layers: list = field(repr=False)
    """Per sample, the LayerReport of each layer in network order (layer 0 takes z); empty for
    'gd', the LP's reports for 'lp+gd'."""
    residual: np.ndarray | float
    """||G(z) - x||_inf per sample (in measurement space when a measurement was given)."""
    seconds: float
    method: str
    history: list | np.ndarray | None = field(default=None, repr=False)
    """Gradient methods: the loss at each step, per sample (one array for a single
    observation); None for the LPs."""
    single: bool | None = field(default=None, kw_only=True, repr=False)
    """True: the result of one observation (unbatched fields); False: of a batch. `from_batch`
    sets it; a result built by hand without it reads it off z's shape ((k,) or (B, k))."""
    regions: list | PatternReport | None = field(default=None, kw_only=True, repr=False)
    """Where the whole network was solved on activation regions (the pattern method, the
    'auto' refinement, a layer-wise method's joint solve of a non-unique layer): a
    PatternReport per sample (None for a sample not so solved; one report or None for a
    single observation); else None. Where present it is the sample's certificate."""

    def __post_init__(self) -> None:
        if self.single is None:
            self.single = np.ndim(self.z) == 1

    @classmethod
    def from_batch(cls, z: np.ndarray, success: Sequence, status: Sequence, layers: Sequence,
                   residual: Sequence, seconds: float, method: str,
                   history: Sequence | None = None, *, single: bool,
                   regions: Sequence[PatternReport] | None = None) -> Inversion:
        """The result of a batch of B observations, every per-sample argument with a leading
        axis of B (`layers`: B lists of reports; `history`: B arrays, or None; `regions`: B
        PatternReports, or None); `single`: the caller gave one observation, so every
        per-sample field is unwrapped to sample 0's."""
        return cls(unwrap(z, single), unwrap(np.asarray(success, dtype=bool), single, bool),
                   unwrap(_statuses(status), single), unwrap(list(layers), single),
                   unwrap(np.asarray(residual, dtype=np.float64), single, float), seconds,
                   method, None if history is None else unwrap(history, single),
                   single=single,
                   regions=None if regions is None else unwrap(list(regions), single))

    @property
    def certified(self) -> np.ndarray | bool:
        """True where every layer is uniquely invertible with a computed sigma_min > 0; for
        the pattern method, where z's region is identifiable and z a certified local optimum
        (or better) on it."""
        def one(reports: list[LayerReport], region: PatternReport | None) -> bool:
            if region is not None:
                return bool(region.identifiable and region.local_optimum)
            # No reports (gradient methods): nothing was certified.
            return bool(reports) and all(r.unique and r.sigma_min > 0 for r in reports)

        values = [one(reports, region) for reports, region in self._with_regions()]
        return values[0] if self.single else np.array(values, dtype=bool)

    @property
    def error_bound(self) -> np.ndarray | float:
        """Certified bound on ||z - z*||_inf (the first layer's error_bound); see LayerReport.
        The pattern method: its region's bound (PatternReport.error_bound)."""
        def first(reports: list[LayerReport], region: PatternReport | None) -> float:
            if region is not None:
                return region.error_bound
            return reports[0].error_bound if reports else float("nan")  # nan: no certificate

        values = [first(reports, region) for reports, region in self._with_regions()]
        return values[0] if self.single else np.array(values)

    @property
    def eps(self) -> np.ndarray:
        """Achieved l_inf residual per layer: shape (d,) or (B, d)."""
        return self._per_layer("eps")

    @property
    def layer_seconds(self) -> np.ndarray:
        return self._per_layer("seconds")

    def _with_regions(self) -> list[tuple[list[LayerReport], PatternReport | None]]:
        """Per sample: (its layer reports, its PatternReport or None)."""
        regions = self.regions
        if self.single:
            return [(self.layers, regions)]
        return list(zip(self.layers, regions if regions is not None
                        else [None] * len(self.layers), strict=True))

    def _per_layer(self, name: str) -> np.ndarray:
        table = np.array([[getattr(r, name) for r in reports] for reports in self._samples()])
        return table[0] if self.single else table

    def _samples(self) -> list:
        """The layer reports per sample, a list of B lists (B = 1 for one observation)."""
        return [self.layers] if self.single else list(self.layers)

    def summary(self) -> str:
        """A short text table: per sample, status, eps per layer and seconds."""
        statuses = [self.status] if self.single else list(self.status)
        residuals = np.atleast_1d(self.residual)
        lines = [f"method={self.method}  samples={len(statuses)}  seconds={self.seconds:.3f}",
                 f"{'sample':>6}  {'status':<20} {'residual':>10}  eps per layer (0 = first)"
                 f"  seconds"]
        seconds = self.sample_seconds()
        for i, (status, layer_reports) in enumerate(zip(statuses, self._samples(),
                                                        strict=True)):
            eps = " ".join(f"{r.eps:.2e}" for r in layer_reports)
            lines.append(f"{i:>6}  {status:<20} {residuals[i]:>10.2e}  {eps}  {seconds[i]:.4f}")
        return "\n".join(lines)

    def sample_seconds(self) -> np.ndarray:
        """Seconds per sample, shape (B,) ((1,) for one observation).

        LP methods: the sample's own layer times. Gradient methods run every sample in one
        tensor, so no sample has a time of its own: each gets an equal share of the call's
        wall time beyond the samples' own LP layer times ('lp+gd'), and the shares add up to
        `seconds`.
        """
        reports = self._samples()
        own = np.array([sum(r.seconds for r in layer_reports) for layer_reports in reports])
        if self.method not in GRADIENT_METHODS:
            return own
        rest = max(0.0, float(self.seconds) - float(own.sum()))
        return own + rest / len(reports)


@dataclass
class Reconstruction:
    """The result of `reconstruct`.

    `inversion` is the `Inversion` of the method (its `z`, `success`, `status`, `residual` in
    measurement space, `seconds`); `signal` is G(z_hat) on all of the network's outputs (the
    estimate of x, hidden entries filled in); `measurement_residual` is ||y - A(signal)||_2 per
    sample; `history` is, for 'pgd', the measurement loss ||y - A(x_t)||_2 at each iteration
    (amplitude loss for Magnitude), for 'gd' the gradient-descent loss per step (mean of
    squares), None for the LPs. Batched inputs give batched fields (history: a list), a batch
    of one included; `single` says which (the inversion's). Built with `from_batch`.
    """

    inversion: Inversion
    signal: np.ndarray
    measurement_residual: np.ndarray | float
    measurement: Any = field(repr=False)
    """The `layerinv.measurements.Measurement` (typed Any: this module imports none of it)."""
    history: list | np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def from_batch(cls, inversion: Inversion, signal: np.ndarray,
                   measurement_residual: Sequence, measurement: Any, *,
                   single: bool) -> Reconstruction:
        """`signal` (B, n) and `measurement_residual` (B,) of a batch, unwrapped to sample 0's
        where `single`; the inversion (built for the same observations) and its history as
        they are."""
        if inversion.single != single:
            raise ValueError(f"the inversion is {'single' if inversion.single else 'batched'}"
                             f" but single={single}")
        return cls(inversion, unwrap(signal, single),
                   unwrap(np.asarray(measurement_residual, dtype=np.float64), single, float),
                   measurement, inversion.history)

    @property
    def single(self) -> bool:
        """True: the result of one measurement vector (unbatched fields); False: of a batch."""
        return bool(self.inversion.single)

    @property
    def z(self) -> np.ndarray:
        return self.inversion.z

    @property
    def success(self) -> np.ndarray | bool:
        return self.inversion.success

    @property
    def status(self) -> np.ndarray | Status:
        return self.inversion.status

    @property
    def method(self) -> str:
        return self.inversion.method

    @property
    def seconds(self) -> float:
        return self.inversion.seconds


@dataclass
class PreimageResult:
    """The answer of `layerinv.exact.preimage`.

    exists : True (a verified witness), False (proven: no z in the box fits within tol) or None
        (the time limit ran out, or the witness failed the forward check; see `status`).
    z : the witness (k,) when exists is True, else HiGHS's last point or None.
    residual : ||G(z) - x||_inf by a float64 forward pass (inf when z is None).
    bound : HiGHS's lower bound on min ||G(z) - x||_inf over the box, as far as the search got
        (it searches only below tol: +inf when exists is False, at most tol otherwise).
    status : 'feasible', 'infeasible', 'time_limit', 'numerical_error' or 'solver_error'
        (a Status).
    seconds : wall time, model building included.
    n_binaries : binaries in the MILP (unstable relu / leaky_relu units).
    """

    exists: bool | None
    z: np.ndarray | None
    residual: float
    bound: float
    status: Status
    seconds: float
    n_binaries: int

    def __post_init__(self) -> None:
        self.status = Status(self.status)


@dataclass
class ClosestResult:
    """The answer of `layerinv.exact.closest`.

    z : the best point found (k,), always inside the box.
    distance : ||G(z) - x|| in the chosen norm, by a float64 forward pass.
    bound : HiGHS's lower bound on the minimum over the box; distance - bound is the remaining
        gap (zero up to the MIP gap tolerances when status is 'optimal').
    status : 'optimal', 'time_limit' or 'solver_error' (a Status).
    seconds : wall time, model building included.
    n_binaries : binaries in the MILP.
    """

    z: np.ndarray
    distance: float
    bound: float
    status: Status
    seconds: float
    n_binaries: int = 0

    def __post_init__(self) -> None:
        self.status = Status(self.status)
