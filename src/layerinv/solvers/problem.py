"""What every solver backend takes and returns: `LayerProblem`, `LPResult`, `Backend`.

The layer problem, for a linear operator W (n x m, operators.py), bias b and a preimage
`Band` (activations.py):

    linf:  min t          s.t.  lower_j - sl_j t   <= w_j h + b_j <= upper_j + su_j t,
                                t >= t_floor_j,  h_low <= h <= h_high  (and t <= t_max)
    l1:    min sum_j t_j  s.t.  the same rows with one slack t_j each  (t_j <= t_max).

A backend solves it as given (a ceiling `t_max` is only a constraint to it); the registry
(`layerinv.solvers.solve`) decides a stated noise bound before any backend sees one, and
passes every answer through `check_result`, so a backend's wrong answer becomes a
'numerical_error' with a message, never a silently wrong 'optimal'.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from layerinv import _linalg as linalg
from layerinv.activations import Band
from layerinv.operators import LinearOperator, as_operator
from layerinv.results import Status

ROUNDOFF = 1e-9
"""Relative accuracy of a simplex or cvxopt objective beyond what the solver reports
(the interior point's own gap tolerance)."""

FEASIBILITY = 1e-6
"""The post-check's tolerance on a bound or row, relative to the size of its terms. Every
backend's own is tighter: HiGHS's primal feasibility 1e-7, the interior point's residual
1e-9 (1 + ||g||), cvxopt's 1e-7."""


@dataclass
class LPResult:
    """One layer problem's answer, modelled on scipy.optimize.OptimizeResult."""

    h: np.ndarray
    """The layer input found (m,)."""
    t: np.ndarray
    """The slack: shape (1,) for linf, (n,) for l1."""
    objective: float
    status: Status
    """OPTIMAL, INFEASIBLE, MAX_STEPS (an iteration or time cap) or NUMERICAL_ERROR."""
    solver: str
    iterations: int
    seconds: float
    message: str = ""
    accuracy: float = 0.0
    """How far `objective` may lie above the LP's true optimum, by the solver's own measure
    (interior point: duality gap + primal and dual residual terms at its last iterate)."""

    @property
    def success(self) -> bool:
        return self.status == Status.OPTIMAL


@dataclass
class LayerProblem:
    """One layer's LP in the form of the module docstring; W is a linear operator.

    A backend asks `operator` for what it needs (products, rows, the Gram of a row subset),
    never for the whole dense matrix, so that a structured W stays structured.
    """

    operator: LinearOperator
    bias: np.ndarray | None
    band: Band
    h_low: np.ndarray
    h_high: np.ndarray
    norm: str  # "linf" or "l1"
    t_max: float | None = None
    """An upper bound on every slack (a noise bound stated by the user), or None."""
    t_min: float = 0.0
    """An extra floor on the shared l_inf slack (kept when rows are screened out)."""
    pinned_solution: np.ndarray | None = None
    """The least-squares solution of the band's pinned (two-sided) rows, where the caller has
    computed it already (the layer inversion's shortcut): backends that start from it (the
    interior point's screening, DAQP's warm start) then skip forming it again. Unclipped;
    None where the caller has none or those rows are rank-deficient. A start only: a wrong
    one costs time (screening re-checks every row), never a wrong answer."""

    n_rows: int = field(init=False, repr=False)
    """n, the rows of W (the layer's outputs)."""
    n_inputs: int = field(init=False, repr=False)
    """m, the columns of W (the unknowns h)."""

    def __post_init__(self) -> None:
        self.operator = as_operator(self.operator)  # an array is taken as a dense operator
        self.n_rows, self.n_inputs = self.operator.shape

    def shifted_band(self) -> tuple[np.ndarray, np.ndarray]:
        """Band ends at t = 0 with the bias moved to the right-hand side."""
        bias = 0.0 if self.bias is None else self.bias
        return self.band.lower - bias, self.band.upper - bias

    def slack_floors(self) -> np.ndarray:
        """Lower bounds of the slack variables: one per row (l1) or one shared (linf)."""
        if self.norm == "l1":
            return self.band.t_floor
        return np.array([max(float(self.band.t_floor.max(initial=0.0)), self.t_min)])

    def subset(self, rows: np.ndarray) -> LayerProblem:
        """The same LP on a subset of the rows (a boolean mask); the l_inf floor is kept."""
        band = self.band
        sub_band = Band(*(getattr(band, name)[rows] for name in
                          ("lower", "lower_slope", "upper", "upper_slope", "t_floor", "center")))
        return LayerProblem(self.operator.row_subset(rows),
                            None if self.bias is None else self.bias[rows],
                            sub_band, self.h_low, self.h_high, self.norm, self.t_max,
                            float(self.slack_floors().max()) if self.norm == "linf" else 0.0)


@dataclass
class PinnedFit:
    """One sample's least-squares fit of its pinned rows W_A h = c_A - b_A (the exact
    method's eq. 4), and what the Cholesky factor R of W_A' W_A certifies (R' R = W_A' W_A).

    The rows are W's own rows, unscaled: `sigma_min` and `inverse_row_norm` certify the
    pinned rows in output units only where every pinned row has slope 1 (ReLU, LeakyReLU's
    positive side); elsewhere the caller certifies the scaled rows itself (the layer
    inversion then passes certify=False, and uses a fit's bounds only on rows of slope 1).
    Both bounds are `_linalg.inverse_factor_bounds`' (they carry its rounding margin); a
    backend computing them itself must keep them bounds: sigma_min from below, the row norm
    from above.
    """

    h: np.ndarray | None
    """The solution (m,); None where W_A has fewer rows than columns or is rank-deficient
    (then `full_rank` is False). With no pinned row at all: zeros, full_rank False."""
    full_rank: bool
    """W_A has at least as many rows as columns and its Cholesky factor's pivots are within
    1e-7 of each other (`_linalg.least_squares`' test)."""
    sigma_min: float = float("nan")
    """A proven lower bound on sigma_min(W_A) from R (nan where not certified; 0 where
    nothing is proven)."""
    inverse_row_norm: float = float("nan")
    """An upper bound on max_i ||row i of W_A^+||_2 = max_i ||row i of R^-1||_2, so that
    ||h - h*||_inf <= inverse_row_norm * ||W_A (h - h*)||_2 (nan where not certified; inf
    where nothing is proven)."""
    gram: np.ndarray | None = None
    """W_A' W_A (upper triangle) where a backend keeps it, for reuse; else None (the default
    backend factors it in place: nothing reads it now)."""


class Backend(ABC):
    """A solver backend: one layer problem in, one `LPResult` out.

    `solve_many` receives all of a layer's problems at once (a batched walk hands them over
    in one call); the default solves them one by one, a batched backend overrides it.
    The front door passes every answer through `check_result`, except from a backend that
    sets `checks_answers` (it returns only answers that passed it, as `Fallback` does).

    `pinned_least_squares` is the exact method's shortcut for a whole batch (one layer, one
    band per sample); the default runs `_linalg` sample by sample, a batched backend (the
    PyTorch one) overrides it with batched Cholesky factorisations.
    """

    checks_answers: ClassVar[bool] = False

    @abstractmethod
    def solve(self, problem: LayerProblem) -> LPResult:
        """Solve the problem as given (`t_max`, if set, is a ceiling on every slack)."""

    def solve_many(self, problems: Sequence[LayerProblem]) -> list[LPResult]:
        return [self.solve(problem) for problem in problems]

    def pinned_least_squares(self, operator: LinearOperator, bias: np.ndarray | None,
                             bands: Sequence[Band], certify: bool) -> list[PinnedFit]:
        """For each band: least squares on its pinned (two-sided) rows, target
        band.center - bias there; with `certify`, the bounds R certifies (`PinnedFit`).

        The layer inversion makes one call per layer for its whole batch, before any LP,
        and checks each h itself. The default's h is bitwise `_linalg.least_squares`'."""
        return [_pinned_fit(operator, bias, band, certify) for band in bands]


def _pinned_fit(operator: LinearOperator, bias: np.ndarray | None, band: Band,
                certify: bool) -> PinnedFit:
    rows = band.two_sided
    if not rows.any():
        # The minimum-norm solution of the empty system, h = 0: a candidate to be checked.
        return PinnedFit(np.zeros(operator.shape[1]), False)
    target = band.center[rows] - (0.0 if bias is None else bias[rows])
    h, full_rank, factor = linalg.least_squares_factor(operator.rows(rows), target)
    if not (certify and full_rank):
        return PinnedFit(h, full_rank)
    sigma_min, row_norm = linalg.inverse_factor_bounds(factor, int(rows.sum()), overwrite=True)
    return PinnedFit(h, full_rank, sigma_min, row_norm)


@dataclass(frozen=True)
class FunctionBackend(Backend):
    """A backend made of one function problem -> result."""

    function: Callable[[LayerProblem], LPResult]

    def solve(self, problem: LayerProblem) -> LPResult:
        return self.function(problem)


# --------------------------------------------------------------------------- the post-check
def check_result(problem: LayerProblem, result: LPResult) -> LPResult:
    """Every backend's answer, checked (as scipy.optimize's `_check_result` does).

    An answer of the wrong shape is replaced by zeros; an 'optimal' one must have a finite h
    and t, an objective equal to sum(t) and a non-negative accuracy, and respect every bound
    and row to FEASIBILITY. A failure turns the status into NUMERICAL_ERROR with a message
    (the layer reports 'solver_error'). A passing answer is returned untouched.
    """
    m, n_t = problem.n_inputs, len(problem.slack_floors())
    h, t = np.asarray(result.h), np.asarray(result.t)
    if h.shape != (m,) or t.shape != (n_t,):
        flaw = f"h has shape {h.shape} and t {t.shape}, expected ({m},) and ({n_t},)"
        result.h, result.t = np.zeros(m), np.zeros(n_t)
    elif result.status != Status.OPTIMAL:
        return result
    else:
        flaw = _flaw_of_optimal(problem, result)
    if flaw is not None:
        result.message = f"{result.solver}'s answer fails the post-check: {flaw}"
        result.status = Status.NUMERICAL_ERROR
    return result


def _flaw_of_optimal(problem: LayerProblem, result: LPResult) -> str | None:
    h, t = np.asarray(result.h, dtype=np.float64), np.asarray(result.t, dtype=np.float64)
    if not (np.all(np.isfinite(h)) and np.all(np.isfinite(t))):
        return "h or t is not finite"
    objective, accuracy = float(result.objective), float(result.accuracy)
    if not accuracy >= 0.0:
        return f"accuracy {accuracy!r} is not >= 0"
    total = float(t.sum())
    if not abs(objective - total) <= ROUNDOFF * (1 + abs(total)) + accuracy:
        return f"objective {objective!r} differs from sum(t) = {total!r}"
    violation, scale = _violation(problem, h, t)
    if violation > FEASIBILITY * scale:
        return (f"the point breaks a bound or row by {violation:.3g} (tolerance "
                f"{FEASIBILITY * scale:.1g})")
    return None


def _violation(problem: LayerProblem, h: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """The largest violation of a row, a box bound or a slack bound, and the terms' size."""
    lower, upper = problem.shifted_band()
    band = problem.band
    u = problem.operator.apply(h)
    t_rows = t if problem.norm == "l1" else np.full(problem.n_rows, t[0])
    with np.errstate(invalid="ignore"):
        above = np.where(np.isfinite(upper), u - upper - band.upper_slope * t_rows, -np.inf)
        below = np.where(np.isfinite(lower), lower - u - band.lower_slope * t_rows, -np.inf)
    ceiling = np.inf if problem.t_max is None else problem.t_max * (1 + 1e-9)
    worst = max(np.max(above, initial=0.0), np.max(below, initial=0.0),
                np.max(problem.h_low - h, initial=0.0), np.max(h - problem.h_high, initial=0.0),
                np.max(problem.slack_floors() - t, initial=0.0),
                np.max(t - ceiling, initial=0.0))
    ends = np.concatenate([upper[np.isfinite(upper)], lower[np.isfinite(lower)]])
    scale = 1.0 + max(np.max(np.abs(u), initial=0.0), np.max(np.abs(ends), initial=0.0),
                      np.max(np.abs(h), initial=0.0), np.max(np.abs(t), initial=0.0),
                      np.max(np.abs(band.upper_slope * t_rows)[np.isfinite(upper)], initial=0.0),
                      np.max(np.abs(band.lower_slope * t_rows)[np.isfinite(lower)], initial=0.0))
    return float(worst), float(scale)


# --------------------------------------------------------------------------- shared forms
def slack_needed(problem: LayerProblem, h: np.ndarray) -> float:
    """The smallest shared slack at which h (clipped into its box) meets every band row.

    An upper bound on the l_inf LP's optimum, computed from the point alone: a witness.
    """
    h = np.clip(h, problem.h_low, problem.h_high)
    lower, upper = problem.shifted_band()
    band = problem.band
    u = problem.operator.apply(h)
    with np.errstate(invalid="ignore"):
        above = np.where(np.isfinite(upper), (u - upper) / band.upper_slope, -np.inf)
        below = np.where(np.isfinite(lower), (lower - u) / band.lower_slope, -np.inf)
    return float(max(np.max(above, initial=0.0), np.max(below, initial=0.0),
                     float(problem.slack_floors().max(initial=0.0))))


def constraint_rows(problem: LayerProblem, *, sparse: bool = False
                    ) -> tuple[np.ndarray | sp.csc_array, np.ndarray, np.ndarray]:
    """The band rows as a matrix over (h, T) with row bounds: row_lo <= A x <= row_hi.

    Row j, upper end:  w_j h - su_j T_j <= upper_j ;  lower end:  w_j h + sl_j T_j >= lower_j.
    The explicit form that general solvers take: dense (cvxopt, whose algorithm is dense) or,
    with sparse=True, a CSC matrix with sorted indices and no stored zeros (HiGHS), built from
    the operator's sparse rows; both hold the same entries.
    """
    n = problem.n_rows
    l1 = problem.norm == "l1"
    n_t = n if l1 else 1
    lower, upper = problem.shifted_band()
    band = problem.band
    # Row j, upper end:  w_j h - su_j t <= upper_j ;  lower end:  w_j h + sl_j t >= lower_j.
    # The upper ends' rows first, then the lower ends'; one slack coefficient per row.
    up, low = np.flatnonzero(np.isfinite(upper)), np.flatnonzero(np.isfinite(lower))
    order = np.concatenate([up, low])
    coefficient = np.concatenate([-band.upper_slope[up], band.lower_slope[low]])
    t_column = order if l1 else np.zeros(len(order), dtype=int)
    row_lo = np.concatenate([np.full(len(up), -np.inf), lower[low]])
    row_hi = np.concatenate([upper[up], np.full(len(low), np.inf)])
    if not sparse:
        slack = np.zeros((len(order), n_t))
        slack[np.arange(len(order)), t_column] = coefficient
        return np.hstack([problem.operator.rows(order), slack]), row_lo, row_hi
    slack = sp.csc_array((coefficient, (np.arange(len(order)), t_column)),
                         shape=(len(order), n_t))
    matrix = sp.hstack([problem.operator.rows(order, sparse=True).tocsc(), slack], format="csc")
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix, row_lo, row_hi


@dataclass(frozen=True)
class ExplicitForm:
    """min sum(T) over x = (h, T): lower <= x <= upper, row_lo <= matrix x <= row_hi.

    The form general LP solvers take (HiGHS, cvxopt): `explicit_form` builds it.
    """

    cost: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    matrix: np.ndarray | sp.csc_array
    row_lo: np.ndarray
    row_hi: np.ndarray
    n_inputs: int
    """m, the number of h columns (the slack columns T follow)."""


def explicit_form(problem: LayerProblem, *, sparse: bool = False) -> ExplicitForm:
    """The problem in explicit form, with dense rows or (sparse=True) a CSC matrix."""
    m = problem.n_inputs
    matrix, row_lo, row_hi = constraint_rows(problem, sparse=sparse)
    floors, t_high = slack_bounds(problem)
    return ExplicitForm(np.concatenate([np.zeros(m), np.ones(len(floors))]),
                        np.concatenate([problem.h_low, floors]),
                        np.concatenate([problem.h_high, t_high]), matrix, row_lo, row_hi, m)


def explicit_answer(form: ExplicitForm, x: np.ndarray | None, status: Status, *, solver: str,
                    iterations: int, started: float, message: str,
                    objective_error: float) -> LPResult:
    """The LPResult of a point x = (h, T) of `form` (zeros where the solver gave none).

    `objective_error` bounds the objective's excess over the optimum as the solver states it
    (a duality gap, dual infeasibility); round-off (ROUNDOFF relative) is added to it.
    """
    m = form.n_inputs
    if x is None or len(x) != len(form.cost):
        x = np.zeros(len(form.cost))
    objective = float(x[m:].sum())
    return LPResult(h=x[:m], t=x[m:], objective=objective, status=status, solver=solver,
                    iterations=iterations, seconds=time.perf_counter() - started,
                    message=message, accuracy=objective_error + ROUNDOFF * (1 + abs(objective)))


def slack_bounds(problem: LayerProblem) -> tuple[np.ndarray, np.ndarray]:
    """The slacks' lower and upper bounds (the ceiling t_max, widened by round-off)."""
    n_t = problem.n_rows if problem.norm == "l1" else 1
    floors = problem.slack_floors()
    t_high = np.full(n_t, np.inf if problem.t_max is None else problem.t_max * (1 + 1e-9))
    return floors, t_high
