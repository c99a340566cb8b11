"""The results of inversion: `LayerReport` (one layer), `Inversion` (the walk) and the statuses.

This module imports nothing of the rest of layerinv: every solver, method and command builds
these types, so they sit below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class Status(StrEnum):
    """Every status layerinv reports, one vocabulary for every method and solver.

    A StrEnum: each member equals its string value (`Status.OPTIMAL == "optimal"`), so
    statuses compare, print and store (JSON, SQLite) as plain strings.
    """

    # The LP methods, a sample or a layer (worst first in STATUSES).
    OPTIMAL = "optimal"
    NOT_UNIQUE = "not_unique"
    NOT_REALIZABLE = "not_realizable"
    NOISE_BOUND_VIOLATED = "noise_bound_violated"
    FIT_LOST = "fit_lost"
    SOLVER_ERROR = "solver_error"
    # A solver backend's answer to one LP.
    INFEASIBLE = "infeasible"
    NUMERICAL_ERROR = "numerical_error"
    # Iterative methods (gradient descent, projected gradient descent, an LP solver's cap).
    CONVERGED = "converged"
    STALLED = "stalled"
    DIVERGED = "diverged"
    MAX_STEPS = "max_steps"

LAYER_STATUSES = ("optimal", "not_unique", "not_realizable", "noise_bound_violated",
                  "solver_error")

STATUSES = ("solver_error", "fit_lost", "noise_bound_violated", "not_realizable",
            "not_unique", "optimal")
"""A sample's status, worst first: the worst of its layers' statuses (layer.LAYER_STATUSES),
or 'fit_lost' where the returned z does not keep the output layer's fit (see `Inversion`)."""


@dataclass
class LayerReport:
    """What happened in one layer's inversion."""

    layer: int
    """Index of the layer in the network (0 = the one that takes z)."""
    method: str
    status: str
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
    """Smallest singular value of the pinned rows (in output units); nan without certify."""
    error_bound: float
    """Certificate: ||h - h*||_inf <= min(sqrt(n_active) / sigma_min, ||W_A^+||_inf)
    (eps + incoming), incoming bounding the error of this layer's observation (the second
    term only where an LP formed W_A^+; ARCHITECTURE.md, "Certificates").
    inf when not unique, nan without certify."""
    error_estimate: float
    """Typical size of ||h - h*||_inf, 2 eps max_i ||(W_A^+)_i||_2 (measured within a factor
    1.5 of the true error on noisy 20 x 250 x 600 nets): the next layer's ambiguity threshold."""
    solver: str
    """'lstsq', 'ipm' or 'highs'."""
    iterations: int
    seconds: float
    message: str = ""



@dataclass
class Inversion:
    """The result of `invert`, modelled on scipy.optimize.OptimizeResult.

    For a single observation (shape (n,)) `z` has shape (k,), `success` is a bool, `status` a
    str and `layers` a list of LayerReport; for a batch (B, n) they gain a leading batch axis.
    """

    z: np.ndarray
    success: np.ndarray | bool
    status: np.ndarray | str
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
    Gradient methods: the stop reason, one of gradient.GD_STATUSES ('converged', 'stalled',
    'diverged', 'max_steps'), and `success` is judged on the fit."""
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

    @property
    def certified(self) -> np.ndarray | bool:
        """True where every layer is uniquely invertible with a computed sigma_min > 0."""
        def one(reports: list[LayerReport]) -> bool:
            # No reports (gradient methods): nothing was certified.
            return bool(reports) and all(r.unique and r.sigma_min > 0 for r in reports)

        if isinstance(self.status, str):
            return one(self.layers)
        return np.array([one(reports) for reports in self.layers], dtype=bool)

    @property
    def error_bound(self) -> np.ndarray | float:
        """Certified bound on ||z - z*||_inf (the first layer's error_bound); see LayerReport."""
        def first(reports: list[LayerReport]) -> float:
            return reports[0].error_bound if reports else float("nan")  # nan: no certificate

        if isinstance(self.status, str):
            return first(self.layers)
        return np.array([first(reports) for reports in self.layers])

    @property
    def eps(self) -> np.ndarray:
        """Achieved l_inf residual per layer: shape (d,) or (B, d)."""
        return self._per_layer("eps")

    @property
    def layer_seconds(self) -> np.ndarray:
        return self._per_layer("seconds")

    def _per_layer(self, name: str) -> np.ndarray:
        single = isinstance(self.status, str)
        rows = [self.layers] if single else self.layers
        table = np.array([[getattr(r, name) for r in reports] for reports in rows])
        return table[0] if single else table

    def summary(self) -> str:
        """A short text table: per sample, status, eps per layer and seconds."""
        single = isinstance(self.status, str)
        statuses = [self.status] if single else list(self.status)
        reports = [self.layers] if single else self.layers
        residuals = np.atleast_1d(self.residual)
        lines = [f"method={self.method}  samples={len(statuses)}  seconds={self.seconds:.3f}",
                 f"{'sample':>6}  {'status':<20} {'residual':>10}  eps per layer (0 = first)"
                 f"  seconds"]
        seconds = self.sample_seconds()
        for i, (status, layer_reports) in enumerate(zip(statuses, reports, strict=True)):
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
        reports = [self.layers] if isinstance(self.status, str) else list(self.layers)
        own = np.array([sum(r.seconds for r in layer_reports) for layer_reports in reports])
        if self.method not in GRADIENT_METHODS:
            return own
        rest = max(0.0, float(self.seconds) - float(own.sum()))
        return own + rest / len(reports)


GRADIENT_METHODS = ("gd", "lp+gd")
