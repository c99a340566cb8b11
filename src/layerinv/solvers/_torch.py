"""A batched interior point in PyTorch, float64 on CPU or CUDA: the 'torch' backend.

The structured interior point of `_ipm.py` (its row screening, start, Mehrotra steps,
stopping test and `accuracy`), run on all of a layer's problems at once: the walk hands a
layer's LPs of every sample to `solve_many` in one call, and here they become stacked
tensors, one row per problem, over one dense copy of the layer's matrix W on the device.
Each iteration forms the normal matrices W' diag(e_b) W of every problem by one batched
matrix product, factors them by one batched Cholesky (`torch.linalg.cholesky_ex`, a failure
flag per problem, retried with growing regularisation as `_linalg.cholesky` is) and solves
by batched triangular solves. It takes `_ipm`'s iterates to round-off, so its answers are
the CPU path's, on the non-unique optimal faces of noisy l_inf layers too, where another
method picks another optimal point (1e-3 away): measured on CPU, W h equal to 'ipm''s to
3.6e-11 relative (median 2e-16) on 1,221 random layer LPs whose pinned rows determine h,
latents of whole noisy inversions to 4e-13. On one CPU thread it is 0.6-0.8x 'ipm' per
(600, 250) LP: its batched GEMM forms the whole normal matrix, ipm's SYRK half of it.

Shapes are fixed across a batch: every problem has the constraint blocks of `_ipm._Structure`
at full size (n upper rows, n lower rows, m + m box bounds, the slack floors and ceilings),
and a 0/1 mask says which exist (a finite band end, a finite box bound, a `t_max`, a row not
screened out); a missing constraint has s = 1, lam = 0 and takes no part, so a problem's
iterates are those of its own LP. Screening (`_ipm.solve_screened`) leaves one-sided rows out
by masking them: the same smaller LP, checked against every row, rows added back and solved
again, up to SCREEN_ROUNDS, then the full LP; each problem's kept rows of W are gathered, so
its normal matrices cost the rows it keeps (padded to the most any problem of the batch keeps).

Each problem stops on its own: OPTIMAL only when its own residuals and duality gap meet `tol`
(relative, as `_ipm`'s), with `_ipm`'s accuracy; MAX_STEPS at the iteration cap;
NUMERICAL_ERROR where its Cholesky fails even regularised, its bordered Schur complement is not
positive or its iterate is not finite. Finished problems leave the batch (the tensors are
compacted), so the late iterations cost only the slow problems. One small device-to-host copy
per iteration carries every problem's flags (stop, failure); the rest stays on the device.

`pinned_least_squares` is the exact method's shortcut for a whole batch: the Gram matrices
W_A' W_A of every sample's pinned rows (gathered, zero-padded) by one batched product,
batched Cholesky and solves, and with `certify` the bounds of
`_linalg.inverse_factor_bounds` from batched triangular inverses.

PyTorch is optional: importing this module (and registering the backend) does not import it;
using the backend without it is an InputError saying `pip install torch`. Functions that run
only after `import_torch` succeeded import it locally.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from layerinv import _linalg as linalg
from layerinv._blas import one_torch_thread
from layerinv.activations import Band
from layerinv.errors import InputError
from layerinv.operators import LinearOperator
from layerinv.results import Status
from layerinv.solvers.problem import Backend, LayerProblem, LPResult, PinnedFit

if TYPE_CHECKING:
    import torch

DEFAULT_DEVICE = "auto"
"""The device of the registered 'torch' backend: 'auto' is CUDA where available, else CPU."""

MEMORY_BUDGET = {"cpu": 2**28, "cuda": 2**33}
"""Bytes of working tensors one batch may take (256 MB on CPU, 8 GB on a GPU): a call's
problems go in chunks of at most this many bytes' worth (`TorchBackend._chunk_size`)."""

SCREEN_ROUNDS = 3
"""Screened solves per problem before the full LP (`_ipm.solve_screened`'s max_rounds)."""

_SHIFTS = (1e-12, 1e-10, 1e-8)
"""Regularisation retries of a failed Cholesky, times the mean |diagonal| (`_linalg.cholesky`)."""

# Per-problem outcome codes, kept on the device until the end of a batch.
_OPTIMAL, _CAP, _FACTOR, _NOT_FINITE = 0, 1, 2, 3
_STATUS = {_OPTIMAL: Status.OPTIMAL, _CAP: Status.MAX_STEPS, _FACTOR: Status.NUMERICAL_ERROR,
           _NOT_FINITE: Status.NUMERICAL_ERROR}


def import_torch() -> Any:
    """The torch module, or an InputError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise InputError("solver='torch' needs PyTorch, which is not installed: "
                         "pip install torch") from None
    return torch


def resolve_device(device: object) -> torch.device:
    """A torch.device from 'auto' (CUDA where available, else CPU), 'cpu', 'cuda[:i]' or a
    torch.device; anything else, or CUDA where there is none, is an InputError."""
    torch = import_torch()
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device; got "
                         f"{device!r} ({exc})") from None
    if resolved.type not in ("cpu", "cuda"):
        raise InputError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device; got "
                         f"{device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for but CUDA is not available (torch "
                         f"{torch.__version__}); use device='cpu' or 'auto'")
    return resolved


@dataclass(frozen=True)
class TorchBackend(Backend):
    """The batched interior point on `device` ('auto', 'cpu', 'cuda', 'cuda:1', ...).

    Register another device as its own solver name, e.g.
    `solvers.register("torch-cpu", TorchBackend(device="cpu"))`. `max_iter` and `tol` are
    `_ipm.solve_ipm`'s; `max_batch` caps the problems per batch (None: as many as
    MEMORY_BUDGET allows). Each answer's `seconds` is its batch's wall time over its size.
    """

    device: object = DEFAULT_DEVICE
    max_iter: int = 80
    tol: float = 1e-9
    max_batch: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_iter",) + (() if self.max_batch is None else ("max_batch",)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be an int >= 1; got {value!r}")
        if not (isinstance(self.tol, float) and 0.0 < self.tol < 1.0):
            raise InputError(f"tol must be a float in (0, 1); got {self.tol!r}")

    def solve(self, problem: LayerProblem) -> LPResult:
        return self.solve_many([problem])[0]

    def solve_many(self, problems: Sequence[LayerProblem]) -> list[LPResult]:
        """Every problem, in batches of one operator and one norm (a call may mix them)."""
        problems = list(problems)
        if not problems:
            return []
        device = resolve_device(self.device)
        groups: dict[tuple[int, str], list[int]] = {}
        for i, problem in enumerate(problems):
            groups.setdefault((id(problem.operator), problem.norm), []).append(i)
        results: list[LPResult | None] = [None] * len(problems)
        with one_torch_thread():
            for members in groups.values():
                first = problems[members[0]]
                weight = _device_matrix(first.operator, device)
                size = self._chunk_size(device, first.n_rows, first.n_inputs)
                for start in range(0, len(members), size):
                    chunk = members[start:start + size]
                    answers = _solve_chunk(weight, [problems[i] for i in chunk], self.tol,
                                           self.max_iter)
                    for i, answer in zip(chunk, answers, strict=True):
                        results[i] = answer
        return results  # type: ignore[return-value]  # every index is filled above

    def pinned_least_squares(self, operator: LinearOperator, bias: np.ndarray | None,
                             bands: Sequence[Band], certify: bool) -> list[PinnedFit]:
        """`Backend.pinned_least_squares` for the whole batch at once (see the module doc).

        `gram` is None in every fit: the Gram matrices stay on the device.
        """
        bands = list(bands)
        if not bands:
            return []
        device = resolve_device(self.device)
        n, m = operator.shape
        pinned = np.stack([band.two_sided for band in bands])
        counts = pinned.sum(axis=1)
        # As `problem._pinned_fit`: no pinned row gives h = 0; fewer rows than columns, None.
        fits: list[PinnedFit | None] = [
            PinnedFit(np.zeros(m), False) if count == 0 else
            PinnedFit(None, False) if count < m else None for count in counts]
        solvable = np.flatnonzero(counts >= m)
        if not len(solvable):
            return fits  # type: ignore[return-value]  # every fit is set
        targets = _pinned_targets([bands[i] for i in solvable], [bias] * len(solvable))
        size = self._chunk_size(device, n, m)
        with one_torch_thread():
            weight = _device_matrix(operator, device)
            for start in range(0, len(solvable), size):
                chunk = solvable[start:start + size]
                h, full_rank, bounds = _pinned_batch(weight, pinned[chunk],
                                                     targets[start:start + size], certify)
                for k, i in enumerate(chunk):
                    if not full_rank[k]:
                        fits[i] = PinnedFit(None, False)
                    elif bounds is None:
                        fits[i] = PinnedFit(h[k].copy(), True)
                    else:
                        fits[i] = PinnedFit(h[k].copy(), True, float(bounds[0, k]),
                                            float(bounds[1, k]))
        return fits  # type: ignore[return-value]  # every fit is set

    def _chunk_size(self, device: torch.device, n: int, m: int) -> int:
        """Problems per batch: the working tensors of one problem are about (2 n + 3 m) m
        float64s (its kept rows of W, their scaled copy, the normal matrix and its factor)."""
        per_problem = 8 * (2 * n + 3 * m) * m + 64 * (n + m)
        size = max(1, MEMORY_BUDGET[device.type] // per_problem)
        return size if self.max_batch is None else min(size, self.max_batch)


def _device_matrix(operator: LinearOperator, device: torch.device) -> torch.Tensor:
    """The operator's matrix on the device, float64, copied once per call."""
    import torch

    # An export: the batched products (W' diag(e_b) W for every problem b at once) take the
    # dense matrix; the operator's own `gram` is one problem's, on the host.
    return torch.as_tensor(operator.to_dense(), dtype=torch.float64, device=device)


def _pinned_targets(bands: list[Band], biases: Sequence[np.ndarray | None]) -> np.ndarray:
    """Each band's least-squares target center - bias on its pinned rows, 0 elsewhere."""
    with np.errstate(invalid="ignore"):
        return np.stack([np.where(band.two_sided, band.center - (0.0 if bias is None else bias),
                                  0.0) for band, bias in zip(bands, biases, strict=True)])


# --------------------------------------------------------------------------- the batch
class _Batch:
    """A batch of layer problems of one operator and norm, as tensors: G x <= g per problem.

    x = (h, T) per row, T one slack (linf) or n (l1). The blocks of G and g, in order (as in
    `_ipm._Structure`): upper rows U (n), lower rows L (n), h lower bounds (m), h upper
    bounds (m), slack floors (n_t), slack ceilings (n_t); `mask` is 1 where the constraint
    exists and 0 where not (an infinite end, no t_max, a row screened out); `g` is 0 where
    the mask is. `slacks` is 1 for each slack variable of the LP and 0 for the slack of an
    l1 row screened out (that LP has no such variable: it stays at its start, unused).
    """

    def __init__(self, weight: torch.Tensor, l1: bool, su: torch.Tensor, sl: torch.Tensor,
                 g: torch.Tensor, mask: torch.Tensor, floors: torch.Tensor,
                 slacks: torch.Tensor, gathered: tuple[torch.Tensor, ...] | None = None):
        self.W, self.l1 = weight, l1
        self.n, self.m = weight.shape
        self.n_t = self.n if l1 else 1
        self.su, self.sl, self.g, self.mask = su, sl, g, mask
        self.floors = floors
        """The starting point's per-row slack floors (the band's, and t_min on row 0)."""
        self.slacks = slacks
        self.gathered = gathered
        """Where rows are screened out: (order, valid, rows) with order (B, r) the rows each
        problem keeps first (r the most any keeps), valid 1 on the kept ones of them, and
        rows = W[order] (B, r, m): the normal matrix is formed over those r rows only."""
        self.sizes = [self.n, self.n, self.m, self.m, self.n_t, self.n_t]

    @classmethod
    def build(cls, weight: torch.Tensor, problems: list[LayerProblem]) -> _Batch:
        import torch

        n, m = problems[0].n_rows, problems[0].n_inputs
        l1 = problems[0].norm == "l1"
        n_t = n if l1 else 1
        count = len(problems)
        cuts = np.cumsum([0, n, n, m, m, n_t, n_t])
        g, mask = np.zeros((count, cuts[-1])), np.zeros((count, cuts[-1]))
        su, sl, floors = np.zeros((count, n)), np.zeros((count, n)), np.zeros((count, n))
        for b, problem in enumerate(problems):
            lower, upper = problem.shifted_band()
            band = problem.band
            ceiling = np.full(n_t, 0.0 if problem.t_max is None else problem.t_max)
            ends = [upper, -lower, -problem.h_low, problem.h_high, -problem.slack_floors(),
                    ceiling]
            finite = [np.isfinite(upper), np.isfinite(lower), np.isfinite(problem.h_low),
                      np.isfinite(problem.h_high), np.ones(n_t, dtype=bool),
                      np.full(n_t, problem.t_max is not None)]
            for k, (end, exists) in enumerate(zip(ends, finite, strict=True)):
                g[b, cuts[k]:cuts[k + 1]] = np.where(exists, end, 0.0)
                mask[b, cuts[k]:cuts[k + 1]] = exists
            su[b] = np.where(finite[0], band.upper_slope, 0.0)
            sl[b] = np.where(finite[1], band.lower_slope, 0.0)
            floors[b] = band.t_floor
            floors[b, 0] = max(floors[b, 0], problem.t_min)

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(array, dtype=torch.float64, device=weight.device)

        return cls(weight, l1, tensor(su), tensor(sl), tensor(g), tensor(mask), tensor(floors),
                   torch.ones((count, n_t), dtype=torch.float64, device=weight.device))

    def take(self, index: torch.Tensor) -> _Batch:
        """The batch of the problems `index` (a device index tensor)."""
        gathered = None if self.gathered is None else tuple(t[index] for t in self.gathered)
        return _Batch(self.W, self.l1, self.su[index], self.sl[index], self.g[index],
                      self.mask[index], self.floors[index], self.slacks[index], gathered)

    def keeping(self, rows: torch.Tensor) -> _Batch:
        """The same problems on the rows `rows` (B, n) only: `LayerProblem.subset` by masks.
        A row left out loses its band ends and, in l1, its slack with the slack's bounds.
        The kept rows of W are gathered once (`gathered`): the normal matrices then cost
        the rows kept, as the screened interior point's do, not all n."""
        import torch

        kept = rows.to(self.mask.dtype)
        ones = self.mask.new_ones((len(kept), 2 * self.m))
        slack_rows = kept if self.l1 else ones[:, :1]
        mask = self.mask * self.torch_cat([kept, kept, ones, slack_rows, slack_rows])
        most = int(rows.sum(1).max())  # one sync per screened round
        order = torch.argsort((~rows).to(torch.int8), dim=1, stable=True)[:, :most]
        gathered = (order, rows.gather(1, order).to(self.mask.dtype), self.W[order])
        return _Batch(self.W, self.l1, self.su, self.sl, self.g * mask, mask, self.floors,
                      self.slacks * slack_rows, gathered)

    @staticmethod
    def torch_cat(parts: list[torch.Tensor]) -> torch.Tensor:
        import torch

        return torch.cat(parts, dim=1)

    def blocks(self, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return v.split(self.sizes, dim=1)

    def t_rows(self, T: torch.Tensor) -> torch.Tensor:
        return T if self.l1 else T.expand(-1, self.n)

    def G(self, x: torch.Tensor) -> torch.Tensor:
        """G x for every problem (rows of x), 0 at missing constraints."""
        h, T = x[:, :self.m], x[:, self.m:]
        u = h @ self.W.T
        t_rows = self.t_rows(T)
        return self.torch_cat([u - self.su * t_rows, -u - self.sl * t_rows, -h, h, -T, T]
                              ) * self.mask

    def GT(self, lam: torch.Tensor) -> torch.Tensor:
        """G' lam for every problem; lam is 0 at missing constraints."""
        lu, ll, lhl, lhh, lf, lc = self.blocks(lam)
        gh = (lu - ll) @ self.W - lhl + lhh
        if self.l1:
            gt = -self.su * lu - self.sl * ll - lf + lc
        else:
            gt = (-(self.su * lu).sum(1, keepdim=True) - (self.sl * ll).sum(1, keepdim=True)
                  - lf + lc)
        return self.torch_cat([gh, gt])

    def cost(self) -> torch.Tensor:
        """c of every problem: 0 on h, 1 on each slack of the LP."""
        return self.torch_cat([self.slacks.new_zeros((len(self.slacks), self.m)),
                               self.slacks])

    def start(self) -> torch.Tensor:
        """`_Structure.start` for every problem: h = 0 and slacks that make every row hold."""
        import torch

        upper, lower = self.g[:, :self.n], -self.g[:, self.n:2 * self.n]
        has_upper, has_lower = self.mask[:, :self.n] > 0, self.mask[:, self.n:2 * self.n] > 0
        # With h = 0, u = 0: row j needs the slack -upper_j / su_j (and lower_j / sl_j).
        one = torch.ones_like(upper)
        need = torch.zeros_like(upper)
        need = torch.maximum(need, torch.where(
            has_upper, -upper / torch.where(has_upper, self.su, one), -torch.inf))
        need = torch.maximum(need, torch.where(
            has_lower, lower / torch.where(has_lower, self.sl, one), -torch.inf))
        if self.l1:
            need = torch.maximum(need, self.floors)
            T = need + 1e-3 * (1 + need.abs())
        else:
            # The rows' floors and t_min (row 0): the l_inf floor, kept when rows are screened.
            need = torch.maximum(need.max(dim=1, keepdim=True).values,
                                 self.floors.max(dim=1, keepdim=True).values)
            T = need * 1.001 + 1e-3
        return self.torch_cat([torch.zeros_like(self.g[:, :self.m]), T])

    def normal_matrix(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                      torch.Tensor]:
        """G' diag(d) G reduced as in `_Structure.factor`: (M, f, q), M = W' diag(e) W +
        diag(box terms), f the h-T coupling per row, q the T block's diagonal."""
        import torch

        du, dl, dhl, dhh, df, dc = self.blocks(d)
        df = df + dc  # floors and ceilings both add d to the diagonal of the T block
        e = du + dl
        f = -self.su * du + self.sl * dl
        q_rows = self.su**2 * du + self.sl**2 * dl
        if self.l1:
            # > 0 by the floors; a slack screened out (no floor) gets 1: its step is 0.
            q = torch.where(self.slacks > 0, q_rows + df, 1.0)
            e = (e - f * f / q).clamp(min=0.0)  # Schur complement of the T block
        else:
            q = q_rows.sum(1, keepdim=True) + df
        # The batched Gram: W' (e_b * W) for every problem b by one batched product, over
        # the kept rows where rows are screened out.
        if self.gathered is None:
            matrix = self.W.T @ (e[:, :, None] * self.W)
        else:
            order, valid, kept = self.gathered
            matrix = kept.mT @ ((e.gather(1, order) * valid)[:, :, None] * kept)
        matrix.diagonal(dim1=1, dim2=2).add_(dhl + dhh)
        return matrix, f, q


class _Normal:
    """The factored normal equations of a batch: solve (G' D G) dx = rhs for every problem."""

    def __init__(self, batch: _Batch, factor: torch.Tensor, f: torch.Tensor, q: torch.Tensor):
        self.batch, self.L, self.f, self.q = batch, factor, f, q
        self.broken = factor.new_zeros(factor.shape[0]) > 0
        if not batch.l1:
            # Bordered system [[M, v], [v', q]]: keep M^-1 v and the Schur scalar.
            self.v = f @ batch.W
            self.Minv_v = self._cho_solve(self.v)
            self.schur = q[:, 0] - (self.v * self.Minv_v).sum(1)
            self.broken = ~(self.schur > 1e-300)

    def _cho_solve(self, rhs: torch.Tensor) -> torch.Tensor:
        return _cho_solve(self.L, rhs)

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        batch = self.batch
        rh, rt = rhs[:, :batch.m], rhs[:, batch.m:]
        if batch.l1:
            dh = self._cho_solve(rh - (self.f * rt / self.q) @ batch.W)
            dt = (rt - self.f * (dh @ batch.W.T)) / self.q
        else:
            Minv_rh = self._cho_solve(rh)
            dt = ((rt[:, 0] - (self.v * Minv_rh).sum(1)) / self.schur)[:, None]
            dh = Minv_rh - self.Minv_v * dt
        return batch.torch_cat([dh, dt])


# --------------------------------------------------------------------------- screening
@dataclass
class _Screen:
    """Which rows each problem of a chunk keeps (`_ipm.solve_screened`), host arrays."""

    screened: np.ndarray
    """(B,) True where the problem is screened (else its full LP is solved at once)."""
    keep: np.ndarray
    """(B, n) the rows kept (every row where not screened)."""
    margin: np.ndarray
    """(B,) a dropped row within this of binding is added back."""
    scale: np.ndarray
    """(B,) the largest |finite upper end| (at least 1): the violation tolerance's unit."""

    @classmethod
    def of(cls, weight: torch.Tensor, problems: list[LayerProblem]) -> _Screen:
        """Screen where `_ipm.solve_screened` does: a unique least-squares point of the pinned
        rows (`pinned_solution`, or computed here, batched) and at least n // 4 one-sided
        rows; keep the rows not one-sided and those within the margin at that point."""
        count, n = len(problems), problems[0].n_rows
        one_sided = np.stack([np.isfinite(p.band.upper) & ~np.isfinite(p.band.lower)
                              for p in problems])
        scale = np.array([np.nanmax(np.abs(np.where(np.isfinite(p.band.upper), p.band.upper,
                                                    np.nan)), initial=1.0) for p in problems])
        screen = cls(np.zeros(count, dtype=bool), np.ones((count, n), dtype=bool),
                     np.zeros(count), scale)
        candidates = np.flatnonzero(one_sided.sum(axis=1) >= n // 4)
        starts = _screening_points(weight, [problems[i] for i in candidates])
        chosen = [(i, h) for i, h in zip(candidates, starts, strict=True) if h is not None]
        if not chosen:
            return screen
        index = np.array([i for i, _ in chosen])
        h0 = np.stack([np.clip(h, problems[i].h_low, problems[i].h_high) for i, h in chosen])
        pinned = np.stack([problems[i].band.two_sided for i in index])
        targets = _pinned_targets([problems[i].band for i in index],
                                  [problems[i].bias for i in index])
        u0 = problems[0].operator.apply(h0)
        misfit = np.max(np.where(pinned, np.abs(u0 - targets), 0.0), axis=1, initial=0.0)
        screen.screened[index] = True
        screen.margin[index] = 10.0 * misfit + 1e-3 * scale[index]
        room = screen.room([problems[i] for i in index], u0, 0.0)
        screen.keep[index] = ~one_sided[index] | (room < screen.margin[index, None])
        return screen

    @staticmethod
    def room(problems: list[LayerProblem], u: np.ndarray, t: np.ndarray | float) -> np.ndarray:
        """`_ipm._room` per problem: how far each row's upper end is above u = W h at slack
        t (rows of u and of t, or a scalar t); inf where a row has no upper end."""
        upper = np.stack([p.shifted_band()[1] for p in problems])
        slope = np.stack([p.band.upper_slope for p in problems])
        with np.errstate(invalid="ignore"):
            room = upper + slope * t - u
        return np.where(np.isfinite(room), room, np.inf)


def _screening_points(weight: torch.Tensor, problems: list[LayerProblem]
                      ) -> list[np.ndarray | None]:
    """Each problem's least-squares point of its pinned rows (`pinned_solution` where given,
    else batched here); None where those rows do not determine it."""
    points: list[np.ndarray | None] = [p.pinned_solution for p in problems]
    m = weight.shape[1]
    missing = [i for i, p in enumerate(problems)
               if p.pinned_solution is None and p.band.two_sided.sum() >= m]
    if missing:
        bands = [problems[i].band for i in missing]
        h, full_rank, _ = _pinned_batch(weight, np.stack([b.two_sided for b in bands]),
                                        _pinned_targets(bands, [problems[i].bias
                                                                for i in missing]), False)
        for k, i in enumerate(missing):
            points[i] = h[k] if full_rank[k] else None
    return points


# --------------------------------------------------------------------------- a chunk
def _solve_chunk(weight: torch.Tensor, problems: list[LayerProblem], tol: float,
                 max_iter: int) -> list[LPResult]:
    """One chunk of problems (one operator, one norm), screened as `_ipm.solve_screened`:
    every screened problem's smaller LP, checked against all rows, rows added back and the
    LP solved again, up to SCREEN_ROUNDS; a failed or unsettled screened solve, and every
    problem not screened, gets the full LP. Each round is one batched interior point."""
    import torch

    started = time.perf_counter()
    count, m, n = len(problems), problems[0].n_inputs, problems[0].n_rows
    batch = _Batch.build(weight, problems)
    screen = _Screen.of(weight, problems)
    answers = _Outcome.empty(count, batch.m + batch.n_t)
    spent = np.zeros(count, dtype=int)
    pending, full = np.flatnonzero(screen.screened), list(np.flatnonzero(~screen.screened))
    kept_rows = np.full(count, n)
    for _ in range(SCREEN_ROUNDS):
        if not len(pending):
            break
        index = torch.as_tensor(pending, device=weight.device)
        keep = torch.as_tensor(screen.keep[pending], device=weight.device)
        out = _interior_point(batch.take(index).keeping(keep), tol, max_iter).to_host()
        spent[pending] += out.iterations
        solved = out.code == _OPTIMAL
        t = out.x[:, m:]
        if batch.l1:  # a row screened out keeps its slack's floor (`_ipm._row_slacks`)
            floors = np.stack([problems[i].band.t_floor for i in pending])
            t = np.where(screen.keep[pending], t, floors)
        h = out.x[:, :m]
        room = _Screen.room([problems[i] for i in pending], problems[0].operator.apply(h), t)
        violated = ~screen.keep[pending] & (room < -1e-8 * screen.scale[pending, None])
        settled = solved & ~violated.any(axis=1)
        done = pending[settled]
        answers.x[done] = np.concatenate([h, t], axis=1)[settled]
        answers.code[done], answers.iterations[done] = _OPTIMAL, spent[done]
        answers.accuracy[done] = out.accuracy[settled]
        kept_rows[done] = screen.keep[done].sum(axis=1)
        full.extend(pending[~solved])
        again = solved & ~settled
        screen.keep[pending[again]] |= (violated[again]
                                        | (room[again] < screen.margin[pending[again], None]))
        pending = pending[again]
    full.extend(pending)
    if full:
        rest = np.array(sorted(full))
        index = torch.as_tensor(rest, device=weight.device)
        out = _interior_point(batch.take(index), tol, max_iter).to_host()
        answers.x[rest], answers.code[rest] = out.x, out.code
        answers.iterations[rest], answers.accuracy[rest] = out.iterations, out.accuracy
    return answers.results(m, (time.perf_counter() - started) / count,
                           f"torch on {weight.device}, a batch of {count}", max_iter,
                           kept_rows, n)


# --------------------------------------------------------------------------- the iteration
@dataclass
class _State:
    """The iterates of the problems still at work, and their indices in the batch."""

    batch: _Batch
    index: torch.Tensor
    x: torch.Tensor
    s: torch.Tensor
    lam: torch.Tensor
    norm_g: torch.Tensor
    norm_c: torch.Tensor
    n_con: torch.Tensor
    broken: torch.Tensor
    """Problems whose last factorisation was unusable (bordered Schur scalar not positive)."""

    def take(self, keep: torch.Tensor) -> _State:
        return _State(self.batch.take(keep), self.index[keep], self.x[keep], self.s[keep],
                      self.lam[keep], self.norm_g[keep], self.norm_c[keep], self.n_con[keep],
                      self.broken[keep])


@dataclass
class _Outcome:
    """Per-problem answers of a batch: x, outcome code, iterations, accuracy (tensors on the
    device during the iteration, NumPy arrays after `to_host`)."""

    x: Any
    code: Any
    iterations: Any
    accuracy: Any

    @classmethod
    def empty(cls, count: int, width: int) -> _Outcome:
        return cls(np.zeros((count, width)), np.full(count, _CAP), np.zeros(count, dtype=int),
                   np.full(count, np.inf))

    def record(self, index: torch.Tensor, x: torch.Tensor, code: int, iterations: int,
               accuracy: torch.Tensor | None = None) -> None:
        self.x[index] = x
        self.code[index] = code
        self.iterations[index] = iterations
        if accuracy is not None:
            self.accuracy[index] = accuracy

    def to_host(self) -> _Outcome:
        return _Outcome(*(value.cpu().numpy() for value in
                          (self.x, self.code, self.iterations, self.accuracy)))

    def results(self, m: int, seconds: float, where: str, max_iter: int,
                kept_rows: np.ndarray, n: int) -> list[LPResult]:
        messages = {_OPTIMAL: where, _CAP: f"{where}: no convergence in {max_iter} iterations",
                    _FACTOR: f"{where}: the normal matrix's factorisation failed even "
                             f"regularised", _NOT_FINITE: f"{where}: the iterate is not finite"}
        answers = []
        for b, code in enumerate(self.code.tolist()):
            t = np.array(self.x[b, m:])
            message = messages[code]
            if code == _OPTIMAL and kept_rows[b] < n:
                message += f"; screened: {int(kept_rows[b])} of {n} rows"
            answers.append(LPResult(h=np.array(self.x[b, :m]), t=t, objective=float(t.sum()),
                                    status=_STATUS[code], solver="torch",
                                    iterations=int(self.iterations[b]), seconds=seconds,
                                    message=message, accuracy=float(self.accuracy[b])))
        return answers


def _interior_point(batch: _Batch, tol: float, max_iter: int) -> _Outcome:
    """`_ipm.solve_ipm`'s iteration on every problem of the batch, each stopping on its own."""
    import torch

    count, device = batch.g.shape[0], batch.g.device
    x = batch.start()
    s, lam = _initial_slacks(batch, batch.g - batch.G(x))
    state = _State(batch, torch.arange(count, device=device), x, s, lam,
                   1 + torch.linalg.vector_norm(batch.g, dim=1),
                   1 + torch.sqrt(batch.slacks.sum(1)), batch.mask.sum(1),
                   torch.zeros(count, dtype=torch.bool, device=device))
    outcome = _Outcome(x.clone(), torch.full((count,), _CAP, device=device),
                       torch.full((count,), max_iter, device=device),
                       torch.full((count,), torch.inf, dtype=x.dtype, device=device))
    for iteration in range(1, max_iter + 1):
        st = state
        r_d = st.batch.cost() + st.batch.GT(st.lam)
        r_p = st.batch.G(st.x) + (st.s - st.batch.g) * st.batch.mask
        gap = (st.s * st.lam).sum(1)
        objective = (st.x[:, st.batch.m:] * st.batch.slacks).sum(1)
        finite = torch.isfinite(st.x).all(1) & torch.isfinite(st.lam).all(1)
        converged = finite & ~st.broken & (
            (torch.linalg.vector_norm(r_p, dim=1) <= tol * st.norm_g)
            & (torch.linalg.vector_norm(r_d, dim=1) <= tol * st.norm_c)
            & (gap <= tol * (1 + objective.abs())))
        matrix, f, q = st.batch.normal_matrix(st.lam / st.s * st.batch.mask)
        factor, info = torch.linalg.cholesky_ex(matrix)
        # The one device-to-host copy of the iteration: who stops, who failed.
        flags = torch.stack([converged, ~finite, st.broken & finite, info != 0]).cpu()
        done, not_finite, broken, failed = flags[0], flags[1], flags[2], flags[3]
        if done.any():
            pick = _device_index(done, device)
            accuracy = _objective_accuracy(st.batch, st.x, st.lam, r_p, r_d, gap)
            outcome.record(st.index[pick], st.x[pick], _OPTIMAL, iteration, accuracy[pick])
        for flag, code in ((not_finite, _NOT_FINITE), (broken, _FACTOR)):
            if flag.any():  # the step before this check failed: its iteration is counted
                pick = _device_index(flag, device)
                outcome.record(st.index[pick], st.x[pick], code, max(iteration - 1, 1))
        unfactored = failed & ~(done | not_finite | broken)
        if unfactored.any():
            factor, unfactored = _regularised(matrix, factor, unfactored)
            if unfactored.any():
                pick = _device_index(unfactored, device)
                outcome.record(st.index[pick], st.x[pick], _FACTOR, iteration)
        stop = done | not_finite | broken | unfactored
        if stop.all():
            return outcome
        if stop.any():
            keep = _device_index(~stop, device)
            st = st.take(keep)
            r_d, r_p, gap, factor, f, q = (r_d[keep], r_p[keep], gap[keep], factor[keep],
                                           f[keep], q[keep])
        state = _step(st, _Normal(st.batch, factor, f, q), r_d, r_p, gap)
    # The cap: the last step is not checked for convergence (as in `_ipm.solve_ipm`).
    final_finite = torch.isfinite(state.x).all(1) & torch.isfinite(state.lam).all(1)
    code = torch.where(~final_finite, _NOT_FINITE, torch.where(state.broken, _FACTOR, _CAP))
    outcome.x[state.index] = state.x
    outcome.code[state.index] = code
    return outcome


def _objective_accuracy(batch: _Batch, x: torch.Tensor, lam: torch.Tensor, r_p: torch.Tensor,
                        r_d: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """`_ipm._objective_accuracy` per problem: s'lam + |lam'r_p| + 2 ||r_d|| ||x||, x the
    LP's variables (an l1 slack screened out is none of them)."""
    import torch

    x = batch.torch_cat([x[:, :batch.m], x[:, batch.m:] * batch.slacks])
    return (gap + (lam * r_p).sum(1).abs()
            + 2 * torch.linalg.vector_norm(r_d, dim=1) * torch.linalg.vector_norm(x, dim=1))


def _step(st: _State, normal: _Normal, r_d: torch.Tensor, r_p: torch.Tensor,
          gap: torch.Tensor) -> _State:
    """One predictor-corrector step of every problem in `st` (none where `normal` is broken:
    that problem stops at the next iteration's check)."""
    import torch

    batch, s, lam, mask = st.batch, st.s, st.lam, st.batch.mask
    mu = gap / st.n_con
    # Predictor (affine scaling), then Mehrotra's corrector with centring sigma.
    dx, ds, dl = _newton(batch, normal, s, lam, r_d, r_p, s * lam)
    ap, ad = _step_to_boundary(s, ds), _step_to_boundary(lam, dl)
    mu_aff = ((s + ap[:, None] * ds) * (lam + ad[:, None] * dl)).sum(1) / st.n_con
    sigma = torch.where(mu > 0, (mu_aff / mu) ** 3, 0.0)
    r_c = (s * lam + ds * dl - (sigma * mu)[:, None]) * mask
    dx, ds, dl = _newton(batch, normal, s, lam, r_d, r_p, r_c)
    ap = (0.995 * _step_to_boundary(s, ds, cap=torch.inf)).clamp(max=1.0)[:, None]
    ad = (0.995 * _step_to_boundary(lam, dl, cap=torch.inf)).clamp(max=1.0)[:, None]
    hold = normal.broken[:, None]
    return _State(batch, st.index, torch.where(hold, st.x, st.x + ap * dx),
                  torch.where(hold, s, s + ap * ds), torch.where(hold, lam, lam + ad * dl),
                  st.norm_g, st.norm_c, st.n_con, normal.broken)


def _newton(batch: _Batch, normal: _Normal, s: torch.Tensor, lam: torch.Tensor,
            r_d: torch.Tensor, r_p: torch.Tensor, r_c: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Newton direction for complementarity target r_c (0 at missing constraints)."""
    dx = normal.solve(-r_d + batch.GT((r_c - lam * r_p) / s))
    ds = -r_p - batch.G(dx)
    dl = (-r_c - lam * ds) / s
    return dx, ds, dl


def _step_to_boundary(v: torch.Tensor, dv: torch.Tensor, cap: float = 1.0) -> torch.Tensor:
    import torch

    ratio = torch.where(dv < 0, -v / dv, torch.inf)
    return ratio.min(dim=1).values.clamp(max=cap)


def _initial_slacks(batch: _Batch, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_ipm._initial_slacks` per problem, over the constraints that exist (s = 1, lam = 0
    at the others)."""
    import torch

    mask = batch.mask
    exists = mask > 0
    lowest = torch.where(exists, residual, torch.inf).min(dim=1).values
    s = residual + (-1.5 * lowest).clamp(min=0.0)[:, None]
    s = torch.where(exists, s.clamp(min=1e-8), 1.0)
    gap = (s * mask).sum(1)  # s'lam with lam = 1
    # _ipm's lam + 0.5 s'lam / sum(s) with lam = 1 is 1.5 exactly.
    return torch.where(exists, s + (0.5 * gap / mask.sum(1))[:, None], 1.0), 1.5 * mask


def _regularised(matrix: torch.Tensor, factor: torch.Tensor,
                 failed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Cholesky factors with the failed ones (a host bool mask) retried with growing
    regularisation; returns (factors, host mask of those that failed every retry)."""
    import torch

    factor, still = factor.clone(), failed.clone()
    for shift in _SHIFTS:
        pick = _device_index(still, matrix.device)
        trial = matrix[pick]
        scale = trial.diagonal(dim1=1, dim2=2).abs().mean(1)
        scale = torch.where(scale > 0, scale, 1.0)
        eye = torch.eye(trial.shape[1], dtype=trial.dtype, device=trial.device)
        retried, info = torch.linalg.cholesky_ex(trial + (shift * scale)[:, None, None] * eye)
        ok = (info == 0).cpu()
        if ok.any():
            factor[pick[ok.to(pick.device)]] = retried[ok.to(retried.device)]
            still[torch.nonzero(still).squeeze(1)[ok]] = False
        if not still.any():
            break
    return factor, still


def _cho_solve(factor: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """x with L L' x = rhs for every problem (rows of rhs), L the lower Cholesky factors.

    Two triangular solves: on CPU they took 0.75 ms against 4.6 ms for torch.cholesky_solve
    (20 problems, m = 250; it copies the factors first)."""
    import torch

    half = torch.linalg.solve_triangular(factor, rhs[:, :, None], upper=False)
    return torch.linalg.solve_triangular(factor.mT, half, upper=True)[:, :, 0]


def _device_index(flags: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The positions of a host bool mask, as an index tensor on `device`."""
    import torch

    return torch.nonzero(flags).squeeze(1).to(device)


# --------------------------------------------------------------------------- least squares
def _pinned_batch(weight: torch.Tensor, pinned: np.ndarray, targets: np.ndarray,
                  certify: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Least squares on each sample's pinned rows (rows of `pinned`, each with >= m rows),
    as `_linalg.least_squares_factor` and `inverse_factor_bounds` compute it, batched.

    Returns (h (B, m), full_rank (B,), bounds): with `certify`, bounds[0] the lower bounds
    on sigma_min and bounds[1] the largest row norms of R^-1 (else None); h is meaningful
    only where full_rank.
    """
    import torch

    device = weight.device
    # Each sample's pinned rows first, padded with zero rows to the most any sample pins.
    order = np.argsort(~pinned, axis=1, kind="stable")[:, :int(pinned.sum(axis=1).max())]
    valid = torch.as_tensor(np.take_along_axis(pinned, order, axis=1), dtype=torch.float64,
                            device=device)
    target = torch.as_tensor(np.take_along_axis(targets, order, axis=1), dtype=torch.float64,
                             device=device)
    rows = weight[torch.as_tensor(order, device=device)] * valid[:, :, None]
    # The Gram W_A' W_A of every sample's pinned rows by one batched product.
    gram = rows.mT @ rows
    factor, info = torch.linalg.cholesky_ex(gram)
    diag = factor.diagonal(dim1=1, dim2=2).abs()
    # A positive pivot can still be numerically zero: compare the factor's diagonal spread.
    full_rank = (info == 0) & (diag.min(1).values > 1e-7 * diag.max(1).values)
    h = _cho_solve(factor, (rows.mT @ target[:, :, None])[:, :, 0])
    bounds = None
    if certify:
        # R = L' (R' R = W_A' W_A), so R^-1 = (L^-1)': the rows of R^-1 are the columns of
        # L^-1, and R^-1's column sums are L^-1's row sums.
        eye = torch.eye(weight.shape[1], dtype=weight.dtype, device=device)
        inverse = torch.linalg.solve_triangular(factor, eye.expand_as(factor), upper=False)
        absolute = inverse.abs()
        frobenius = torch.linalg.matrix_norm(inverse)
        mixed = torch.sqrt(absolute.sum(2).max(1).values * absolute.sum(1).max(1).values)
        row_norm = torch.sqrt((inverse**2).sum(1).max(1).values)
        factor_frobenius = torch.linalg.matrix_norm(factor)
        norms = torch.stack([frobenius, mixed, row_norm, factor_frobenius]).cpu().numpy()
        # The rounding margin as `_linalg.margin_bounds` carries it (per sample: its rows).
        counts = pinned.sum(axis=1)
        bounds = np.array([linalg.margin_bounds(
            linalg.FactorNorms(*map(float, norms[:, k]), weight.shape[1]), int(counts[k]))[:2]
            for k in range(len(counts))]).T
    return h.cpu().numpy(), full_rank.cpu().numpy(), bounds


BACKEND = TorchBackend()
