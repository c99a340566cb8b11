"""The only module that solves linear programs: one layer's l_inf or l_1 fit.

The layer LP, for a weight W (n x m), bias b and a preimage `Band` (activations.py):

    linf:  min t          s.t.  lower_j - sl_j t   <= w_j h + b_j <= upper_j + su_j t,
                                t >= t_floor_j,  h_low <= h <= h_high  (and t <= t_max)
    l1:    min sum_j t_j  s.t.  the same rows with one slack t_j each  (t_j <= t_max).

A stated bound t_max (the user's noise bound) is first decided by the l_inf LP without it,
always feasible, so no solver is asked to prove infeasibility (`_solve_bounded`).

Two solvers:
- `ipm`: a Mehrotra predictor-corrector interior point written for this structure. Every
  constraint touches one row of W (or one variable), so the normal matrix G' D G reduces to
  W' diag(e) W (+ a diagonal) of size m x m, formed with one BLAS syrk: the slacks of l_1 are
  eliminated analytically and the single t of l_inf is a bordered rank-one term. These LPs are
  dense and tall (m unknowns, n >> m rows): a simplex needs ~1000 pivots, this needs ~15
  Cholesky factorisations. Measured: see benchmarks/bench_invert.py and ARCHITECTURE.md.
- `highs`: HiGHS's dual simplex (highspy), the robust general solver. Used when asked for, and
  as the fallback whenever the interior point reports trouble (a Cholesky that fails even with
  regularisation, no convergence).
`least_squares` solves the equality part (eq. 4) by Cholesky of W_A' W_A.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.linalg import blas, lapack

from layerinv._blas import on_one_thread
from layerinv.activations import Band

if TYPE_CHECKING:
    import highspy

SOLVERS = ("auto", "ipm", "highs", "cvxopt")
ROUNDOFF = 1e-9
"""Relative accuracy of a simplex or cvxopt objective beyond what the solver reports
(the interior point's own gap tolerance)."""


@dataclass
class LPResult:
    """One layer LP's answer, modelled on scipy.optimize.OptimizeResult."""

    h: np.ndarray
    """The layer input found (m,)."""
    t: np.ndarray
    """The slack: shape (1,) for linf, (n,) for l1."""
    objective: float
    status: str
    """'optimal', 'infeasible', 'iteration_limit' or 'numerical_error'."""
    solver: str
    iterations: int
    seconds: float
    message: str = ""
    accuracy: float = 0.0
    """How far `objective` may lie above the LP's true optimum, by the solver's own measure
    (interior point: duality gap + primal and dual residual terms at its last iterate)."""

    @property
    def success(self) -> bool:
        return self.status == "optimal"


# --------------------------------------------------------------------------- Cholesky
def _cholesky(matrix: np.ndarray) -> np.ndarray | None:
    """Upper Cholesky factor (Fortran order), retried with growing regularisation; None if all fail.

    Only the upper triangle of `matrix` is read (it may come straight from syrk).
    """
    scale = float(np.mean(np.abs(np.diag(matrix)))) or 1.0
    for shift in (0.0, 1e-12, 1e-10, 1e-8):
        trial = matrix if shift == 0.0 else matrix + shift * scale * np.eye(len(matrix))
        factor, info = lapack.dpotrf(trial, lower=0, clean=0, overwrite_a=0)
        if info == 0:
            return factor
    return None


def _cho_solve(factor: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    solution, info = lapack.dpotrs(factor, rhs, lower=0)
    if info != 0:  # pragma: no cover - dpotrs only fails on bad arguments
        raise RuntimeError(f"dpotrs failed with info={info}")
    return solution


def gram(weight: np.ndarray, row_weights: np.ndarray | None = None) -> np.ndarray:
    """W' diag(row_weights) W by BLAS syrk (upper triangle filled), row_weights >= 0."""
    scaled = weight if row_weights is None else weight * np.sqrt(row_weights)[:, None]
    # A C-ordered (n, m) array is a Fortran (m, n) array: syrk with trans=0 gives W' W, no copy.
    return blas.dsyrk(1.0, scaled.T, trans=0, lower=0)


@on_one_thread
def least_squares(weight: np.ndarray, rhs: np.ndarray
                  ) -> tuple[np.ndarray | None, bool, np.ndarray | None]:
    """Least squares min ||W h - rhs||_2 by Cholesky of W' W.

    Returns (h, full_rank, W' W). When W has fewer rows than columns or the Cholesky fails,
    h is None and full_rank False: the caller treats that layer as not uniquely invertible.
    The Gram matrix (upper triangle) is returned for reuse by `smallest_singular_value`.
    """
    n, m = weight.shape
    if n < m:
        return None, False, None
    normal = gram(weight)
    factor, info = lapack.dpotrf(normal, lower=0, clean=0)
    if info != 0:
        return None, False, normal
    # A positive pivot can still be numerically zero: compare the factor's diagonal spread.
    diag = np.abs(np.diag(factor))
    if diag.min() <= 1e-7 * diag.max():
        return None, False, normal
    return _cho_solve(factor, weight.T @ rhs), True, normal


@on_one_thread
def smallest_singular_value(weight: np.ndarray, normal: np.ndarray | None = None) -> float:
    """sigma_min of W (n x m), from the smallest eigenvalue of W' W (LAPACK dsyevr); 0 if n < m.

    `normal` may pass W' W (upper triangle) when it was formed already.
    """
    n, m = weight.shape
    if n < m or m == 0:
        return 0.0
    from scipy.linalg import eigvalsh

    normal = gram(weight) if normal is None else normal
    smallest = eigvalsh(normal, lower=False, subset_by_index=[0, 0], check_finite=False)
    return float(np.sqrt(max(smallest[0], 0.0)))


@on_one_thread
def pinv_norms(weight: np.ndarray, normal: np.ndarray | None = None) -> tuple[float, float]:
    """(||W^+||_inf, max_i ||row i of W^+||_2) for a full-column-rank W; (inf, inf) if not.

    If every row of W h and of W h* is within a of its target, ||h - h*||_inf <= ||W^+||_inf 2a
    (worst case). With independent row errors each entry of h - h* is about ||(W^+)_i||_2 a,
    25-50x smaller on nearly square W: the typical error handed to the next layer.
    `normal` may pass W' W (upper triangle) when it was formed already.
    """
    n, m = weight.shape
    if n < m:
        return float("inf"), float("inf")
    factor = _cholesky(gram(weight) if normal is None else normal)
    if factor is None:
        return float("inf"), float("inf")
    pinv = _cho_solve(factor, np.ascontiguousarray(weight.T))
    return float(np.abs(pinv).sum(axis=1).max()), float(np.sqrt((pinv**2).sum(axis=1).max()))


# --------------------------------------------------------------------------- problem
@dataclass
class LayerLP:
    """One layer's LP in the form of the module docstring."""

    weight: np.ndarray
    bias: np.ndarray | None
    band: Band
    h_low: np.ndarray
    h_high: np.ndarray
    norm: str  # "linf" or "l1"
    t_max: float | None = None
    """An upper bound on every slack (a noise bound stated by the user), or None."""
    t_min: float = 0.0
    """An extra floor on the shared l_inf slack (kept when rows are screened out)."""

    @property
    def n_rows(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_inputs(self) -> int:
        return int(self.weight.shape[1])

    def shifted_band(self) -> tuple[np.ndarray, np.ndarray]:
        """Band ends at t = 0 with the bias moved to the right-hand side."""
        bias = 0.0 if self.bias is None else self.bias
        return self.band.lower - bias, self.band.upper - bias

    def slack_floors(self) -> np.ndarray:
        """Lower bounds of the slack variables: one per row (l1) or one shared (linf)."""
        if self.norm == "l1":
            return self.band.t_floor
        return np.array([max(float(self.band.t_floor.max(initial=0.0)), self.t_min)])

    def subset(self, rows: np.ndarray) -> LayerLP:
        """The same LP on a subset of the rows (a boolean mask); the l_inf floor is kept."""
        band = self.band
        sub_band = Band(*(getattr(band, name)[rows] for name in
                          ("lower", "lower_slope", "upper", "upper_slope", "t_floor", "center")))
        return LayerLP(self.weight[rows], None if self.bias is None else self.bias[rows],
                       sub_band, self.h_low, self.h_high, self.norm, self.t_max,
                       float(self.slack_floors().max()) if self.norm == "linf" else 0.0)


@on_one_thread
def solve(problem: LayerLP, solver: str = "auto") -> LPResult:
    """Solve a layer LP. `auto` uses the interior point and falls back to HiGHS on trouble.

    With a bound on the slacks (`t_max`), status 'infeasible' means the bound is proven
    contradicted: see `_solve_bounded`.
    """
    if problem.t_max is not None:
        return _solve_bounded(problem, solver)
    return _solve_free(problem, solver)


def _solve_free(problem: LayerLP, solver: str) -> LPResult:
    """The LP as given (a slack ceiling `t_max`, if any, is only a constraint here)."""
    if solver == "cvxopt":
        return solve_cvxopt(problem)
    if solver == "highs":
        return solve_highs(problem)
    result = solve_screened(problem)
    if solver == "auto" and result.status in ("numerical_error", "iteration_limit"):
        fallback = solve_highs(problem)
        fallback.message = f"interior point: {result.status}; solved by HiGHS instead"
        fallback.seconds += result.seconds
        return fallback
    return result


# An interior point's `accuracy` rests on an estimate of ||x - x*|| (2 ||x||), not a proof;
# a contradiction is claimed only beyond this many times it. Measured on 60 layer LPs
# (20 x 60 x 784 decoder and k x 250 x 400/600 nets, noise 0 to 1e-2): the objective's
# excess over the true optimum was at most 0.95 times the accuracy.
ACCURACY_FACTOR = 10.0


def _solve_bounded(problem: LayerLP, solver: str) -> LPResult:
    """A stated bound t_max on every slack, decided before the bounded LP is ever solved.

    Some h meets the bound exactly when the l_inf LP's optimum t* is <= t_max, for l_1 as for
    l_inf (every t_j <= t_max is the l_inf question). So the l_inf LP is solved without the
    bound, an LP that is always feasible, and the bound is reported contradicted
    ('infeasible') only when both (a) the point found needs a slack above t_max (no witness)
    and (b) its objective exceeds t_max by more than ACCURACY_FACTOR times the solver's
    stated accuracy (a lower bound on t*). A bound the data respects is never contradicted:
    the interior point's objective is only accurate to ~1e-10 and the earlier tolerance
    (1e-7 relative) was tighter than that. l_1 then solves with slack ceilings
    max(t_max, the slack the l_inf point needs): feasible, so no solver is asked to prove
    infeasibility (HiGHS answered 'Unknown' on an infeasible l_1 LP). The fit returned meets
    the bound to the solver's accuracy.
    """
    linf = dataclasses.replace(problem, norm="linf", t_max=None)
    check = _solve_free(linf, solver)
    if not check.success:
        return check
    margin = ACCURACY_FACTOR * check.accuracy
    needed = slack_needed(linf, check.h)
    if needed > problem.t_max and check.objective - margin > problem.t_max:
        check.status = "infeasible"
        check.message = (f"the smallest l_inf slack {check.objective:.3g} (accuracy "
                         f"{check.accuracy:.1g}) exceeds the noise bound {problem.t_max:.3g}")
        return check
    if problem.norm == "linf":
        return check
    ceiling = max(problem.t_max, needed)
    bounded = _solve_free(dataclasses.replace(problem, t_max=ceiling), solver)
    bounded.seconds += check.seconds
    bounded.iterations += check.iterations
    return bounded


def slack_needed(problem: LayerLP, h: np.ndarray) -> float:
    """The smallest shared slack at which h (clipped into its box) meets every band row.

    An upper bound on the l_inf LP's optimum, computed from the point alone: a witness.
    """
    h = np.clip(h, problem.h_low, problem.h_high)
    lower, upper = problem.shifted_band()
    band = problem.band
    u = problem.weight @ h
    with np.errstate(invalid="ignore"):
        above = np.where(np.isfinite(upper), (u - upper) / band.upper_slope, -np.inf)
        below = np.where(np.isfinite(lower), (lower - u) / band.lower_slope, -np.inf)
    return float(max(np.max(above, initial=0.0), np.max(below, initial=0.0),
                     float(problem.slack_floors().max(initial=0.0))))


# --------------------------------------------------------------------------- screening
def solve_screened(problem: LayerLP, max_rounds: int = 3) -> LPResult:
    """The interior point on the rows that can bind, verified against all of them.

    A one-sided row (ReLU inactive: u_j <= y_j + t) far below its bound at the least-squares
    point of the pinned rows will not bind at the optimum either. Such rows are left out, the
    smaller LP is solved, and every row left out is checked at its solution; violated rows
    are added back and the LP solved again, so the answer is the full LP's. Halving the rows
    halves the m x m normal-matrix products that dominate each iteration.
    """
    band = problem.band
    one_sided = np.isfinite(band.upper) & ~np.isfinite(band.lower)
    scale = float(np.nanmax(np.abs(np.where(np.isfinite(band.upper), band.upper, np.nan)),
                            initial=1.0))
    start = _screening_point(problem)
    if start is None or one_sided.sum() < problem.n_rows // 4:
        return solve_ipm(problem)
    h0, misfit = start
    margin = 10.0 * misfit + 1e-3 * scale
    keep = ~one_sided | (_room(problem, h0, 0.0) < margin)
    spent, iterations = 0.0, 0
    for _ in range(max_rounds):
        result = solve_ipm(problem.subset(keep))
        spent, iterations = spent + result.seconds, iterations + result.iterations
        if result.status != "optimal":
            break
        t_rows = _row_slacks(problem, keep, result.t)
        room = _room(problem, result.h, t_rows)
        violated = ~keep & (room < -1e-8 * scale)
        if not violated.any():
            result.t = t_rows if problem.norm == "l1" else result.t
            result.objective = float(result.t.sum())
            result.seconds, result.iterations = spent, iterations
            result.message = f"screened: {int(keep.sum())} of {problem.n_rows} rows"
            return result
        keep |= violated | (room < margin)
    full = solve_ipm(problem)
    full.seconds += spent
    return full


def _screening_point(problem: LayerLP) -> tuple[np.ndarray, float] | None:
    """The least-squares point of the pinned rows, clipped into the box, and its misfit."""
    band, bias = problem.band, 0.0 if problem.bias is None else problem.bias
    pinned = band.two_sided
    target = band.center - bias
    h, full_rank, _ = least_squares(problem.weight[pinned], target[pinned])
    if not full_rank:
        return None
    h = np.clip(h, problem.h_low, problem.h_high)
    misfit = float(np.max(np.abs(problem.weight[pinned] @ h - target[pinned]), initial=0.0))
    return h, misfit


def _row_slacks(problem: LayerLP, keep: np.ndarray, t: np.ndarray) -> np.ndarray | float:
    """Each row's slack at a screened solution: the shared t, or (l1) the floor where dropped."""
    if problem.norm == "linf":
        return float(t[0])
    rows = problem.band.t_floor.copy()
    rows[keep] = t
    return rows


def _room(problem: LayerLP, h: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """How far each row's upper end is above W h + b at slack t (negative: violated)."""
    _, upper = problem.shifted_band()
    with np.errstate(invalid="ignore"):
        room = upper + problem.band.upper_slope * t - problem.weight @ h
    return np.where(np.isfinite(room), room, np.inf)


# --------------------------------------------------------------------------- interior point
class _Structure:
    """G, G' and the reduced normal equations of a LayerLP in inequality form G x <= g.

    x = (h, T), T one slack (linf) or n slacks (l1). Constraint blocks, in order:
    upper rows U, lower rows L, h lower bounds, h upper bounds, slack floors and, where the
    problem has a `t_max`, slack ceilings (T <= t_max; empty otherwise).
    """

    def __init__(self, problem: LayerLP):
        self.p = problem
        self.W = problem.weight
        n, m = self.W.shape
        self.m, self.n = m, n
        self.l1 = problem.norm == "l1"
        self.n_t = n if self.l1 else 1
        band = problem.band
        lower, upper = problem.shifted_band()
        self.iu = np.flatnonzero(np.isfinite(upper))
        self.il = np.flatnonzero(np.isfinite(lower))
        self.ihl = np.flatnonzero(np.isfinite(problem.h_low))
        self.ihh = np.flatnonzero(np.isfinite(problem.h_high))
        self.su = band.upper_slope[self.iu]
        self.sl = band.lower_slope[self.il]
        floor = problem.slack_floors()
        self.ceiling = problem.t_max is not None
        ceiling = np.full(self.n_t if self.ceiling else 0, problem.t_max or 0.0)
        self.g = np.concatenate([upper[self.iu], -lower[self.il], -problem.h_low[self.ihl],
                                 problem.h_high[self.ihh], -floor, ceiling])
        sizes = [len(self.iu), len(self.il), len(self.ihl), len(self.ihh), self.n_t,
                 len(ceiling)]
        self.cuts = np.cumsum([0, *sizes])
        self.c = np.concatenate([np.zeros(m), np.ones(self.n_t)])

    def _blocks(self, v: np.ndarray) -> list[np.ndarray]:
        return [v[a:b] for a, b in zip(self.cuts[:-1], self.cuts[1:], strict=True)]

    def _t_rows(self, T: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return T[rows] if self.l1 else np.full(len(rows), T[0])

    def G(self, x: np.ndarray) -> np.ndarray:
        h, T = x[: self.m], x[self.m:]
        u = self.W @ h
        return np.concatenate([
            u[self.iu] - self.su * self._t_rows(T, self.iu),
            -u[self.il] - self.sl * self._t_rows(T, self.il),
            -h[self.ihl], h[self.ihh], -T, T if self.ceiling else T[:0],
        ])

    def GT(self, lam: np.ndarray) -> np.ndarray:
        lu, ll, lhl, lhh, lf, lc = self._blocks(lam)
        if len(lc):
            lf = lf - lc  # a ceiling T <= t_max enters with the opposite sign of a floor
        row = np.zeros(self.n)
        row[self.iu] += lu
        row[self.il] -= ll
        gh = self.W.T @ row
        gh[self.ihl] -= lhl
        gh[self.ihh] += lhh
        if self.l1:
            gt = -lf.copy()
            gt[self.iu] -= self.su * lu
            gt[self.il] -= self.sl * ll
        else:
            gt = np.array([-(self.su @ lu) - (self.sl @ ll) - lf[0]])
        return np.concatenate([gh, gt])

    def factor(self, d: np.ndarray) -> bool:
        """Factor G' diag(d) G; False if even the regularised Cholesky fails.

        Every index array (iu, il, ihl, ihh) holds distinct indices, so `a[idx] += v` adds
        each term once (no need for the much slower unbuffered np.add.at).
        """
        du, dl, dhl, dhh, df, dc = self._blocks(d)
        if len(dc):
            df = df + dc  # floors and ceilings both add d to the diagonal of the T block
        e, f, q_rows = np.zeros(self.n), np.zeros(self.n), np.zeros(self.n)
        e[self.iu] += du
        e[self.il] += dl
        f[self.iu] -= self.su * du   # d(row of h) * d(coefficient of T)
        f[self.il] += self.sl * dl
        q_rows[self.iu] += self.su**2 * du
        q_rows[self.il] += self.sl**2 * dl
        h_diag = np.zeros(self.m)
        h_diag[self.ihl] += dhl
        h_diag[self.ihh] += dhh
        if self.l1:
            self.q = q_rows + df                       # diagonal T block, > 0 by the floors
            e = np.maximum(e - f * f / self.q, 0.0)    # Schur complement of the T block
        else:
            self.q = np.array([q_rows.sum() + df[0]])
        self.f = f
        matrix = gram(self.W, e)
        matrix[np.diag_indices(self.m)] += h_diag
        self.chol = _cholesky(matrix)
        if self.chol is None:
            return False
        if not self.l1:
            # Bordered system [[M, v], [v', q]]: keep M^-1 v and the Schur scalar.
            self.v = self.W.T @ f
            self.Minv_v = _cho_solve(self.chol, self.v)
            self.schur = self.q[0] - self.v @ self.Minv_v
            if not self.schur > 1e-300:
                return False
        return True

    def normal_solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solve (G' D G) dx = rhs with the last factorisation."""
        rh, rt = rhs[: self.m], rhs[self.m:]
        if self.l1:
            dh = _cho_solve(self.chol, rh - self.W.T @ (self.f * rt / self.q))
            dt = (rt - self.f * (self.W @ dh)) / self.q
        else:
            Minv_rh = _cho_solve(self.chol, rh)
            dt = np.array([(rt[0] - self.v @ Minv_rh) / self.schur])
            dh = Minv_rh - self.Minv_v * dt[0]
        return np.concatenate([dh, dt])

    def start(self, h0: np.ndarray | None) -> np.ndarray:
        """A starting x: h0 (or 0) and slacks that make every band row hold."""
        h = np.zeros(self.m) if h0 is None else h0.copy()
        u = self.W @ h
        lower, upper = self.p.shifted_band()
        need = np.zeros(self.n)
        with np.errstate(invalid="ignore"):
            need[self.iu] = np.maximum(need[self.iu], (u[self.iu] - upper[self.iu]) / self.su)
            need[self.il] = np.maximum(need[self.il], (lower[self.il] - u[self.il]) / self.sl)
        need = np.maximum(need, self.p.band.t_floor)
        need[0] = max(need[0], self.p.t_min)
        T = need + 1e-3 * (1 + np.abs(need)) if self.l1 else np.array([need.max() * 1.001 + 1e-3])
        return np.concatenate([h, T])


@on_one_thread
def solve_ipm(problem: LayerLP, *, h_start: np.ndarray | None = None, tol: float = 1e-9,
              max_iter: int = 80) -> LPResult:
    """Mehrotra predictor-corrector on the structured normal equations (see _Structure)."""
    started = time.perf_counter()
    st = _Structure(problem)
    x = st.start(h_start)
    s, lam = _initial_slacks(st.g - st.G(x))
    n_con = len(s)
    norm_g, norm_c = 1 + np.linalg.norm(st.g), 1 + np.linalg.norm(st.c)
    status, iterations, accuracy = "iteration_limit", 0, np.inf
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        r_d = st.c + st.GT(lam)
        r_p = st.G(x) + s - st.g
        mu = s @ lam / n_con
        objective = st.c @ x
        if (np.linalg.norm(r_p) <= tol * norm_g and np.linalg.norm(r_d) <= tol * norm_c
                and s @ lam <= tol * (1 + abs(objective))):
            status = "optimal"
            accuracy = _objective_accuracy(x, s, lam, r_p, r_d)
            break
        if not st.factor(lam / s):
            status = "numerical_error"
            break
        # Predictor (affine scaling), then Mehrotra's corrector with centring sigma.
        dx, ds, dl = _newton(st, x, s, lam, r_d, r_p, s * lam)
        ap, ad = _step_to_boundary(s, ds), _step_to_boundary(lam, dl)
        mu_aff = (s + ap * ds) @ (lam + ad * dl) / n_con
        sigma = (mu_aff / mu) ** 3 if mu > 0 else 0.0
        dx, ds, dl = _newton(st, x, s, lam, r_d, r_p, s * lam + ds * dl - sigma * mu)
        ap = min(1.0, 0.995 * _step_to_boundary(s, ds, cap=np.inf))
        ad = min(1.0, 0.995 * _step_to_boundary(lam, dl, cap=np.inf))
        x, s, lam = x + ap * dx, s + ap * ds, lam + ad * dl
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(lam))):
            status = "numerical_error"
            break
    h, T = x[: st.m], x[st.m:]
    return LPResult(h=h, t=T, objective=float(T.sum()), status=status, solver="ipm",
                    iterations=iterations, seconds=time.perf_counter() - started,
                    accuracy=accuracy)


def _objective_accuracy(x: np.ndarray, s: np.ndarray, lam: np.ndarray, r_p: np.ndarray,
                        r_d: np.ndarray) -> float:
    """How far c'x may lie above the optimum p*, from the last iterate.

    With c = r_d - G' lam and G x* <= g: c'x - p* <= s'lam - lam'r_p + r_d'(x - x*); the
    last term is estimated with ||x - x*|| <= 2 ||x|| (x* unknown; both are optimal-face
    points of the same scale).
    """
    return float(s @ lam + abs(lam @ r_p) + 2 * np.linalg.norm(r_d) * np.linalg.norm(x))


def _initial_slacks(residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mehrotra's starting slacks and multipliers from s~ = g - G x0 (Nocedal & Wright 14.4)."""
    s = residual + max(-1.5 * residual.min(), 0.0)
    lam = np.ones_like(s)
    s = np.maximum(s, 1e-8)
    gap = s @ lam
    return s + 0.5 * gap / lam.sum(), lam + 0.5 * gap / s.sum()


def _newton(st: _Structure, x: np.ndarray, s: np.ndarray, lam: np.ndarray, r_d: np.ndarray,
            r_p: np.ndarray, r_c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Newton direction for complementarity target r_c (s o lam -> s o lam - r_c)."""
    dx = st.normal_solve(-r_d + st.GT((r_c - lam * r_p) / s))
    ds = -r_p - st.G(dx)
    dl = (-r_c - lam * ds) / s
    return dx, ds, dl


def _step_to_boundary(v: np.ndarray, dv: np.ndarray, cap: float = 1.0) -> float:
    negative = dv < 0
    if not negative.any():
        return cap
    return float(min(cap, np.min(-v[negative] / dv[negative])))


# --------------------------------------------------------------------------- HiGHS
_BANNER_LOCK = threading.Lock()
_banner_shown = False


def new_highs() -> highspy.Highs:
    """A silent highspy.Highs.

    The first Highs of a process prints a copyright banner on the C stdout before any option
    can be set; it would land in the middle of the command line's output, so that one
    construction runs with file descriptor 1 pointed at /dev/null.
    """
    import highspy

    global _banner_shown
    with _BANNER_LOCK:
        if _banner_shown:
            highs = highspy.Highs()
        else:
            sys.stdout.flush()
            saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            try:
                highs = highspy.Highs()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
                os.close(devnull)
            _banner_shown = True
    highs.setOptionValue("output_flag", False)
    return highs


def _constraint_rows(problem: LayerLP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The band rows as a dense matrix over (h, T) with row bounds: row_lo <= A x <= row_hi.

    Row j, upper end:  w_j h - su_j T_j <= upper_j ;  lower end:  w_j h + sl_j T_j >= lower_j.
    """
    W, n, m = problem.weight, problem.n_rows, problem.n_inputs
    l1 = problem.norm == "l1"
    n_t = n if l1 else 1
    lower, upper = problem.shifted_band()
    band = problem.band
    rows, row_lo, row_hi = [], [], []
    t_index = np.arange(n) if l1 else np.zeros(n, dtype=int)
    # Row j, upper end:  w_j h - su_j t <= upper_j ;  lower end:  w_j h + sl_j t >= lower_j.
    for side, ends, slopes, sign in ((0, upper, band.upper_slope, -1.0),
                                     (1, lower, band.lower_slope, 1.0)):
        keep = np.flatnonzero(np.isfinite(ends))
        block = np.zeros((len(keep), m + n_t))
        block[:, :m] = W[keep]
        block[np.arange(len(keep)), m + t_index[keep]] = sign * slopes[keep]
        rows.append(block)
        row_lo.append(np.full(len(keep), -np.inf) if side == 0 else ends[keep])
        row_hi.append(ends[keep] if side == 0 else np.full(len(keep), np.inf))
    return np.vstack(rows), np.concatenate(row_lo), np.concatenate(row_hi)


def _slack_bounds(problem: LayerLP) -> tuple[np.ndarray, np.ndarray]:
    n_t = problem.n_rows if problem.norm == "l1" else 1
    floors = problem.slack_floors()
    t_high = np.full(n_t, np.inf if problem.t_max is None else problem.t_max * (1 + 1e-9))
    return floors, t_high


@on_one_thread
def solve_highs(problem: LayerLP) -> LPResult:
    """Dual simplex in HiGHS (presolve off: measured faster on these dense layers)."""
    import highspy

    started = time.perf_counter()
    m = problem.n_inputs
    matrix, row_lo, row_hi = _constraint_rows(problem)
    floors, t_high = _slack_bounds(problem)
    n_t = len(floors)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = m + n_t, matrix.shape[0]
    lp.col_cost_ = np.concatenate([np.zeros(m), np.ones(n_t)])
    lp.col_lower_ = np.concatenate([problem.h_low, floors])
    lp.col_upper_ = np.concatenate([problem.h_high, t_high])
    lp.row_lower_ = row_lo
    lp.row_upper_ = row_hi
    nz_rows, nz_cols = np.nonzero(matrix)
    order = np.lexsort((nz_rows, nz_cols))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(nz_cols[order], np.arange(m + n_t + 1))
    lp.a_matrix_.index_ = nz_rows[order]
    lp.a_matrix_.value_ = matrix[nz_rows[order], nz_cols[order]]
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = m + n_t, matrix.shape[0]

    highs = new_highs()
    highs.setOptionValue("presolve", "off")
    highs.setOptionValue("solver", "simplex")
    highs.setOptionValue("simplex_strategy", 1)  # dual simplex
    highs.passModel(lp)
    highs.run()
    model_status = highs.getModelStatus()
    x = np.asarray(highs.getSolution().col_value, dtype=np.float64)
    if len(x) != m + n_t:
        x = np.zeros(m + n_t)
    status = {
        highspy.HighsModelStatus.kOptimal: "optimal",
        highspy.HighsModelStatus.kInfeasible: "infeasible",
        highspy.HighsModelStatus.kIterationLimit: "iteration_limit",
        highspy.HighsModelStatus.kTimeLimit: "iteration_limit",
    }.get(model_status, "numerical_error")
    info = highs.getInfo()
    objective = float(x[m:].sum())
    # A simplex point infeasible by up to HiGHS's tolerance is optimal for a slightly relaxed
    # LP, whose optimum is below the true one: only dual infeasibility and round-off can put
    # the objective above it.
    accuracy = (2 * float(info.max_dual_infeasibility) * (1 + float(np.abs(x).sum()))
                + ROUNDOFF * (1 + abs(objective)))
    return LPResult(h=x[:m], t=x[m:], objective=objective, status=status,
                    solver="highs", iterations=int(info.simplex_iteration_count),
                    seconds=time.perf_counter() - started,
                    message=highs.modelStatusToString(model_status), accuracy=accuracy)


# --------------------------------------------------------------------------- cvxopt
@on_one_thread
def solve_cvxopt(problem: LayerLP) -> LPResult:
    """cvxopt's default LP solver (the paper authors' choice), dense matrices: a reference.

    Needs the optional `cvxopt` package (`pip install layerinv[bench]`).
    """
    try:
        from cvxopt import matrix as cvx_matrix
        from cvxopt import solvers
    except ImportError:
        from layerinv.errors import InputError

        raise InputError("solver='cvxopt' needs the cvxopt package: pip install cvxopt") from None
    started = time.perf_counter()
    m = problem.n_inputs
    dense, row_lo, row_hi = _constraint_rows(problem)
    floors, t_high = _slack_bounds(problem)
    n_t = len(floors)
    # Inequality form G x <= h: upper ends as they are, lower ends negated, then the bounds.
    blocks = [dense[np.isfinite(row_hi)], -dense[np.isfinite(row_lo)]]
    rhs = [row_hi[np.isfinite(row_hi)], -row_lo[np.isfinite(row_lo)]]
    eye = np.eye(m + n_t)
    for sign, bound in ((-1.0, np.concatenate([problem.h_low, floors])),
                        (1.0, np.concatenate([problem.h_high, t_high]))):
        keep = np.isfinite(bound)
        blocks.append(sign * eye[keep])
        rhs.append(sign * bound[keep])
    cost = np.concatenate([np.zeros(m), np.ones(n_t)])
    solvers.options["show_progress"] = False
    answer = solvers.lp(cvx_matrix(cost), cvx_matrix(np.vstack(blocks)),
                        cvx_matrix(np.concatenate(rhs)))
    x = np.zeros(m + n_t) if answer["x"] is None else np.array(answer["x"]).ravel()
    status = {"optimal": "optimal", "primal infeasible": "infeasible"}.get(
        answer["status"], "numerical_error")
    objective = float(x[m:].sum())
    gap = answer.get("gap")
    accuracy = (np.inf if gap is None else abs(float(gap))) + ROUNDOFF * (1 + abs(objective))
    return LPResult(h=x[:m], t=x[m:], objective=objective, status=status,
                    solver="cvxopt", iterations=int(answer.get("iterations") or 0),
                    seconds=time.perf_counter() - started, message=str(answer["status"]),
                    accuracy=accuracy)
