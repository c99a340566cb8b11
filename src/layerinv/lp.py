"""The only module that solves linear programs: one layer's l_inf or l_1 fit.

The layer LP, for a weight W (n x m), bias b and a preimage `Band` (activations.py):

    linf:  min t          s.t.  lower_j - sl_j t   <= w_j h + b_j <= upper_j + su_j t,
                                t >= t_floor_j,  h_low <= h <= h_high
    l1:    min sum_j t_j  s.t.  the same rows with one slack t_j each.

Two solvers:
- `ipm`: a Mehrotra predictor-corrector interior point written for this structure. Every
  constraint touches one row of W (or one variable), so the normal matrix G' D G reduces to
  W' diag(e) W (+ a diagonal) of size m x m, formed with one BLAS syrk: the slacks of l_1 are
  eliminated analytically and the single t of l_inf is a bordered rank-one term. These LPs are
  dense and tall (m unknowns, n >> m rows): a simplex needs ~1000 pivots, this needs ~15
  Cholesky factorisations. Measured: see benchmarks/bench_invert.py and ARCHITECTURE.md.
- `highs`: HiGHS's dual simplex (highspy), the robust general solver. Used when asked for, when
  the problem may be infeasible (an l_1 noise bound), and as the fallback whenever the interior
  point reports trouble (a Cholesky that fails even with regularisation, no convergence).
`least_squares` solves the equality part (eq. 4) by Cholesky of W_A' W_A.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.linalg import blas, lapack

from .activations import Band

SOLVERS = ("auto", "ipm", "highs")


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


def least_squares(weight: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """Least squares min ||W h - rhs||_2 by Cholesky of W' W.

    Returns (h, full_rank). When W has fewer rows than columns or the Cholesky fails, returns
    (None, False): the caller treats that layer as not uniquely invertible.
    """
    n, m = weight.shape
    if n < m:
        return None, False
    factor, info = lapack.dpotrf(gram(weight), lower=0, clean=0)
    if info != 0:
        return None, False
    # A positive pivot can still be numerically zero: compare the factor's diagonal spread.
    diag = np.abs(np.diag(factor))
    if diag.min() <= 1e-7 * diag.max():
        return None, False
    return _cho_solve(factor, weight.T @ rhs), True


def smallest_singular_value(weight: np.ndarray) -> float:
    """sigma_min of W (n x m), from the smallest eigenvalue of W' W (LAPACK dsyevr); 0 if n < m."""
    n, m = weight.shape
    if n < m or m == 0:
        return 0.0
    from scipy.linalg import eigvalsh

    smallest = eigvalsh(gram(weight), lower=False, subset_by_index=[0, 0], check_finite=False)
    return float(np.sqrt(max(smallest[0], 0.0)))


def pinv_norms(weight: np.ndarray) -> tuple[float, float]:
    """(||W^+||_inf, max_i ||row i of W^+||_2) for a full-column-rank W; (inf, inf) if not.

    If every row of W h and of W h* is within a of its target, ||h - h*||_inf <= ||W^+||_inf 2a
    (worst case). With independent row errors each entry of h - h* is about ||(W^+)_i||_2 a,
    25-50x smaller on nearly square W: the typical error handed to the next layer.
    """
    n, m = weight.shape
    if n < m:
        return float("inf"), float("inf")
    factor = _cholesky(gram(weight))
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


def solve(problem: LayerLP, solver: str = "auto", h_start: np.ndarray | None = None) -> LPResult:
    """Solve a layer LP. `auto` uses the interior point and falls back to HiGHS on trouble."""
    if solver == "highs" or (solver == "auto" and problem.norm == "l1"
                             and problem.t_max is not None):
        return solve_highs(problem)
    result = solve_ipm(problem, h_start=h_start)
    if problem.t_max is not None and result.success and result.objective > _t_max_tol(problem):
        result.status, result.message = "infeasible", (
            f"the smallest slack {result.objective:.3g} exceeds the noise bound {problem.t_max:.3g}"
        )
    if solver == "auto" and result.status in ("numerical_error", "iteration_limit"):
        fallback = solve_highs(problem)
        fallback.message = f"interior point: {result.status}; solved by HiGHS instead"
        fallback.seconds += result.seconds
        return fallback
    return result


def _t_max_tol(problem: LayerLP) -> float:
    assert problem.t_max is not None
    return problem.t_max * (1 + 1e-7) + 1e-12


# --------------------------------------------------------------------------- interior point
class _Structure:
    """G, G' and the reduced normal equations of a LayerLP in inequality form G x <= g.

    x = (h, T), T one slack (linf) or n slacks (l1). Constraint blocks, in order:
    upper rows U, lower rows L, h lower bounds, h upper bounds, slack floors.
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
        floor = band.t_floor if self.l1 else np.array([band.t_floor.max(initial=0.0)])
        self.g = np.concatenate([upper[self.iu], -lower[self.il], -problem.h_low[self.ihl],
                                 problem.h_high[self.ihh], -floor])
        sizes = [len(self.iu), len(self.il), len(self.ihl), len(self.ihh), self.n_t]
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
            -h[self.ihl], h[self.ihh], -T,
        ])

    def GT(self, lam: np.ndarray) -> np.ndarray:
        lu, ll, lhl, lhh, lf = self._blocks(lam)
        row = np.zeros(self.n)
        np.add.at(row, self.iu, lu)
        np.subtract.at(row, self.il, ll)
        gh = self.W.T @ row
        gh[self.ihl] -= lhl
        gh[self.ihh] += lhh
        if self.l1:
            gt = -lf.copy()
            np.subtract.at(gt, self.iu, self.su * lu)
            np.subtract.at(gt, self.il, self.sl * ll)
        else:
            gt = np.array([-(self.su @ lu) - (self.sl @ ll) - lf[0]])
        return np.concatenate([gh, gt])

    def factor(self, d: np.ndarray) -> bool:
        """Factor G' diag(d) G; False if even the regularised Cholesky fails."""
        du, dl, dhl, dhh, df = self._blocks(d)
        e, f, q_rows = np.zeros(self.n), np.zeros(self.n), np.zeros(self.n)
        np.add.at(e, self.iu, du)
        np.add.at(e, self.il, dl)
        np.add.at(f, self.iu, -self.su * du)   # d(row of h) * d(coefficient of T)
        np.add.at(f, self.il, self.sl * dl)
        np.add.at(q_rows, self.iu, self.su**2 * du)
        np.add.at(q_rows, self.il, self.sl**2 * dl)
        h_diag = np.zeros(self.m)
        np.add.at(h_diag, self.ihl, dhl)
        np.add.at(h_diag, self.ihh, dhh)
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
        T = need + 1e-3 * (1 + np.abs(need)) if self.l1 else np.array([need.max() * 1.001 + 1e-3])
        return np.concatenate([h, T])


def solve_ipm(problem: LayerLP, *, h_start: np.ndarray | None = None, tol: float = 1e-9,
              max_iter: int = 80) -> LPResult:
    """Mehrotra predictor-corrector on the structured normal equations (see _Structure)."""
    started = time.perf_counter()
    st = _Structure(problem)
    x = st.start(h_start)
    s, lam = _initial_slacks(st.g - st.G(x))
    n_con = len(s)
    norm_g, norm_c = 1 + np.linalg.norm(st.g), 1 + np.linalg.norm(st.c)
    status, iterations = "iteration_limit", 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        r_d = st.c + st.GT(lam)
        r_p = st.G(x) + s - st.g
        mu = s @ lam / n_con
        objective = st.c @ x
        if (np.linalg.norm(r_p) <= tol * norm_g and np.linalg.norm(r_d) <= tol * norm_c
                and s @ lam <= tol * (1 + abs(objective))):
            status = "optimal"
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
                    iterations=iterations, seconds=time.perf_counter() - started)


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
def solve_highs(problem: LayerLP) -> LPResult:
    """Dual simplex in HiGHS (presolve off: measured faster on these dense layers)."""
    import highspy

    started = time.perf_counter()
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
    matrix = np.vstack(rows)
    floors = band.t_floor if l1 else np.array([band.t_floor.max(initial=0.0)])
    t_high = np.full(n_t, np.inf if problem.t_max is None else problem.t_max * (1 + 1e-9))

    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = m + n_t, matrix.shape[0]
    lp.col_cost_ = np.concatenate([np.zeros(m), np.ones(n_t)])
    lp.col_lower_ = np.concatenate([problem.h_low, floors])
    lp.col_upper_ = np.concatenate([problem.h_high, t_high])
    lp.row_lower_ = np.concatenate(row_lo)
    lp.row_upper_ = np.concatenate(row_hi)
    nz_rows, nz_cols = np.nonzero(matrix)
    order = np.lexsort((nz_rows, nz_cols))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.searchsorted(nz_cols[order], np.arange(m + n_t + 1))
    lp.a_matrix_.index_ = nz_rows[order]
    lp.a_matrix_.value_ = matrix[nz_rows[order], nz_cols[order]]
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = m + n_t, matrix.shape[0]

    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
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
    return LPResult(h=x[:m], t=x[m:], objective=float(x[m:].sum()), status=status,
                    solver="highs", iterations=int(info.simplex_iteration_count),
                    seconds=time.perf_counter() - started,
                    message=highs.modelStatusToString(model_status))
