"""Exact inversion by mixed-integer programming, and the 3-SAT reduction behind its hardness.

The layer-wise LPs of Lei et al. (2019) are fast and provably right on expansive random nets,
but deciding in general whether an observation has a pre-image is NP-hard (`sat_network` builds
the reduction). This module answers the question exactly, for small networks, with one binary
variable per unstable piecewise-linear unit and HiGHS's branch and bound:

- `preimage(net, x, tol)` decides whether some z in a box has ||G(z) - x||_inf <= tol;
- `preimage_polytope(net, C, d)` decides whether some z in a box has C G(z) <= d, the general
  question (the l_inf ball is C = [I; -I], d = [x + tol; tol - x], `linf_polytope`; a VNN-LIB
  property is one such polytope per disjunct);
- `closest(net, x, norm)` finds the global minimum of ||G(z) - x|| (l_inf or l_1) over the box,
  to measure how far the LP or gradient descent is from optimal;
- `sat_network(clauses, n_vars)` turns a CNF formula into a four-layer ReLU network and a target
  that has a pre-image exactly when the formula is satisfiable.

The mixed-integer program
-------------------------
z is confined to a box lo <= z <= hi (default |z_i| <= DEFAULT_BOX = 10). Interval bound
propagation (`interval_bounds`) gives every unit's pre-activation u = w.h + b a range [l, h].
A relu or leaky_relu unit (y = u for u >= 0, y = a*u below) is

- stable when l >= 0 (y = u) or h <= 0 (y = a*u): a linear row, no binary;
- unstable when l < 0 < h: u = p + q, y = p + a*q, 0 <= p <= h*d, l*(1 - d) <= q <= 0 with one
  binary d (d = 1: the unit is active). Its LP relaxation is the triangle relaxation.

Identity units are linear rows. Sigmoid, tanh and elu are not piecewise linear: an
InputError. (Each activation gives this form as its `kink`, activations.Kink.)
For `preimage` the output rows |y_j - x_j| <= t, t <= tol also shrink the last layer's ranges
(a relu output with x_j > tol must be active), which removes many binaries; `closest` does the
same with the distance r of its best known point in place of tol.

Before branching (both on by default):
- a local search (sequential LP with a trust region, `_local_search`) from the box centre and
  the layer-wise LP's answer (`invert`): a witness for `preimage`, an incumbent and the cap r
  for `closest`;
- bound tightening (`_tighten_box`): LPs over the relaxation minimise and maximise each z_i and
  shrink the box, then interval propagation is redone. It removes no solution.

Soundness and tolerances
------------------------
- exists=True is claimed only when a float64 forward pass `net.forward(z)` of the witness gives
  ||G(z) - x||_inf <= tol + VERIFY_SLACK * (1 + ||x||_inf). HiGHS's own answer is polished
  first: the activation pattern of its solution fixes a linear region in which an LP over z
  alone is solved with tight tolerances.
- exists=False rests on HiGHS's proof of infeasibility and holds for z in the box only: the
  big-M constants come from the box, so a pre-image outside it is not searched. Without an
  explicit `box=` a `BoxWarning` says so. An observation outside the last activation's range
  (a relu output below -tol) gives exists=False for every z, box or not, without a warning.
- A witness or optimum on the boundary of the box raises a `BoxWarning`: the pre-image set, or
  a better fit, may continue outside the box.
- A time limit gives exists=None (closest: status 'time_limit') with the best bound so far;
  never a True or False that was not proven.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from layerinv._validation import (
    as_float_array,
    check_batch,
    check_choice,
    check_finite,
    check_positive,
    make_rng,
)
from layerinv.activations import PIECEWISE_LINEAR_NAMES
from layerinv.errors import InputError
from layerinv.network import Layer, Network
from layerinv.results import ClosestResult, PreimageResult, Status
from layerinv.solvers import _highs

__all__ = [
    "DEFAULT_BOX",
    "VERIFY_SLACK",
    "BoxWarning",
    "ClosestResult",
    "PreimageResult",
    "closest",
    "decode_assignment",
    "interval_bounds",
    "linf_polytope",
    "preimage",
    "preimage_polytope",
    "random_3sat",
    "sat_network",
    "satisfies",
]

DEFAULT_BOX = 10.0
"""Half-width of the default box |z_i| <= DEFAULT_BOX searched by `preimage` and `closest`."""

VERIFY_SLACK = 1e-9
"""A witness passes when its forward residual is <= tol + VERIFY_SLACK * (1 + ||x||_inf)."""

_NORMS = ("linf", "l1")
# Outward padding of the big-M constants of unstable units (rounding in the propagation).
_BIGM_PAD = 1e-9
# Tolerances of the polishing LP, far tighter than the MIP's 1e-6.
_POLISH_TOL = 1e-10


class BoxWarning(UserWarning):
    """The box on z may cut off a pre-image or a better fit (see the module doc)."""


# --------------------------------------------------------------------------- arguments
def _check_net(net: object) -> Network:
    if not isinstance(net, Network):
        raise InputError(f"net must be a layerinv.Network; got {type(net).__name__}")
    for i, layer in enumerate(net.layers):
        if layer.activation.kink is None:
            raise InputError(
                f"layer {i} has activation {layer.activation!r}, which is not piecewise linear; "
                f"exact inversion by mixed-integer programming supports {PIECEWISE_LINEAR_NAMES}"
            )
    return net


def _check_single(x: object, net: Network) -> np.ndarray:
    batch, single = check_batch(x, net.output_dim, "x")
    if not single:
        raise InputError(f"x must be a single observation of shape ({net.output_dim},); got a "
                         f"batch of shape {batch.shape} (call once per observation)")
    return batch[0]


def _check_box(box: object, k: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(lo, hi, defaulted) from None, a half-width, or a pair (lo, hi) of scalars or arrays."""
    if box is None:
        return np.full(k, -DEFAULT_BOX), np.full(k, DEFAULT_BOX), True
    if isinstance(box, numbers.Real) and not isinstance(box, bool):
        half = check_positive(box, "box")
        return np.full(k, -half), np.full(k, half), False
    if isinstance(box, tuple | list) and len(box) == 2:
        lo = np.broadcast_to(as_float_array(box[0], "box[0]"), (k,)).astype(np.float64)
        hi = np.broadcast_to(as_float_array(box[1], "box[1]"), (k,)).astype(np.float64)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(lo > hi):
            raise InputError(f"box=(lo, hi) must hold finite bounds with lo <= hi, each a scalar "
                             f"or shape ({k},); got {box!r}")
        return lo, hi, False
    raise InputError(f"box must be None (|z_i| <= {DEFAULT_BOX}), a half-width > 0, or a pair "
                     f"(lo, hi) of scalars or arrays of shape ({k},); got {box!r}")


def _check_time_limit(time_limit: object) -> float:
    if time_limit is None:
        return math.inf
    return check_positive(time_limit, "time_limit", allow_zero=True)


# --------------------------------------------------------------------------- polytopes
class _Polytope:
    """The output set {y : C y <= d}, checked; `coordinate_bounds` and `violation`."""

    def __init__(self, C: object, d: object, n_out: int):
        C = as_float_array(C, "C")
        d = as_float_array(d, "d")
        if C.ndim != 2 or C.shape[1] != n_out or C.shape[0] < 1:
            raise InputError(f"C must be a matrix (m, {n_out}) with m >= 1 rows over the "
                             f"network's {n_out} outputs; got shape {C.shape}")
        if d.shape != (C.shape[0],):
            raise InputError(f"d must have shape ({C.shape[0]},), one bound per row of C; got "
                             f"shape {d.shape}")
        check_finite(C, "C")
        check_finite(d, "d")
        self.C, self.d = C, d

    def coordinate_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) on y that the rows with a single nonzero entry state (+-inf elsewhere)."""
        n = self.C.shape[1]
        lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
        for row, bound in zip(self.C, self.d, strict=True):
            (nonzero,) = np.nonzero(row)
            if len(nonzero) == 1:
                j = nonzero[0]
                if row[j] > 0:
                    hi[j] = min(hi[j], bound / row[j])
                else:
                    lo[j] = max(lo[j], bound / row[j])
        return lo, hi

    def violation(self, y: np.ndarray) -> float:
        """max_i (C y - d)_i: <= 0 inside the polytope."""
        return float(np.max(self.C @ y - self.d))

    def slack(self, y: np.ndarray) -> np.ndarray:
        """The verification slack of each row: VERIFY_SLACK times the size of its terms."""
        return VERIFY_SLACK * (1.0 + np.abs(self.d) + np.abs(self.C) @ np.abs(y))


def linf_polytope(x: object, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(C, d) of the l_inf ball ||y - x||_inf <= tol: C = [I; -I], d = [x + tol; tol - x].

    `preimage_polytope(net, *linf_polytope(x, tol))` asks what `preimage(net, x, tol)` asks.
    """
    x = as_float_array(x, "x")
    if x.ndim != 1:
        raise InputError(f"x must be a vector; got shape {x.shape}")
    tol = check_positive(tol, "tol", allow_zero=True)
    eye = np.eye(len(x))
    return np.vstack([eye, -eye]), np.concatenate([x + tol, tol - x])


# --------------------------------------------------------------------------- bounds
def interval_bounds(net: Network, box: object = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pre-activation bounds (l, h) of every layer for z in the box, by interval propagation.

    `box` is as in `preimage`. Entry i bounds W_i x_{i-1} + b_i. Works for every activation
    (all are monotone).
    """
    if not isinstance(net, Network):
        raise InputError(f"net must be a layerinv.Network; got {type(net).__name__}")
    lo, hi, _ = _check_box(box, net.input_dim)
    bounds = []
    for layer in net.layers:
        low, high = _propagate(layer, lo, hi)
        bounds.append((low, high))
        lo, hi = layer.activation.image(low, high)
    return bounds


def _propagate(layer: Layer, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mid, rad = 0.5 * (lo + hi), 0.5 * (hi - lo)
    center = layer.preactivation(mid)
    radius = layer.operator.abs().apply(rad)
    return center - radius, center + radius


# --------------------------------------------------------------------------- the MILP
class _Model:
    """Columns, sparse rows and the bookkeeping to map a z to every column (a MIP start)."""

    def __init__(self) -> None:
        self.col_lo: list[np.ndarray] = []
        self.col_hi: list[np.ndarray] = []
        self.cost: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []
        self.n_cols = 0
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.row_lo: list[float] = []
        self.row_hi: list[float] = []
        self.layers: list[dict] = []

    def add_cols(self, lo: np.ndarray, hi: np.ndarray, *, cost: float = 0.0,
                 integer: bool = False) -> np.ndarray:
        lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        index = np.arange(self.n_cols, self.n_cols + len(lo))
        self.col_lo.append(lo)
        self.col_hi.append(hi)
        self.cost.append(np.full(len(lo), cost))
        self.integer.append(np.full(len(lo), integer))
        self.n_cols += len(lo)
        return index

    def add_row(self, cols: Iterable[int], vals: Iterable[float], lo: float, hi: float) -> None:
        r = len(self.row_lo)
        for c, v in zip(cols, vals, strict=True):
            if v != 0.0:
                self.rows.append(r)
                self.cols.append(int(c))
                self.vals.append(float(v))
        self.row_lo.append(float(lo))
        self.row_hi.append(float(hi))

    @property
    def n_binaries(self) -> int:
        return int(sum(int(i.sum()) for i in self.integer))

    def to_highs(self, *, relaxed: bool = False) -> Any:  # a highspy.HighsLp
        """The model for HiGHS; relaxed: every integer column continuous (the LP relaxation)."""
        n_rows = len(self.row_lo)
        matrix = sp.csc_matrix((self.vals, (self.rows, self.cols)), shape=(n_rows, self.n_cols))
        matrix.sort_indices()
        return _highs.model(np.concatenate(self.cost), np.concatenate(self.col_lo),
                            np.concatenate(self.col_hi), matrix,
                            np.array(self.row_lo, dtype=np.float64),
                            np.array(self.row_hi, dtype=np.float64),
                            None if relaxed else np.concatenate(self.integer))


def _build(net: Network, lo: np.ndarray, hi: np.ndarray, x: Any, objective: str,
           radius: float = math.inf) -> tuple[_Model, bool]:
    """The MILP; objective 'preimage' (min t, t <= radius = tol), 'linf', 'l1' or 'polytope'.

    Every output is confined to [x_j - radius, x_j + radius], which shrinks the last layer's
    ranges: for 'preimage' radius is tol, for `closest` the distance of a known point (the
    optimum is no farther, in l_inf or l_1, and ||.||_inf <= ||.||_1). For 'polytope' x is a
    `_Polytope` (C, d): rows C y - t <= d with t <= 0 (min t, the largest violation), and the
    single-coordinate rows of C confine the outputs the same way.
    Returns the model and whether it is infeasible on its face (a last-layer range that the
    outputs' bands and the box's interval bounds leave empty).
    """
    model = _Model()
    z_cols = model.add_cols(lo, hi)
    h_cols, h_lo, h_hi = z_cols, lo, hi
    last = len(net.layers) - 1
    for index, layer in enumerate(net.layers):
        act = layer.activation
        kink = act.kink  # u = p + q, act(u) = above * p + below * q (activations.Kink)
        low, high = _propagate(layer, h_lo, h_hi)
        tightened = np.zeros(layer.n_out, dtype=bool)
        out_bounds = _output_bounds(x, objective, radius) if index == last else None
        if out_bounds is not None:
            # The output rows force act(u) into [out_lo, out_hi]: invert that interval.
            need_lo, need_hi = kink.preimage(*out_bounds)
            if np.any(need_hi < need_lo) or np.any(need_hi < low) or np.any(need_lo > high):
                return model, True
            tightened = (need_lo > low) | (need_hi < high)
            low, high = np.maximum(low, need_lo), np.minimum(high, need_hi)
        y_lo, y_hi = act.image(low, high)
        if kink.linear:
            linear, zero = np.ones(layer.n_out, dtype=bool), np.zeros(layer.n_out, dtype=bool)
        else:
            linear = (low >= 0) | ((high <= 0) & (kink.below != 0))
            zero = (high <= 0) & (kink.below == 0)
        unstable = ~(linear | zero)
        y_cols = model.add_cols(y_lo, y_hi)
        bias = np.zeros(layer.n_out) if layer.bias is None else layer.bias
        # Every row (the MILP encodes them all), as CSR rows: the model is sparse, and
        # add_row keeps only the nonzero entries anyway, in the same (column) order.
        weight = layer.operator.rows(sparse=True)
        for j in np.flatnonzero(linear):
            s = kink.above if low[j] >= 0 else kink.below
            cols, vals = _sparse_row(weight, j)
            # y_j - s * w_j.h = s * b_j
            model.add_row(np.concatenate([[y_cols[j]], h_cols[cols]]),
                          np.concatenate([[1.0], -s * vals]), s * bias[j], s * bias[j])
        for j in np.flatnonzero(zero & tightened):
            cols, vals = _sparse_row(weight, j)
            model.add_row(h_cols[cols], vals, low[j] - bias[j], high[j] - bias[j])
        unstable_idx = np.flatnonzero(unstable)
        pad_lo = np.where(tightened, low, low - _BIGM_PAD * (1 + np.abs(low)))[unstable_idx]
        pad_hi = np.where(tightened, high, high + _BIGM_PAD * (1 + np.abs(high)))[unstable_idx]
        p_cols = model.add_cols(np.zeros(len(unstable_idx)), pad_hi)
        q_cols = model.add_cols(pad_lo, np.zeros(len(unstable_idx)))
        d_cols = model.add_cols(np.zeros(len(unstable_idx)), np.ones(len(unstable_idx)),
                                integer=True)
        for n, j in enumerate(unstable_idx):
            p, q, d = p_cols[n], q_cols[n], d_cols[n]
            cols, vals = _sparse_row(weight, j)
            # p + q - w_j.h = b_j
            model.add_row(np.concatenate([[p, q], h_cols[cols]]),
                          np.concatenate([[1.0, 1.0], -vals]), bias[j], bias[j])
            model.add_row([p, d], [1.0, -pad_hi[n]], -np.inf, 0.0)          # p <= h d
            model.add_row([q, d], [1.0, pad_lo[n]], pad_lo[n], np.inf)      # q >= l (1 - d)
            # y = above p + below q (relu: y = p)
            model.add_row([y_cols[j], p, q], [1.0, -kink.above, -kink.below], 0.0, 0.0)
        model.layers.append({"y": y_cols, "unstable": unstable_idx, "p": p_cols, "q": q_cols,
                             "d": d_cols})
        h_cols, h_lo, h_hi = y_cols, y_lo, y_hi

    n_out = net.output_dim
    if objective == "polytope":
        t_col = model.add_cols(np.full(1, -np.inf), np.zeros(1), cost=1.0)
        C, d = x.C, x.d
        for i in range(len(d)):  # C_i y - t <= d_i
            model.add_row(np.concatenate([h_cols, t_col]), np.concatenate([C[i], [-1.0]]),
                          -np.inf, d[i])
        model.layers.append({"t": t_col})
        return model, False
    if objective == "l1":
        t_cols = model.add_cols(np.zeros(n_out), np.full(n_out, radius), cost=1.0)
        if math.isfinite(radius):
            model.add_row(t_cols, np.ones(n_out), -np.inf, radius)
    else:
        t_cols = np.repeat(model.add_cols(np.zeros(1), np.full(1, radius), cost=1.0), n_out)
    for j in range(n_out):
        model.add_row([h_cols[j], t_cols[j]], [1.0, -1.0], -np.inf, x[j])  # y - t <= x
        model.add_row([h_cols[j], t_cols[j]], [1.0, 1.0], x[j], np.inf)    # y + t >= x
    model.layers.append({"t": np.unique(t_cols)})
    return model, False


def _output_bounds(x: Any, objective: str, radius: float
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """Bounds on the outputs that the objective's rows imply (None: none)."""
    if objective == "polytope":
        return x.coordinate_bounds()
    if math.isfinite(radius):
        return x - radius, x + radius
    return None


def _sparse_row(matrix: sp.csr_array, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Row j of a CSR matrix: the column indices of its stored entries, and their values."""
    start, stop = matrix.indptr[j], matrix.indptr[j + 1]
    return matrix.indices[start:stop], matrix.data[start:stop]


def _assignment(model: _Model, net: Network, z: np.ndarray, x: np.ndarray,
                objective: str) -> np.ndarray:
    """Every column's value at z (for a MIP start)."""
    values = np.zeros(model.n_cols)
    values[: net.input_dim] = z
    h = z
    for layer, cols in zip(net.layers, model.layers, strict=False):
        u = layer.preactivation(h)
        h = layer.activation.forward(u)
        values[cols["y"]] = h
        k = cols["unstable"]
        values[cols["p"]] = np.maximum(u[k], 0.0)
        values[cols["q"]] = np.minimum(u[k], 0.0)
        values[cols["d"]] = (u[k] > 0).astype(np.float64)
    if objective == "polytope":
        values[model.layers[-1]["t"]] = x.violation(h)
        return values
    gap = np.abs(h - x)
    values[model.layers[-1]["t"]] = gap if objective == "l1" else gap.max()
    return values


def _solve(model: _Model, time_limit: float, *, first_feasible: bool,
           rel_gap: float = 1e-4, abs_gap: float = 1e-6, start: np.ndarray | None = None,
           floor: float = 0.0):
    """Run HiGHS; returns (status name, column values or None, dual bound >= floor)."""
    options: dict[str, Any] = {"random_seed": 0}
    if math.isfinite(time_limit):
        options["time_limit"] = float(time_limit)
    options.update(mip_rel_gap=float(rel_gap), mip_abs_gap=float(abs_gap))
    if first_feasible:
        options["mip_max_improving_sols"] = 1
    highs = _highs.loaded(model.to_highs(), **options)
    if start is not None:
        _highs.set_start(highs, start)
    _highs.run(highs)  # a MILP can run for minutes: Ctrl-C must stop it
    info = highs.getInfo()
    # The objective is bounded below (t >= 0, every other cost 0): never unbounded (mip=True).
    status = _highs.status_of(highs.getModelStatus(), mip=True)
    # exact's own words for a cap (only a time limit is set) and a failure.
    name = {Status.MAX_STEPS: Status.TIME_LIMIT,
            Status.NUMERICAL_ERROR: Status.SOLVER_ERROR}.get(status, status)
    values = None
    if int(info.primal_solution_status) == 2:  # kSolutionStatusFeasible
        values = _highs.column_values(highs)
        if len(values) != model.n_cols:
            values = None
    bound = float(info.mip_dual_bound) if model.n_binaries else float(info.objective_function_value)
    if name == "infeasible":
        bound = math.inf
    elif not math.isfinite(bound) or name == "solver_error":
        bound = floor
    return name, values, max(bound, floor)


def _tighten_box(net: Network, lo: np.ndarray, hi: np.ndarray, x: np.ndarray, objective: str,
                 radius: float, deadline: float, rounds: int = 4
                 ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Shrink the box on z by LPs over the MILP's relaxation (optimisation-based tightening).

    Each round minimises and maximises every z_i over the LP relaxation (triangle relaxation
    of the unstable units, outputs within `radius` of x), then interval propagation is redone
    on the smaller box. Every z feasible for the MILP stays inside, so nothing is lost.
    Returns (lo, hi, infeasible), infeasible when the relaxation itself has no point.
    """
    k = net.input_dim
    for _ in range(rounds):
        if time.perf_counter() > deadline:
            break
        model, empty = _build(net, lo, hi, x, objective, radius)
        if empty:
            return lo, hi, True
        if model.n_binaries == 0:
            break
        highs = _highs.loaded(model.to_highs(relaxed=True))
        new_lo, new_hi = lo.copy(), hi.copy()
        zero = np.zeros(model.n_cols)
        for i in range(k):
            for sense in (1.0, -1.0):
                if time.perf_counter() > deadline:
                    break
                cost = zero.copy()
                cost[i] = sense
                highs.changeColsCost(model.n_cols, np.arange(model.n_cols, dtype=np.int32), cost)
                highs.run()  # short LPs: Ctrl-C lands between them
                status = _highs.status_of(highs.getModelStatus())
                if status == Status.INFEASIBLE:
                    return lo, hi, True
                if status != Status.OPTIMAL:
                    continue
                value = sense * float(highs.getInfo().objective_function_value)
                # Generous against the LP's 1e-7 tolerances (an objective error of the order
                # of tolerance x range): a slightly wider box costs nothing, a narrower one
                # could cut off a solution.
                pad = 1e-6 * (1.0 + abs(value) + (hi[i] - lo[i]))
                if sense > 0:
                    new_lo[i] = max(lo[i], min(value - pad, hi[i]))
                else:
                    new_hi[i] = min(hi[i], max(value + pad, new_lo[i]))
        shrink = np.max((hi - lo) - (new_hi - new_lo), initial=0.0)
        lo, hi = new_lo, new_hi
        if shrink <= 0.05 * np.max(hi - lo, initial=0.0):
            break
    return lo, hi, False


# --------------------------------------------------------------------------- polishing
def _region(net: Network, z: np.ndarray, pattern: list | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The linear region of an activation pattern: G = A z + c there, and S z <= r defines it.

    The pattern is the forward one at z, overridden by `pattern` (per layer: the unstable
    units' indices and their MILP binaries) where given.
    """
    k = net.input_dim
    A, c = np.eye(k), np.zeros(k)
    h = z
    sign_rows, sign_rhs = [np.zeros((0, k))], [np.zeros(0)]
    for index, layer in enumerate(net.layers):
        act = layer.activation
        bias = 0.0 if layer.bias is None else layer.bias
        WA, Wc = layer.operator.matmat(A), layer.operator.apply(c) + bias
        u = layer.operator.apply(h) + bias
        h = act.forward(u)
        kink = act.kink
        if kink.linear:
            A, c = kink.above * WA, kink.above * Wc
            continue
        active = u >= 0
        if pattern is not None:
            unstable, d = pattern[index]
            active[unstable] = d > 0.5
        # active: u >= 0  ->  -WA z <= Wc ;  inactive: u <= 0  ->  WA z <= -Wc
        sign = np.where(active, -1.0, 1.0)
        sign_rows.append(sign[:, None] * WA)
        sign_rhs.append(-sign * Wc)
        scale = np.where(active, kink.above, kink.below)
        A, c = scale[:, None] * WA, scale * Wc
    return A, c, np.vstack(sign_rows), np.concatenate(sign_rhs)


def _fit_lp(A: np.ndarray, c: np.ndarray, x: np.ndarray, norm: str, lo: np.ndarray,
            hi: np.ndarray, S: np.ndarray | None = None, r: np.ndarray | None = None
            ) -> np.ndarray | None:
    """argmin over lo <= z <= hi (and S z <= r) of ||A z + c - x|| (linf or l1), by HiGHS;
    for norm 'polytope' (x a `_Polytope`) of the largest violation max_i (C (A z + c) - d)_i."""
    if norm == "polytope":
        A, c, x, norm = x.C @ A, x.C @ c, x.d, "max"
    n, k = A.shape
    n_t = n if norm == "l1" else 1
    T = np.zeros((n, n_t))
    T[np.arange(n), np.arange(n) if norm == "l1" else 0] = 1.0
    # -inf <= A z - t <= x - c  and  x - c <= A z + t <= inf ('max': the first rows only)
    blocks = [np.hstack([A, -T]), np.hstack([A, T])][: 1 if norm == "max" else 2]
    row_lo = [np.full(n, -np.inf), x - c][: len(blocks)]
    row_hi = [x - c, np.full(n, np.inf)][: len(blocks)]
    if S is not None and len(S):
        blocks.append(np.hstack([S, np.zeros((len(S), n_t))]))
        row_lo.append(np.full(len(S), -np.inf))
        row_hi.append(r)
    t_low = -np.inf if norm == "max" else 0.0  # a violation may be negative, a norm not
    lp = _highs.model(np.concatenate([np.zeros(k), np.ones(n_t)]),
                      np.concatenate([lo, np.full(n_t, t_low)]),
                      np.concatenate([hi, np.full(n_t, np.inf)]),
                      sp.csc_matrix(np.vstack(blocks)), np.concatenate(row_lo),
                      np.concatenate(row_hi))
    highs = _highs.loaded(lp, primal_feasibility_tolerance=_POLISH_TOL,
                          dual_feasibility_tolerance=_POLISH_TOL)
    _highs.run(highs)
    if _highs.status_of(highs.getModelStatus()) != Status.OPTIMAL:
        return None
    z = _highs.column_values(highs)[:k]
    return np.clip(z, lo, hi)


def _polish(net: Network, z: np.ndarray, pattern: list | None, lo: np.ndarray, hi: np.ndarray,
            x: np.ndarray, norm: str) -> np.ndarray | None:
    """The best z in the linear region of an activation pattern (an LP in z alone)."""
    A, c, S, r = _region(net, z, pattern)
    return _fit_lp(A, c, x, norm, lo, hi, S, r)


def _local_search(net: Network, z: np.ndarray, lo: np.ndarray, hi: np.ndarray, x: np.ndarray,
                  norm: str, deadline: float, iterations: int = 60,
                  stop_below: float = -1.0) -> np.ndarray:
    """Sequential LP with a trust region: a local minimum of ||G(z) - x|| near z.

    Each step minimises the norm of the linearisation of G at z (exact in z's region) over
    |z' - z| <= delta, and keeps the step only if the true distance drops.
    """
    f = _distance(net, z, x, norm)
    delta = max(float(np.max(hi - lo, initial=0.0)) / 20.0, 1e-3)
    for _ in range(iterations):
        if time.perf_counter() > deadline or delta < 1e-7 or f <= stop_below:
            break
        A, c, _, _ = _region(net, z)
        step = _fit_lp(A, c, x, norm, np.maximum(lo, z - delta), np.minimum(hi, z + delta))
        f_step = math.inf if step is None else _distance(net, step, x, norm)
        if f_step < f - 1e-12 * (1.0 + f):
            z, f = step, f_step
            delta *= 2.0
        else:
            delta /= 4.0
    return z


def _binaries(model: _Model, values: np.ndarray) -> list:
    return [(cols["unstable"], values[cols["d"]]) for cols in model.layers[:-1]]


def _distance(net: Network, z: np.ndarray, x: Any, norm: str) -> float:
    """||G(z) - x|| in the norm; for 'polytope' (x a `_Polytope`) the largest violation."""
    if norm == "polytope":
        return x.violation(net.forward(z))
    gap = np.abs(net.forward(z) - x)
    return float(gap.sum() if norm == "l1" else gap.max())


def _default_starts(net: Network, x: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    norm: str) -> list[np.ndarray]:
    """The box centre and the layer-wise LP's answer (`invert`), clipped into the box."""
    from layerinv._walk import invert

    starts = [0.5 * (lo + hi)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z = invert(net, x, norm, progress=False).z
        if np.all(np.isfinite(z)):
            starts.append(np.clip(z, lo, hi))
    except Exception:  # only a starting point: any failure just skips it
        pass
    return starts


def _warn_default_box() -> None:
    warnings.warn(
        f"no pre-image within tol inside the default box |z_i| <= {DEFAULT_BOX}; points outside "
        f"it were not searched (pass box= to choose the box)",
        BoxWarning, stacklevel=3,
    )


def _warn_boundary(z: np.ndarray, lo: np.ndarray, hi: np.ndarray, what: str) -> None:
    scale = 1e-7 * (1.0 + np.maximum(np.abs(lo), np.abs(hi)))
    free = lo < hi
    on = free & ((np.abs(z - lo) <= scale) | (np.abs(z - hi) <= scale))
    if on.any():
        where = ", ".join(str(i) for i in np.flatnonzero(on)[:10])
        warnings.warn(
            f"{what} lies on the boundary of the box on z (coordinates {where}): the box may "
            f"cut off {'further pre-images' if what == 'the witness' else 'a better fit'} "
            f"outside it; pass a wider box= to search further",
            BoxWarning, stacklevel=3,
        )


# --------------------------------------------------------------------------- public
def preimage(net: Network, x: object, tol: float = 1e-6, time_limit: float | None = None, *,
             box: object = None, tighten: bool = True, search: bool = True) -> PreimageResult:
    """Decide whether some z in the box has ||G(z) - x||_inf <= tol (a mixed-integer program).

    Parameters
    ----------
    net : Network
        Layers with relu, leaky_relu or identity activations (sigmoid, tanh, elu: InputError).
    x : array (n,)
        One observation.
    tol : float >= 0
        The l_inf tolerance. A witness is accepted when a float64 forward pass gives a residual
        <= tol + VERIFY_SLACK * (1 + ||x||_inf).
    time_limit : float, optional
        Seconds for bound tightening and HiGHS together (model building and the final
        polishing LP come on top). When it runs out, exists is None and `bound` is the best
        lower bound found.
    box : None, float or (lo, hi)
        The search box on z: None is |z_i| <= DEFAULT_BOX (10); a float b is |z_i| <= b; a pair
        gives per-coordinate bounds (scalars or arrays (k,)). exists=False means no pre-image
        inside this box (see the module doc); tighter boxes give smaller big-M constants and
        faster solves.
    tighten : bool
        Before branching, shrink the box by LPs over the relaxation (min and max of each z_i,
        a few rounds, see `_tighten_box`); sound, and on expansive nets it removes most
        binaries. Off: interval propagation over the given box only.
    search : bool
        Before the MILP, look for a witness by local search (sequential LP with a trust
        region) from the box centre and the layer-wise LP's answer; a witness found this way
        is verified like any other and reported with bound 0.

    Returns
    -------
    PreimageResult
    """
    started = time.perf_counter()
    net = _check_net(net)
    x = _check_single(x, net)
    tol = check_positive(tol, "tol", allow_zero=True)
    limit = _check_time_limit(time_limit)
    lo, hi, defaulted = _check_box(box, net.input_dim)

    if np.any(x + tol < net.layers[-1].activation.output_low):
        # An output below the activation's range (a relu output < -tol): no z anywhere.
        return PreimageResult(False, None, math.inf, math.inf, "infeasible",
                              time.perf_counter() - started, 0)
    deadline = started + limit
    slack = VERIFY_SLACK * (1.0 + float(np.max(np.abs(x))))
    if search:
        # A cheap witness first: local search from the box centre and the layer-wise LP.
        for z in _default_starts(net, x, lo, hi, "linf"):
            z = _local_search(net, z, lo, hi, x, "linf", deadline, stop_below=tol)
            if (res := _distance(net, z, x, "linf")) <= tol + slack:
                model, _ = _build(net, lo, hi, x, "preimage", tol)
                _warn_boundary(z, lo, hi, "the witness")
                return PreimageResult(True, z, res, 0.0, "feasible",
                                      time.perf_counter() - started, model.n_binaries)
    t_lo, t_hi, empty = lo, hi, False
    if tighten:
        t_lo, t_hi, empty = _tighten_box(net, lo, hi, x, "preimage", tol, deadline)
    if not empty:
        model, empty = _build(net, t_lo, t_hi, x, "preimage", tol)
    if empty:
        seconds = time.perf_counter() - started
        if defaulted:
            _warn_default_box()
        return PreimageResult(False, None, math.inf, math.inf, "infeasible", seconds, 0)
    status, values, bound = _solve(model, max(deadline - time.perf_counter(), 0.0),
                                   first_feasible=True)
    n_binaries = model.n_binaries

    if values is not None:
        z_milp = np.clip(values[: net.input_dim], lo, hi)
        best, best_res = z_milp, _distance(net, z_milp, x, "linf")
        # The best point of the solution's linear region: HiGHS stops at the first point
        # within tol (up to its 1e-6 tolerances); the LP usually gives a residual near 0.
        z_pol = _polish(net, z_milp, _binaries(model, values), lo, hi, x, "linf")
        if z_pol is not None and (res := _distance(net, z_pol, x, "linf")) < best_res:
            best, best_res = z_pol, res
        seconds = time.perf_counter() - started
        if best_res <= tol + slack:
            _warn_boundary(best, lo, hi, "the witness")
            return PreimageResult(True, best, best_res, min(bound, tol), "feasible", seconds,
                                  n_binaries)
        # HiGHS's point fits only within its own tolerances: neither True nor False is proven.
        return PreimageResult(None, best, best_res, min(bound, tol), "numerical_error", seconds,
                              n_binaries)

    seconds = time.perf_counter() - started
    if status == "infeasible":
        if defaulted:
            _warn_default_box()
        return PreimageResult(False, None, math.inf, math.inf, "infeasible", seconds, n_binaries)
    if status == "optimal":  # optimal without a solution: should not happen
        status = "solver_error"
    return PreimageResult(None, None, math.inf, min(bound, tol), status, seconds, n_binaries)


def preimage_polytope(net: Network, C: object, d: object, time_limit: float | None = None, *,
                      box: object = None, tighten: bool = True,
                      search: bool = True) -> PreimageResult:
    """Decide whether some z in the box has C G(z) <= d (a mixed-integer program).

    The general pre-image question: the outputs in a polytope rather than an l_inf ball
    (`linf_polytope(x, tol)` gives the ball, C = [I; -I], d = [x + tol; tol - x]); a VNN-LIB
    property's conjunction of output constraints is one such (C, d) (`layerinv.vnnlib`).

    Parameters
    ----------
    net, time_limit, box, tighten : as in `preimage`.
    C : array (m, n), d : array (m,)
        The output constraints C y <= d (m >= 1 rows over the n outputs, finite).
    search : bool
        Local search first (as in `preimage`), from the box centre and, where the rows of C
        bound every output coordinate, the layer-wise LP's answer for the centre of those
        bounds.

    Returns
    -------
    PreimageResult
        As for `preimage`, with two fields measured on the polytope: `residual` is the largest
        violation max_i (C G(z) - d)_i of the witness by a float64 forward pass (<= 0 inside),
        and `bound` HiGHS's lower bound on the smallest largest violation over the box (the
        search stops at the first point with violation <= 0: +inf when exists is False, at
        most 0 otherwise). A witness is accepted when every row has
        (C G(z) - d)_i <= VERIFY_SLACK * (1 + |d_i| + |C_i| . |G(z)|), the size of its terms.
        exists=False rests on HiGHS's proof of infeasibility in the box, as for `preimage`
        (with a `BoxWarning` for the default box; none when rows of C alone put an output
        outside the last activation's range, which no z reaches).
    """
    started = time.perf_counter()
    net = _check_net(net)
    spec = _Polytope(C, d, net.output_dim)
    limit = _check_time_limit(time_limit)
    lo, hi, defaulted = _check_box(box, net.input_dim)
    deadline = started + limit

    def answer(exists: bool | None, z: np.ndarray | None, status: str, bound: float,
               n_binaries: int) -> PreimageResult:
        residual = math.inf if z is None else spec.violation(net.forward(z))
        return PreimageResult(exists, z, residual, bound, status, time.perf_counter() - started,
                              n_binaries)

    out_lo, out_hi = spec.coordinate_bounds()
    act = net.layers[-1].activation
    if np.any(out_hi < act.output_low) or np.any(out_lo > act.output_high):
        return answer(False, None, "infeasible", math.inf, 0)  # no z anywhere: no warning
    if search:
        for z in _polytope_starts(net, out_lo, out_hi, lo, hi):
            z = _local_search(net, z, lo, hi, spec, "polytope", deadline, stop_below=0.0)
            if _fits(net, z, spec):
                model, _ = _build(net, lo, hi, spec, "polytope")
                _warn_boundary(z, lo, hi, "the witness")
                return answer(True, z, "feasible", min(spec.violation(net.forward(z)), 0.0),
                              model.n_binaries)
    t_lo, t_hi, empty = lo, hi, False
    if tighten:
        t_lo, t_hi, empty = _tighten_box(net, lo, hi, spec, "polytope", math.inf, deadline)
    if not empty:
        model, empty = _build(net, t_lo, t_hi, spec, "polytope")
    if empty:
        if defaulted:
            _warn_default_box()
        return answer(False, None, "infeasible", math.inf, 0)
    status, values, bound = _solve(model, max(deadline - time.perf_counter(), 0.0),
                                   first_feasible=True, floor=-math.inf)
    if values is not None:
        z_milp = np.clip(values[: net.input_dim], lo, hi)
        candidates = [z_milp]
        # The most interior point of the solution's linear region (an LP in z alone).
        z_pol = _polish(net, z_milp, _binaries(model, values), lo, hi, spec, "polytope")
        if z_pol is not None:
            candidates.append(z_pol)
        best = min(candidates, key=lambda z: spec.violation(net.forward(z)))
        if _fits(net, best, spec):
            _warn_boundary(best, lo, hi, "the witness")
            return answer(True, best, "feasible", min(bound, 0.0), model.n_binaries)
        # HiGHS's point fits only within its own tolerances: neither True nor False is proven.
        return answer(None, best, "numerical_error", min(bound, 0.0), model.n_binaries)
    if status == "infeasible":
        if defaulted:
            _warn_default_box()
        return answer(False, None, "infeasible", math.inf, model.n_binaries)
    if status == "optimal":  # optimal without a solution: should not happen
        status = "solver_error"
    return answer(None, None, status, min(bound, 0.0), model.n_binaries)


def _fits(net: Network, z: np.ndarray, spec: _Polytope) -> bool:
    """Whether a float64 forward pass puts G(z) in the polytope, row by row within slack."""
    y = net.forward(z)
    return bool(np.all(spec.C @ y - spec.d <= spec.slack(y)))


def _polytope_starts(net: Network, out_lo: np.ndarray, out_hi: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray) -> list[np.ndarray]:
    """The box centre, and the layer-wise LP's answer for the centre of the output bounds."""
    if np.all(np.isfinite(out_lo)) and np.all(np.isfinite(out_hi)):
        return _default_starts(net, 0.5 * (out_lo + out_hi), lo, hi, "linf")
    return [0.5 * (lo + hi)]


def closest(net: Network, x: object, norm: str = "linf", *, box: object = None,
            time_limit: float | None = None, start: object = None, rel_gap: float = 1e-6,
            abs_gap: float = 1e-8, tighten: bool = True) -> ClosestResult:
    """The global minimum of ||G(z) - x|| (l_inf or l_1) over the box, for small networks.

    Parameters
    ----------
    net, x, box, time_limit, tighten :
        As in `preimage`.
    norm : {'linf', 'l1'}
    start : array (k,), optional
        An extra starting point (for example gradient descent's answer), clipped into the box.
        The box centre, the layer-wise LP's answer (`invert(net, x, norm)`) and `start` are
        improved by a local search (sequential LP with a trust region); the best is HiGHS's
        first incumbent, and its distance r caps the search (every output within r of x),
        which shrinks the big-M ranges.
    rel_gap, abs_gap : float
        HiGHS stops when the incumbent is within these of its lower bound.

    Returns
    -------
    ClosestResult
        The distance is recomputed by a forward pass; the answer is never worse than `start`.
    """
    started = time.perf_counter()
    net = _check_net(net)
    x = _check_single(x, net)
    norm = check_choice(norm, _NORMS, "norm")
    limit = _check_time_limit(time_limit)
    lo, hi, _ = _check_box(box, net.input_dim)
    rel_gap = check_positive(rel_gap, "rel_gap", allow_zero=True)
    abs_gap = check_positive(abs_gap, "abs_gap", allow_zero=True)
    deadline = started + limit
    # Incumbent: local search from the box centre, the layer-wise LP's answer and `start`.
    starts = _default_starts(net, x, lo, hi, norm)
    if start is not None:
        starts.append(np.clip(check_batch(start, net.input_dim, "start")[0][0], lo, hi))
    starts += [_local_search(net, z, lo, hi, x, norm, deadline) for z in starts]
    z0 = min(starts, key=lambda z: _distance(net, z, x, norm))
    # The optimum is no farther than z0: a cap that shrinks the last layer's big-M ranges.
    radius = _distance(net, z0, x, norm)
    radius = radius * (1.0 + 1e-9) + 1e-12

    t_lo, t_hi = lo, hi
    if tighten:
        t_lo, t_hi, _ = _tighten_box(net, lo, hi, x, norm, radius, deadline)
        # (An infeasible relaxation cannot happen: z0 is feasible. Rounding aside, keep z0 in.)
        t_lo, t_hi = np.minimum(t_lo, z0), np.maximum(t_hi, z0)
    model, empty = _build(net, t_lo, t_hi, x, norm, radius)
    if empty:  # only by rounding, as z0 lies within the radius: drop the cap
        model, _ = _build(net, t_lo, t_hi, x, norm)
    status, values, bound = _solve(model, max(deadline - time.perf_counter(), 0.0),
                                   first_feasible=False, rel_gap=rel_gap, abs_gap=abs_gap,
                                   start=_assignment(model, net, z0, x, norm))
    candidates = [z0]
    if values is not None:
        z_milp = np.clip(values[: net.input_dim], lo, hi)
        candidates.append(z_milp)
        z_pol = _polish(net, z_milp, _binaries(model, values), lo, hi, x, norm)
        if z_pol is not None:
            candidates.append(z_pol)
    distances = [_distance(net, z, x, norm) for z in candidates]
    best = int(np.argmin(distances))
    if status in ("optimal", "time_limit"):
        _warn_boundary(candidates[best], lo, hi, "the optimum")
    return ClosestResult(candidates[best], distances[best], min(bound, distances[best]),
                         status, time.perf_counter() - started, model.n_binaries)


# --------------------------------------------------------------------------- 3-SAT
def _check_clauses(clauses: object, n_vars: object) -> tuple[list[list[int]], int]:
    if isinstance(n_vars, bool) or not isinstance(n_vars, numbers.Integral) or n_vars < 1:
        raise InputError(f"n_vars must be an int >= 1; got {n_vars!r}")
    n_vars = int(n_vars)
    checked = []
    try:
        items = list(clauses)  # type: ignore[call-overload]
    except TypeError:
        raise InputError(f"clauses must be a list of clauses (lists of signed ints); got "
                         f"{type(clauses).__name__}") from None
    for j, clause in enumerate(items):
        try:
            literals = list(clause)
        except TypeError:
            raise InputError(f"clauses[{j}] must be a list of signed ints; got "
                             f"{clause!r}") from None
        for lit in literals:
            if (isinstance(lit, bool) or not isinstance(lit, numbers.Integral) or lit == 0
                    or abs(lit) > n_vars):
                raise InputError(f"clauses[{j}] holds {lit!r}; literals must be nonzero ints "
                                 f"between -{n_vars} and {n_vars} (DIMACS style)")
        checked.append([int(lit) for lit in literals])
    return checked, n_vars


def sat_network(clauses: Sequence[Sequence[int]], n_vars: int) -> tuple[Network, np.ndarray]:
    """A four-layer ReLU network G: R^n -> R^2 and a target x, pre-image <=> CNF satisfiable.

    `clauses` are DIMACS-style lists of signed ints (3 for 3-SAT; any length works).

    Construction (n = n_vars, m clauses; a clause's literal row a_j has a_ji = +1 for x_i,
    -1 for not x_i, after removing repeated literals; c_j = number of its literals):

    - layer 1 (relu, 4n + m units), z in R^n:
        box gadget      ReLU(z_i - 1), ReLU(-z_i - 1)          (zero iff |z_i| <= 1)
        abs gadget      ReLU(z_i), ReLU(-z_i)                  (sums to |z_i|)
        clause gadget   ReLU(-a_j.z - (c_j - 1))               (ReLU(-a_j.z - 2) for 3-SAT);
                        a tautology becomes ReLU(-1) = 0, an empty clause ReLU(1) = 1;
    - layer 2 (relu, 2 units): o_1 = ReLU(sum of box and clause gadgets),
                               o_2 = ReLU(sum of abs gadgets);
    - layers 3 and 4 (relu, 2 x 2 identity weights): ReLU of a non-negative vector is itself;
    - target x = (0, n).

    Proof sketch. (<=) For a satisfying assignment put z_i = +1 (true) or -1 (false). The box
    gadgets vanish, sum |z_i| = n, and every clause has a literal with a_ji z_i = +1, so
    -a_j.z <= c_j - 2 and its gadget vanishes: G(z) = (0, n). (=>) If G(z) = (0, n), every term
    of o_1 is zero (they are all non-negative), so |z_i| <= 1 and each clause gadget is zero;
    then sum |z_i| = n forces |z_i| = 1, z is a sign vector, and a clause that z falsified
    would have -a_j.z = c_j and gadget value 1. So sign(z) satisfies every clause. Each step is
    polynomial, which makes deciding "does x have a pre-image" NP-hard for four-layer ReLU nets.

    Approximately: if ||G(z) - x||_inf <= tol with tol < 1 / (c_max n + 1), then
    |z_i| >= 1 - n tol > 0 and `decode_assignment(z)` still satisfies the formula (a falsified
    clause would give o_1 >= 1 - c_max n tol > tol). Every pre-image has |z_i| = 1, so any box
    containing [-1, 1]^n searched by `preimage` loses nothing.
    """
    clauses, n = _check_clauses(clauses, n_vars)
    m = len(clauses)
    eye = np.eye(n)
    clause_rows = np.zeros((m, n))
    clause_bias = np.zeros(m)
    for j, clause in enumerate(clauses):
        literals = set(clause)
        if any(-lit in literals for lit in literals):
            clause_bias[j] = -1.0  # a tautology: always satisfied, ReLU(-1) = 0
            continue
        for lit in literals:
            clause_rows[j, abs(lit) - 1] = 1.0 if lit > 0 else -1.0
        clause_bias[j] = -(len(literals) - 1.0)  # an empty clause: ReLU(1) = 1
    w1 = np.vstack([eye, -eye, eye, -eye, -clause_rows])
    b1 = np.concatenate([-np.ones(2 * n), np.zeros(2 * n), clause_bias])
    w2 = np.zeros((2, 4 * n + m))
    w2[0, : 2 * n] = 1.0
    w2[0, 4 * n:] = 1.0
    w2[1, 2 * n: 4 * n] = 1.0
    layers = [Layer(w1, b1, "relu"), Layer(w2, None, "relu"), Layer(np.eye(2), None, "relu"),
              Layer(np.eye(2), None, "relu")]
    return Network(layers), np.array([0.0, float(n)])


def decode_assignment(z: object) -> list[bool]:
    """The truth assignment read off a pre-image of `sat_network`: variable i is z_i > 0."""
    array = as_float_array(z, "z")
    if array.ndim != 1:
        raise InputError(f"z must be a vector (n_vars,); got shape {array.shape}")
    return [bool(v > 0) for v in array]


def satisfies(clauses: Sequence[Sequence[int]], assignment: Sequence[bool]) -> bool:
    """Whether the truth assignment (assignment[i] for variable i + 1) satisfies every clause."""
    return all(any(assignment[abs(lit) - 1] == (lit > 0) for lit in clause) for clause in clauses)


def random_3sat(n_vars: int, n_clauses: int,
                seed: int | np.random.Generator | None = None) -> list[list[int]]:
    """A uniform random 3-SAT formula: each clause has 3 distinct variables and random signs.

    DIMACS style: variable i is the literal i (true) or -i (negated), 1 <= i <= n_vars.
    The satisfiability threshold of this model is near n_clauses / n_vars = 4.26.
    """
    if isinstance(n_vars, bool) or not isinstance(n_vars, numbers.Integral) or n_vars < 3:
        raise InputError(f"n_vars must be an int >= 3 (three distinct variables per clause); "
                         f"got {n_vars!r}")
    if isinstance(n_clauses, bool) or not isinstance(n_clauses, numbers.Integral) \
            or n_clauses < 0:
        raise InputError(f"n_clauses must be an int >= 0; got {n_clauses!r}")
    rng = make_rng(seed)
    clauses = []
    for _ in range(int(n_clauses)):
        variables = rng.choice(int(n_vars), size=3, replace=False) + 1
        signs = rng.choice(np.array([-1, 1]), size=3)
        clauses.append([int(v * s) for v, s in zip(variables, signs, strict=True)])
    return clauses
