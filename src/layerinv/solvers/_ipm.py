"""The structured interior point, with row screening: the default backend ('ipm').

A Mehrotra predictor-corrector written for the layer problem's structure. Every constraint
touches one row of W (or one variable), so the normal matrix G' D G reduces to
W' diag(e) W (+ a diagonal) of size m x m, the operator's `gram` (one BLAS syrk for a dense
W): the slacks of l_1 are eliminated analytically and the single t of l_inf is a bordered
rank-one term. W enters only through the operator (products, Gram, the pinned rows for the
screening point's least squares), never as a whole dense matrix. These LPs are
dense and tall (m unknowns, n >> m rows): a simplex needs ~1000 pivots, this needs ~15
Cholesky factorisations. Measured: see benchmarks/bench_invert.py and ARCHITECTURE.md.
`solve_screened` (the backend) first leaves out the one-sided rows that cannot bind.
"""

from __future__ import annotations

import time

import numpy as np

from layerinv._blas import on_one_thread
from layerinv._linalg import cho_solve, cholesky, least_squares
from layerinv.results import Status
from layerinv.solvers.problem import FunctionBackend, LayerProblem, LPResult


def solve_screened(problem: LayerProblem, max_rounds: int = 3) -> LPResult:
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
        if result.status != Status.OPTIMAL:
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


def _screening_point(problem: LayerProblem) -> tuple[np.ndarray, float] | None:
    """The least-squares point of the pinned rows, clipped into the box, and its misfit."""
    band, bias = problem.band, 0.0 if problem.bias is None else problem.bias
    pinned = band.two_sided
    target = band.center - bias
    # Least squares is dense in the pinned rows: ask the operator for those rows only.
    rows = problem.operator.rows(pinned)
    h = problem.pinned_solution
    if h is None:
        h, full_rank, _ = least_squares(rows, target[pinned])
        if not full_rank:
            return None
    h = np.clip(h, problem.h_low, problem.h_high)
    misfit = float(np.max(np.abs(rows @ h - target[pinned]), initial=0.0))
    return h, misfit


def _row_slacks(problem: LayerProblem, keep: np.ndarray, t: np.ndarray) -> np.ndarray | float:
    """Each row's slack at a screened solution: the shared t, or (l1) the floor where dropped."""
    if problem.norm == "linf":
        return float(t[0])
    rows = problem.band.t_floor.copy()
    rows[keep] = t
    return rows


def _room(problem: LayerProblem, h: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """How far each row's upper end is above W h + b at slack t (negative: violated)."""
    _, upper = problem.shifted_band()
    with np.errstate(invalid="ignore"):
        room = upper + problem.band.upper_slope * t - problem.operator.apply(h)
    return np.where(np.isfinite(room), room, np.inf)


# --------------------------------------------------------------------------- interior point
class _Structure:
    """G, G' and the reduced normal equations of a LayerProblem in inequality form G x <= g.

    x = (h, T), T one slack (linf) or n slacks (l1). Constraint blocks, in order:
    upper rows U, lower rows L, h lower bounds, h upper bounds, slack floors and, where the
    problem has a `t_max`, slack ceilings (T <= t_max; empty otherwise).
    """

    def __init__(self, problem: LayerProblem):
        self.p = problem
        # Products with W and W' and the Gram W' diag(e) W: all the iteration needs of W.
        self.W = problem.operator
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
        u = self.W.apply(h)
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
        gh = self.W.adjoint(row)
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
        matrix = self.W.gram(None, e)
        matrix[np.diag_indices(self.m)] += h_diag
        self.chol = cholesky(matrix)
        if self.chol is None:
            return False
        if not self.l1:
            # Bordered system [[M, v], [v', q]]: keep M^-1 v and the Schur scalar.
            self.v = self.W.adjoint(f)
            self.Minv_v = cho_solve(self.chol, self.v)
            self.schur = self.q[0] - self.v @ self.Minv_v
            if not self.schur > 1e-300:
                return False
        return True

    def normal_solve(self, rhs: np.ndarray) -> np.ndarray:
        """Solve (G' D G) dx = rhs with the last factorisation."""
        rh, rt = rhs[: self.m], rhs[self.m:]
        if self.l1:
            dh = cho_solve(self.chol, rh - self.W.adjoint(self.f * rt / self.q))
            dt = (rt - self.f * self.W.apply(dh)) / self.q
        else:
            Minv_rh = cho_solve(self.chol, rh)
            dt = np.array([(rt[0] - self.v @ Minv_rh) / self.schur])
            dh = Minv_rh - self.Minv_v * dt[0]
        return np.concatenate([dh, dt])

    def start(self) -> np.ndarray:
        """A starting x: h = 0 and slacks that make every band row hold."""
        h = np.zeros(self.m)
        u = self.W.apply(h)
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
def solve_ipm(problem: LayerProblem, *, tol: float = 1e-9,
              max_iter: int = 80) -> LPResult:
    """Mehrotra predictor-corrector on the structured normal equations (see _Structure)."""
    started = time.perf_counter()
    st = _Structure(problem)
    x = st.start()
    s, lam = _initial_slacks(st.g - st.G(x))
    n_con = len(s)
    norm_g, norm_c = 1 + np.linalg.norm(st.g), 1 + np.linalg.norm(st.c)
    status, iterations, accuracy = Status.MAX_STEPS, 0, np.inf
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        r_d = st.c + st.GT(lam)
        r_p = st.G(x) + s - st.g
        mu = s @ lam / n_con
        objective = st.c @ x
        if (np.linalg.norm(r_p) <= tol * norm_g and np.linalg.norm(r_d) <= tol * norm_c
                and s @ lam <= tol * (1 + abs(objective))):
            status = Status.OPTIMAL
            accuracy = _objective_accuracy(x, s, lam, r_p, r_d)
            break
        if not st.factor(lam / s):
            status = Status.NUMERICAL_ERROR
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
            status = Status.NUMERICAL_ERROR
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



BACKEND = FunctionBackend(solve_screened)
