"""DAQP's dual active-set method (MIT, `daqp` on PyPI): the 'daqp' backend.

The LP goes to DAQP as a QP with H = 0 (the explicit form, dense rows), which DAQP solves
by proximal-point iterations (`_OPTIONS`): a sequence of strictly convex QPs whose fixed
point is the LP's solution. It starts from the least-squares point of the pinned
(two-sided) rows, clipped into the box (the interior point's `_screening_point`), with the
slacks that point needs: DAQP's `primal_start` takes the constraints active there as its
first working set and the point as its first proximal centre. The slack columns are
scaled to the start's slack (`_column_scale`); without that the warm start cycled.

Its `accuracy` is computed here, not taken from DAQP: any row multipliers give, by weak
duality, a lower bound on the optimum (`_dual_bound`), and DAQP's multipliers give a tight
one. The excess of the objective over that bound is the accuracy: a proof, except on
columns with an infinite bound in the direction their reduced cost points, whose term is
estimated as the interior point's is (|x*_j| <= 2 (1 + ||x||_inf)). An exit flag 1
whose gap is not certified to CERTIFIED, and any other flag, is retried once, cold and
with DAQP's own column units (`solve_daqp`); an uncertified answer is then a numerical
error, never 'optimal'. DAQP's 'infeasible' is believed only on an LP with a slack ceiling:
without one the LP is feasible by construction (measured: the scaled warm start and the
scaled cold start both said 'infeasible' on a feasible layer whose slack was 1e-7).

Needs the `daqp` package, a dependency of layerinv (a 1.1 MB MIT wheel); where it is
missing, solver='daqp' is one InputError and solver='auto' goes without it (`available`).
"""

from __future__ import annotations

import time
from types import ModuleType

import numpy as np

from layerinv._blas import on_one_thread
from layerinv.results import Status
from layerinv.solvers._ipm import _screening_point
from layerinv.solvers.problem import (
    ROUNDOFF,
    ExplicitForm,
    FunctionBackend,
    LayerProblem,
    LPResult,
    explicit_answer,
    explicit_form,
    slack_needed,
)

_INFINITY = 1e30
"""DAQP's infinity (DAQP_INF): a bound at or beyond it is no bound."""

_OPTIONS = {"primal_tol": 1e-10, "eps_prox": -1e-4, "eta_prox": 1e-12}
"""DAQP's settings here, each measured (DAQP's defaults: 1e-6, -1e-6, automatic).
primal_tol: a point infeasible by 1e-6 is the optimum of a relaxed LP; its objective lay
4e-4 relative below HiGHS's (feasibility tolerance 1e-7) on a layer with slack 5e-5.
eps_prox (the proximal weight, negative: only for a singular H, as H = 0 is) and eta_prox
(the proximal loop stops at a fixed point, ||x - x_old||_inf below about eta_prox times
the weight; its automatic value is 1e-6 in DAQP's source): with the defaults, 6 of 120
random noisy l1 layer LPs (2-25 unknowns, 30-120 rows) stopped with exit flag 1 at points
their multipliers did not certify (one 4e-4 relative above the optimum); with these, 120 of 120 were
certified, in 1.7 ms against 3.2 ms, and the captured (600, 250) and (250, 110) l_inf
layers took the same iterations."""

CERTIFIED = 1e-9
"""An answer counts as optimal only with a certified gap (objective minus the dual bound)
of at most CERTIFIED * (1 + |objective|), the interior point's own gap tolerance."""

_STATUS = {1: Status.OPTIMAL, -1: Status.INFEASIBLE, -4: Status.MAX_STEPS,
           -7: Status.MAX_STEPS}
"""DAQP's exit flags (constants.h): 1 optimal, -1 infeasible, -4 iteration limit, -7 time
limit; every other (-2 cycling, -3 unbounded, -5 non-convex, -6 overdetermined initial
working set, 2 'soft optimal', which needs soft constraints this backend never sets) is a
numerical error."""


def available() -> bool:
    """Whether the daqp package imports here (the `import` of solve_daqp, without raising)."""
    try:
        import daqp  # noqa: F401
    except ImportError:
        return False
    return True


@on_one_thread
def solve_daqp(problem: LayerProblem) -> LPResult:
    """The layer LP by DAQP, warm-started from the least-squares point of the pinned rows.

    Two attempts at most: (1) from the least-squares point, the slack columns in units of its
    slack (`_column_scale`), the fast one; (2) where (1) is not certified optimal: cold, every
    column in its own units, DAQP as it comes. The iterations reported are both attempts'.
    """
    try:
        import daqp
    except ImportError:
        from layerinv.errors import InputError

        raise InputError("solver='daqp' needs the daqp package: pip install daqp") from None
    started = time.perf_counter()
    form = explicit_form(problem)
    start = _start(problem, form)
    scale = _column_scale(form, start)
    attempts = [(start, scale), (None, np.ones_like(scale))]
    iterations, flags = 0, []
    for point, columns in attempts:
        x, flag, spent, lam = _run(daqp, form, columns, point)
        iterations += spent
        flags.append(str(flag))
        gap = _gap(form, x, flag, lam)
        if gap <= CERTIFIED:
            break
    status = _STATUS.get(flag, Status.NUMERICAL_ERROR)
    message = "daqp exit flag " + ", then ".join(flags)
    objective = float(x[form.n_inputs:].sum())
    error = gap * (1 + abs(objective)) if status == Status.OPTIMAL else np.inf
    if status == Status.OPTIMAL and gap > CERTIFIED:
        status = Status.NUMERICAL_ERROR
        message += f"; uncertified: its multipliers bound the gap by {error:.3g} only"
    if status == Status.INFEASIBLE and problem.t_max is None:
        # Without a ceiling every h in the box fits with a large enough slack.
        status = Status.NUMERICAL_ERROR
        message += ", on an LP that is feasible (no slack ceiling)"
    return explicit_answer(form, x, status, solver="daqp", iterations=iterations,
                           started=started, message=message, objective_error=error)


def _gap(form: ExplicitForm, x: np.ndarray, flag: int, lam: np.ndarray) -> float:
    """The objective's certified excess over the optimum, relative to 1 + |objective|; inf
    unless DAQP says optimal.

    DAQP's multipliers: H x + c + A' lam = 0, lam > 0 at an upper end, so y = -lam. The rows
    are the form's (only columns are scaled), so y serves the unscaled form. They are those
    of its last proximal QP; least squares on its active set (`_polished`) is tried when
    they leave a gap above round-off.
    """
    if flag != 1:
        return np.inf
    n_x = len(form.cost)
    objective = float(x[form.n_inputs:].sum())
    bound = _dual_bound(form, x, -lam[n_x:])
    if objective - bound > ROUNDOFF * (1 + abs(objective)):
        bound = max(bound, _dual_bound(form, x, _polished(form, lam)))
    return max(objective - bound, 0.0) / (1 + abs(objective))


def _column_scale(form: ExplicitForm, start: np.ndarray | None) -> np.ndarray:
    """Column scales: 1 for h; for the slacks the start's largest slack (or the floor), but
    at least 1e-3 of the largest finite row end.

    DAQP's proximal steps are measured in the variables' units. With the slack in its own
    units (about 1e-3 here) against a cost of 1, the warm-started solve of captured
    (600, 250) layer LPs cycled (exit flag -2) at t = 1000; in units of the start's slack it
    converged in 70-100 iterations (cold: 700-1100). A unit far below the rows' size fails
    the other way: on 400 random noisy layer LPs (noise 1e-9 to 1e-1) the start's slack
    alone let 140 stop uncertified (most 'infeasible', falsely); with the 1e-3 floor, 6.
    """
    m = form.n_inputs
    slacks = form.lower[m:] if start is None else np.maximum(start[m:], form.lower[m:])
    ends = np.concatenate([form.row_lo[np.isfinite(form.row_lo)],
                           form.row_hi[np.isfinite(form.row_hi)]])
    unit = max(float(np.max(slacks, initial=0.0)), 1e-3 * float(np.max(np.abs(ends),
                                                                         initial=0.0)))
    return np.concatenate([np.ones(m), np.full(len(form.cost) - m, unit if unit > 0 else 1.0)])


def _run(daqp: ModuleType, form: ExplicitForm, scale: np.ndarray, start: np.ndarray | None
         ) -> tuple[np.ndarray, int, int, np.ndarray]:
    """One DAQP solve of the form in scaled columns x = scale * v: (x, flag, iterations, lam)."""
    n_x = len(form.cost)
    # DAQP reads the first n_x bounds as simple bounds on v, the rest as the rows' ends.
    upper = np.minimum(np.concatenate([form.upper / scale, form.row_hi]), _INFINITY)
    lower = np.maximum(np.concatenate([form.lower / scale, form.row_lo]), -_INFINITY)
    v, _, flag, info = daqp.solve(np.zeros((n_x, n_x)), form.cost * scale,
                                  np.ascontiguousarray(form.matrix * scale, dtype=np.float64),
                                  upper, lower, np.zeros(len(upper), dtype=np.int32),
                                  primal_start=None if start is None else start / scale,
                                  iter_limit=max(10_000, 10 * len(upper)), **_OPTIONS)
    return (np.asarray(v) * scale, int(flag), int(info["iterations"]),
            np.asarray(info["lam"]))


def _start(problem: LayerProblem, form: ExplicitForm) -> np.ndarray | None:
    """(h, T) at the least-squares point of the pinned rows; None where it is not unique."""
    point = _screening_point(problem)
    if point is None:
        return None
    h = point[0]
    floors = form.lower[form.n_inputs:]
    if problem.norm == "linf":
        t = np.array([slack_needed(problem, h)])
    else:  # each row's own slack: the shared one of the row alone
        lower, upper = problem.shifted_band()
        band, u = problem.band, problem.operator.apply(h)
        with np.errstate(invalid="ignore"):
            above = np.where(np.isfinite(upper), (u - upper) / band.upper_slope, 0.0)
            below = np.where(np.isfinite(lower), (lower - u) / band.lower_slope, 0.0)
        t = np.maximum(np.maximum(above, below), floors)
    return np.concatenate([h, np.minimum(np.maximum(t, floors), form.upper[form.n_inputs:])])


def _polished(form: ExplicitForm, lam: np.ndarray) -> np.ndarray:
    """Row multipliers on DAQP's active rows that zero the reduced costs of its free columns.

    DAQP's own multipliers are those of its last proximal QP, off by about eps_prox times
    its last step; a column with an infinite bound then charges its reduced cost times an
    estimate of |x*_j|. Least squares over the active rows removes that residual (the
    columns at an active bound keep theirs, which their finite bound covers).
    """
    n_x = len(form.cost)
    rows = np.flatnonzero(lam[n_x:] != 0)
    free = lam[:n_x] == 0
    y = np.zeros(len(lam) - n_x)
    if len(rows):
        y[rows] = np.linalg.lstsq(form.matrix[np.ix_(rows, free)].T, form.cost[free],
                                  rcond=None)[0]
    return y


def _dual_bound(form: ExplicitForm, x: np.ndarray, y: np.ndarray) -> float:
    """A lower bound on min c'x over the form, from row multipliers y (weak duality).

    For every feasible x: c'x = y'(A x) + r'x with r = c - A'y, and each term is bounded
    below by the end of its row or column that its sign points to. A multiplier pointing at
    an infinite row end is dropped (set to 0) first. A column with an infinite bound where
    its reduced cost points would make the bound -inf; its term is estimated with
    |x*_j| <= 2 (1 + ||x||_inf). The sum's own round-off is added to the gap.
    """
    y = np.where((y > 0) & ~np.isfinite(form.row_lo), 0.0, y)
    y = np.where((y < 0) & ~np.isfinite(form.row_hi), 0.0, y)
    reduced = form.cost - form.matrix.T @ y
    with np.errstate(invalid="ignore"):
        rows = np.where(y > 0, y * form.row_lo, np.where(y < 0, y * form.row_hi, 0.0))
        end = np.where(reduced > 0, form.lower, form.upper)
        columns = np.where(reduced == 0, 0.0, reduced * end)
    scale = 2.0 * (1.0 + float(np.max(np.abs(x), initial=0.0)))
    columns = np.where(np.isfinite(end) | (reduced == 0), columns, -np.abs(reduced) * scale)
    terms = np.concatenate([rows, columns])
    return float(terms.sum() - 1e-15 * len(terms) * np.abs(terms).sum())


BACKEND = FunctionBackend(solve_daqp)
