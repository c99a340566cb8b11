"""Inversion on the activation pattern: the whole network solved at once, region by region.

On an activation region (the on/off state of every ReLU and LeakyReLU unit fixed, the
"pattern" P) the network is affine in z, G(z) = J_P z + c_P, and the region is a polyhedron
{z : S_P z <= s_P}, one face per piecewise-linear unit (its pre-activation's sign). With a
linear measurement A (rows m) the objective on the region,

    l2:    mean_j (A G(z) - y)_j^2 + prior ||z||^2     (gradient descent's loss, `_gradient`)
    linf:  max_j |A G(z) - y|_j     + prior ||z||^2
    l1:    sum_j |A G(z) - y|_j     + prior ||z||^2,

is a convex QP (an LP plus the prior) in the k latent unknowns (and the slacks), whatever the
widths. The objective over all of R^k is continuous and piecewise convex. `_local_search`
descends on it: solve on the region of the start, and wherever the optimum lies on a face
whose multiplier says that crossing it lowers the objective, flip those units (the optimum
stays feasible in the new region: on a face u_j = 0 both states give the same output) and
solve again, accepting only a strict decrease. It stops, certified, when the region's KKT
conditions hold and no single flip across any binding face lowers the objective: a local
optimum of the whole problem by the definition of the issue this implements (optimal on its
region, no improving flip across a binding face).

Starts: the layer-wise l_inf answer where the caller has it, and seeded N(0, I) draws (the
prior of the generators this package ships); then, if asked for, hops: seeded draws around
each sample's best Gauss-Newton answer from its Laplace approximation (`_hop_points`),
descended in turn, which find deeper local minima next to it that more random starts rarely
reach (HOPS: they lower the objective, not always the error). The best local optimum over
all of them is returned with its region's identifiability certificate: sigma_min(A J_P)
(full column rank means z is the unique point of its region with that output), and a bound
on ||z - z*||_inf valid where z* lies in the same region: ||A J_P (z - z*)||_inf <= eps +
noise, so ||z - z*||_inf <= ||(A J_P)^+||_inf (eps + noise).

Statuses (`results.Status`): OPTIMAL only where the objective is provably the global
minimum (it is zero: the data are fitted to round-off, prior 0) and A J_P has full column
rank; LOCAL_OPTIMUM for a certified local optimum; NOT_IDENTIFIABLE where A J_P is
rank-deficient (the region does not determine z); MAX_STEPS where the region budget ran out
first; NUMERICAL_ERROR where the region solver failed.

The region problems go to DAQP (a dense dual active-set QP solver: k unknowns, a few
thousand rows), which returns the multipliers the flips are chosen by; the answer is
checked (feasibility, KKT residual) here before anything reads it.
A smooth, strictly increasing output activation (tanh, sigmoid, elu; the hidden layers stay
piecewise linear, `check_pattern_network`) makes G(z) = act(J_P z + c_P) on a region: the
l2 objective (the only loss taken there) is no longer a QP. Gauss-Newton linearises act;
the region solve (`_solve_smooth_region`) is a sequence of QPs of the linearised residual
with the region's faces, each step backtracked on the true objective, certified by the
nonlinear KKT conditions (first order with NNLS multipliers, second order on the faces'
null space). OPTIMAL keeps its meaning: a zero residual (prior 0) on a region of full rank
is the global minimum and the only point of its region with that output (act is strictly
increasing, so G(z) = x is J_P z + c_P = act^-1(x) there); no error bound is claimed
through act (error_bound inf).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls
from tqdm.auto import tqdm

from layerinv._blas import single_threaded_blas
from layerinv._layer_inversion import EXCURSION_FACTOR, LayerOptions
from layerinv._validation import check_batch, check_choice, check_positive, sample_rngs
from layerinv.activations import Activation, Kink
from layerinv.convolution import Conv2dOperator
from layerinv.errors import InputError
from layerinv.network import Network
from layerinv.operators import DenseOperator
from layerinv.results import Inversion, PatternReport, Status

LOSSES = ("l2", "linf", "l1")

FACE_TOL = 1e-9
"""A face binds where its slack is within FACE_TOL (1 + |s|) of zero."""

KKT_TOL = 1e-7
"""A region optimum is certified where the KKT residuals are within KKT_TOL of the terms'
size (stationarity, primal feasibility, complementarity)."""

IMPROVE_TOL = 1e-10
"""A flip is accepted only if it lowers the objective by more than IMPROVE_TOL (1 + |f|)."""

RANK_TOL = 1e-9
"""A J_P whose sigma_min is below RANK_TOL times its largest is rank-deficient."""

_DAQP_LP = {"primal_tol": 1e-10, "eps_prox": -1e-4, "eta_prox": 1e-12}
"""DAQP settings where H is singular (the slack columns of linf and l1), as `_daqp.py`'s."""

_DAQP_QP = {"primal_tol": 1e-10, "eta_prox": 1e-12}
"""DAQP settings for l2. A rank-deficient region makes H singular; with DAQP's automatic
proximal stop, one region of a (3, 15, 25) net stopped after one proximal step, its
stationarity residual 1e-6 |z| (the KKT check refused it); eta_prox 1e-12 iterates to the
fixed point (residual 1e-18, 4 steps)."""


# --------------------------------------------------------------------------------- regions
@dataclass(frozen=True)
class Region:
    """One activation region: the pattern, the affine map on it and its faces."""

    pattern: tuple[np.ndarray, ...]
    """Per layer, which units are on (u >= 0); all True for a layer without a kink."""
    jacobian: np.ndarray
    """J_P (n_out, k): G(z) = J_P z + c_P on the region."""
    offset: np.ndarray
    """c_P (n_out,)."""
    faces: np.ndarray
    """S_P (n_faces, k): the region is {z : S_P z <= s_P}."""
    face_bounds: np.ndarray
    face_units: np.ndarray
    """(n_faces, 2): the (layer, unit) each face belongs to."""
    output: Activation | None = None
    """A smooth, strictly increasing output activation (tanh, sigmoid, elu), or None. Where
    set, J_P and c_P are those of the last layer's pre-activation u and G(z) = act(J_P z +
    c_P) on the region: the hidden layers' kinks alone make its faces."""

    def forward(self, z: np.ndarray) -> np.ndarray:
        """G(z) for z in the region (a point or rows of points)."""
        u = z @ self.jacobian.T + self.offset
        return u if self.output is None else self.output.forward(u)


def check_pattern_network(net: Network, loss: str = "l2") -> None:
    """The pattern method needs every hidden activation piecewise linear (a `kink`); the
    output layer's may also be smooth and strictly increasing (tanh, sigmoid, elu: the
    activations without a kink), with the l2 loss."""
    last = len(net.layers) - 1
    for index, layer in enumerate(net.layers):
        if layer.activation.kink is not None:
            continue
        if index < last:
            raise InputError(f"method='pattern' needs piecewise-linear hidden activations "
                             f"(relu, leaky_relu, identity); hidden layer {index} has "
                             f"{layer.activation!r} (a smooth activation is taken on the "
                             f"output layer only)")
        if loss != "l2":
            raise InputError(f"loss={loss!r} needs a piecewise-linear output activation; the "
                             f"output layer has {layer.activation!r}: use loss='l2'")


def _smooth_output(net: Network) -> Activation | None:
    """The output layer's activation where it has no kink (smooth), else None."""
    activation = net.layers[-1].activation
    return activation if activation.kink is None else None


def _slopes(kink: Kink, on: np.ndarray | bool) -> np.ndarray:
    """A piecewise-linear layer's slopes on a pattern: `above` where on, `below` where off."""
    return np.where(on, kink.above, kink.below)


def pattern_at(net: Network, z: np.ndarray) -> tuple[np.ndarray, ...]:
    """The activation pattern of z: per layer, which pre-activations are >= 0."""
    pattern, x = [], z[None, :]
    for layer in net.layers:
        u = layer.preactivation(x)
        # A layer without a kink has no faces: all True, as for a linear one.
        pattern.append(u[0] >= 0 if layer.activation.kink is not None
                       else np.ones(u.shape[1], dtype=bool))
        x = layer.activation.forward(u)
    return tuple(pattern)


def region_of(net: Network, pattern: Sequence[np.ndarray]) -> Region:
    """The affine map and the faces of the region with this pattern.

    Forward through the layers with the affine form a(z) = M z + v of each layer's input:
    u = (W M) z + (W v + b); a unit on the kink's upper branch contributes `above` u, one on
    the lower `below` u. Its face keeps the sign of u: -u <= 0 where on, u <= 0 where off.
    A smooth output layer keeps u's affine form (`Region.output`).
    """
    k = net.input_dim
    matrix, vector = np.eye(k), np.zeros(k)
    faces, bounds, units = [], [], []
    for index, (layer, on) in enumerate(zip(net.layers, pattern, strict=True)):
        jac = layer.operator.matmat(matrix)
        pre = layer.preactivation(vector[None, :])[0]
        kink = layer.activation.kink
        if kink is None:  # the smooth output layer (check_pattern_network): u's form
            return _region(pattern, jac, pre, faces, bounds, units, k, layer.activation)
        if not kink.linear:
            sign = np.where(on, -1.0, 1.0)
            faces.append(sign[:, None] * jac)
            bounds.append(-sign * pre)
            units.append(np.column_stack([np.full(layer.n_out, index),
                                          np.arange(layer.n_out)]))
        slope = _slopes(kink, on)
        matrix, vector = slope[:, None] * jac, slope * pre
    return _region(pattern, matrix, vector, faces, bounds, units, k, None)


def flipped_region(net: Network, base: Region, pattern: tuple[np.ndarray, ...]) -> Region:
    """`region_of(net, pattern)` built from a nearby region `base` (a few units flipped, as
    the local search's trials), where `_Tangents.takes` the network; else `region_of`.

    Layer l's pre-activation form [P_l | p_l] (u = P_l z + p_l) is read back from base's
    faces (each row times its sign, exactly) and changes by W_l[:, c] (the change of the form
    of layer l-1's output)[c] over the units c whose output form changed: the convolution's
    `columns_product`, as `_Tangents`. Equal to `region_of`'s to round-off (the sums run in
    another order)."""
    if not _Tangents.takes(net, 0):
        return region_of(net, pattern)
    last = len(net.layers) - 1
    smooth = net.layers[last].activation.kink is None
    if any(layer.activation.kink is None or layer.activation.kink.linear
           for layer in net.layers[:last]) or (not smooth and
                                               net.layers[last].activation.kink.linear):
        return region_of(net, pattern)
    forms, start = [], 0
    for index, layer in enumerate(net.layers):
        if index == last and smooth:
            forms.append(np.column_stack([base.jacobian, base.offset]))
            break
        sign = np.where(base.pattern[index], -1.0, 1.0)
        rows = slice(start, start + layer.n_out)
        forms.append(sign[:, None] * np.column_stack([base.faces[rows],
                                                      -base.face_bounds[rows]]))
        start += layer.n_out
    def output_change(index: int, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kink = net.layers[index].activation.kink
        return _changed_rows(new_forms[index], forms[index], moved,
                             _slopes(kink, pattern[index]), _slopes(kink, base.pattern[index]))

    new_forms = [forms[0]]
    changed, delta = output_change(0, np.zeros(net.layers[0].n_out, dtype=bool))
    for index in range(1, last + 1):
        step = _form_step(net.layers[index].operator, changed, delta, forms[index].shape[1])
        new_forms.append(forms[index] + step)
        if index < last:
            changed, delta = output_change(index, np.any(step != 0.0, axis=1))
    faces, bounds, units = [], [], []
    for index, (layer, form) in enumerate(zip(net.layers, new_forms, strict=True)):
        if index == last and smooth:
            return _region(pattern, form[:, :-1], form[:, -1], faces, bounds, units,
                           net.input_dim, layer.activation)
        sign = np.where(pattern[index], -1.0, 1.0)
        faces.append(sign[:, None] * form[:, :-1])
        bounds.append(-sign * form[:, -1])
        units.append(np.column_stack([np.full(layer.n_out, index), np.arange(layer.n_out)]))
    kink = net.layers[last].activation.kink
    slope = _slopes(kink, pattern[last])
    form = slope[:, None] * new_forms[last]
    return _region(pattern, form[:, :-1], form[:, -1], faces, bounds, units, net.input_dim,
                   None)


def _form_step(operator, changed: np.ndarray, delta: np.ndarray, width: int) -> np.ndarray:
    """The change W[:, changed] delta of a layer's pre-activation form (n_out, width) when the
    rows `changed` of its input's form changed by `delta`: the convolution's
    `columns_product`, whose cost is the nonzeros of those columns."""
    if not len(changed):
        return np.zeros((operator.n_out, width))
    return operator.columns_product(changed, delta)


def _changed_rows(new: np.ndarray, old: np.ndarray, moved: np.ndarray, slope: np.ndarray,
                  old_slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, change) of a layer's output form slope * form, from its pre-activation form
    (old -> new, `moved` marking the rows that differ) and its slopes (old_slope -> slope).

    A row changes where its slope changed, or where its form moved and it is live on either
    side (a dead unit's row stays zero): the rows that `_form_step` carries into the next
    layer. Shared by `flipped_region` and `_Tangents`, whose [P | p] and P forms it takes
    alike."""
    changed = np.flatnonzero((moved & ((slope != 0.0) | (old_slope != 0.0)))
                             | (slope != old_slope))
    return changed, slope[changed, None] * new[changed] - old_slope[changed, None] * old[changed]


def _region(pattern, matrix, vector, faces, bounds, units, k, output) -> Region:
    if faces:
        return Region(tuple(pattern), matrix, vector, np.vstack(faces),
                      np.concatenate(bounds), np.vstack(units), output)
    return Region(tuple(pattern), matrix, vector, np.zeros((0, k)), np.zeros(0),
                  np.zeros((0, 2), dtype=int), output)


def flipped(pattern: tuple[np.ndarray, ...], units: np.ndarray) -> tuple[np.ndarray, ...]:
    """The pattern with the given (layer, unit) pairs switched."""
    new = [p.copy() for p in pattern]
    for layer, unit in units:
        new[layer][unit] = ~new[layer][unit]
    return tuple(new)


def _key(pattern: tuple[np.ndarray, ...]) -> bytes:
    return b"".join(np.packbits(p).tobytes() for p in pattern)


# ------------------------------------------------------------------------- one region's fit
@dataclass
class RegionFit:
    """The best z on one region, its objective and the faces' multipliers."""

    z: np.ndarray
    objective: float
    face_multipliers: np.ndarray
    """>= 0; positive where the face blocks a decrease (crossing it lowers the objective)."""
    certified: bool
    """The KKT conditions hold to KKT_TOL: z is optimal on the region."""
    iterations: int
    message: str = ""
    stationary: bool = True
    """The first-order KKT conditions hold (smooth output: `certified` also needs the
    second-order check, which a rank-deficient region fails)."""


@dataclass(frozen=True)
class Objective:
    """The measured problem: rows A (m, n_out) or None (A = I), target y (m,), the loss.

    The batched Gauss-Newton phase also takes a target of one row per point (P, m)."""

    target: np.ndarray
    loss: str
    prior: float
    rows: np.ndarray | None = None
    ambiguous: np.ndarray | None = None
    """linf and l1, a ReLU output observed directly: rows whose observation lies within the
    ambiguity threshold of the kink (y_j <= threshold). Where such a unit is off on the
    region its residual is -y_j, the observation's own noise, which no z changes; counting it
    made the l_inf objective flat (measured: on noisy 110 x 250 x 600 nets the largest such
    noise exceeded every active row's fit, so any z whose active rows fit below it was
    optimal, and the answer stayed where it started). So they do not count there (`counted`);
    an off unit observed clearly above the threshold still counts its full residual y_j."""

    def measured(self, region: Region, z: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(A J_P, A c_P - y): the residual A G(z) - y = first z + second on the region.

        With a smooth output (`Region.output`) the residual is not affine: this is its
        linearisation at z (required), (A D J_P, A act(u) - y - A D J_P z), D = act'(u), u =
        J_P z + c_P; exact at z itself, and D > 0 keeps J_P's rank."""
        jac, offset = region.jacobian, region.offset
        if region.output is not None:
            if z is None:
                raise ValueError("a smooth output region is linearised at a point z")
            u = jac @ z + offset
            out = region.output.forward(u)
            slope = region.output.derivative(u, out)
            jac = slope[:, None] * jac
            offset = out - jac @ z
        if self.rows is None:
            return jac, offset - self.target
        return self.rows @ jac, self.rows @ offset - self.target

    def counted(self, region: Region) -> np.ndarray | None:
        """The rows the objective counts on this region (None: all; see `ambiguous`)."""
        if self.ambiguous is None or self.loss == "l2":
            return None
        return ~(self.ambiguous & ~region.pattern[-1])

    def at(self, index: np.ndarray) -> Objective:
        """The objective of the points `index` where the target holds one row per point."""
        if self.target.ndim == 1:
            return self
        return dataclasses.replace(self, target=self.target[index])

    def value(self, residual: np.ndarray, z: np.ndarray) -> np.ndarray:
        """The objective of residual(s) A G(z) - y and latent(s) z, along the last axis."""
        prior = self.prior * np.sum(z * z, axis=-1)
        if self.loss == "l2":
            return np.mean(residual**2, axis=-1) + prior
        if self.loss == "linf":
            return np.max(np.abs(residual), axis=-1, initial=0.0) + prior
        return np.abs(residual).sum(axis=-1) + prior


def solve_region(region: Region, objective: Objective, start: np.ndarray | None = None
                 ) -> RegionFit:
    """The objective minimised over the region (DAQP), checked by its KKT conditions."""
    import daqp

    if region.output is not None:
        if start is None:
            raise ValueError("a smooth output region is solved from a point of it")
        return _solve_smooth_region(region, objective, start)
    jac, res0 = objective.measured(region)
    counted = objective.counted(region)
    if counted is not None:
        jac, res0 = jac[counted], res0[counted]
    k = jac.shape[1]
    hessian, cost, rows, upper, lower, n_x = _qp_form(jac, res0, objective, region)
    x0 = None if start is None else _lifted_start(start, jac, res0, objective)
    settings = _DAQP_QP if objective.loss == "l2" else _DAQP_LP
    x, _, flag, info = daqp.solve(hessian, cost, rows, upper, lower,
                                  np.zeros(len(upper), dtype=np.int32), primal_start=x0,
                                  iter_limit=max(10_000, 10 * len(upper)), **settings)
    x, lam = np.asarray(x, dtype=np.float64), np.asarray(info["lam"], dtype=np.float64)
    z = x[:k]
    n_faces = len(region.face_bounds)
    face_lam = np.maximum(lam[len(lam) - n_faces:], 0.0) if n_faces else np.zeros(0)
    value = float(objective.value(jac @ z + res0, z))
    certified = flag == 1 and _kkt_holds(hessian, cost, rows, upper, lower, x, lam, n_x)
    message = "" if flag == 1 else f"daqp exit flag {flag}"
    if flag == 1 and not certified:
        message = "daqp's answer fails the KKT check"
    return RegionFit(z, value, face_lam, certified, int(info["iterations"]), message)


SMOOTH_STEPS = 100
"""Most linearised QPs (sequential quadratic programming) per smooth-output region solve."""


def _solve_smooth_region(region: Region, objective: Objective, start: np.ndarray
                         ) -> RegionFit:
    """The l2 objective over a region whose output is act(J_P z + c_P), act smooth.

    Not a QP: each step solves the QP of the residual linearised at z (`Objective.measured`,
    Gauss-Newton on the region, its faces kept), then backtracks along that step on the true
    objective (the region is convex, so the segment stays in it); only decreases are taken.
    Certified (`_smooth_kkt`) where the first-order KKT conditions of the nonlinear problem
    hold at z, with multipliers found independently of DAQP (NNLS), and the exact Hessian is
    positive definite on the null space of the faces with positive multipliers: a strict
    local minimum on the region (second-order sufficient condition), not a global one.
    """
    import daqp

    z = np.array(start, dtype=np.float64, copy=True)
    value = _smooth_value(region, objective, z)
    iterations, message = 0, ""
    for _ in range(SMOOTH_STEPS):
        jac, res0 = objective.measured(region, z)
        hessian, cost, rows, upper, lower, _ = _qp_form(jac, res0, objective, region)
        x, _, flag, info = daqp.solve(hessian, cost, rows, upper, lower,
                                      np.zeros(len(upper), dtype=np.int32), primal_start=z,
                                      iter_limit=max(10_000, 10 * len(upper)), **_DAQP_QP)
        iterations += int(info["iterations"])
        if flag != 1:
            message = f"daqp exit flag {flag}"
            break
        step = np.asarray(x, dtype=np.float64) - z
        if np.linalg.norm(step) <= 1e-13 * (1.0 + np.linalg.norm(z)):
            break
        alpha, moved = 1.0, False
        while alpha > 1e-10:
            trial = z + alpha * step
            trial_value = _smooth_value(region, objective, trial)
            if trial_value < value:
                z, value, moved = trial, trial_value, True
                break
            alpha *= 0.5
        if not moved:
            break  # no decrease along the model's step: stationary to round-off
    stationary, second_order, multipliers = _smooth_kkt(region, objective, z)
    stationary = stationary and not message  # not after a failed QP
    if not message and not stationary:
        message = "the nonlinear first-order KKT check failed"
    elif not message and not second_order:
        message = ("a KKT point, but the Hessian is not positive definite on the faces' "
                   "null space (second-order check)")
    return RegionFit(z, value, multipliers, stationary and second_order, iterations, message,
                     stationary)


def _smooth_value(region: Region, objective: Objective, z: np.ndarray) -> float:
    out = region.forward(z)
    residual = (out if objective.rows is None else objective.rows @ out) - objective.target
    return float(objective.value(residual, z))


def _smooth_kkt(region: Region, objective: Objective, z: np.ndarray
                ) -> tuple[bool, bool, np.ndarray]:
    """(first order holds, second order holds, face multipliers) at z for the smooth-output
    region problem.

    First order: grad f(z) + S_B' lam = 0 with lam >= 0 on the binding faces B (NNLS) and z
    in the region, to KKT_TOL of the gradient's terms. Second order: the Hessian of f,
    (2/m) [J' D A'A D J + J' diag(act''(u) A'r) J] + 2 prior I (act'' by central differences
    of act'), positive definite on the null space of the faces with lam > 0. A zero
    residual with prior 0 needs no second order: the objective is at its global minimum.
    """
    from scipy.optimize import nnls

    activation = region.output
    assert activation is not None
    jac_u, u = region.jacobian, region.jacobian @ z + region.offset
    out = activation.forward(u)
    slope = activation.derivative(u, out)
    step = 1e-5 * (1.0 + np.abs(u))
    curvature = (activation.derivative(u + step) - activation.derivative(u - step)) / (2 * step)
    rows = objective.rows
    residual = (out if rows is None else rows @ out) - objective.target
    back = residual if rows is None else rows.T @ residual  # A'r, on the output units
    m, k = len(residual), len(z)
    jac = slope[:, None] * jac_u
    measured = jac if rows is None else rows @ jac
    gradient = 2.0 * measured.T @ residual / m + 2.0 * objective.prior * z
    multipliers = np.zeros(len(region.face_bounds))
    slack = region.face_bounds - region.faces @ z
    if np.any(slack < -FACE_TOL * (1 + np.abs(region.face_bounds))):
        return False, False, multipliers  # outside the region
    binding = _binding_faces(region, z)
    size = (1.0 + np.max(np.abs(2.0 * measured.T * residual / m), initial=0.0)
            + 2.0 * objective.prior * np.max(np.abs(z), initial=0.0))
    if len(binding):
        lam, _ = nnls(region.faces[binding].T, -gradient)
        multipliers[binding] = lam
        stationarity = gradient + region.faces[binding].T @ lam
    else:
        lam, stationarity = np.zeros(0), gradient
    if np.max(np.abs(stationarity), initial=0.0) > KKT_TOL * size:
        return False, False, multipliers
    scale_y = max(1.0, float(np.max(np.abs(objective.target), initial=0.0)))
    if objective.prior == 0 and np.max(np.abs(residual), initial=0.0) <= 1e-12 * scale_y:
        return True, True, multipliers
    hessian = (2.0 / m) * (measured.T @ measured + jac_u.T @ ((curvature * back)[:, None]
                                                              * jac_u))
    hessian += 2.0 * objective.prior * np.eye(k)
    strong = region.faces[binding[lam > KKT_TOL * (1.0 + np.max(lam, initial=0.0))]]
    basis = _null_space(strong, k)
    if basis.shape[1] == 0:
        return True, True, multipliers  # a vertex held by its faces: first order suffices
    reduced = np.linalg.eigvalsh(basis.T @ hessian @ basis)
    scale = float(np.max(np.abs(np.linalg.eigvalsh(hessian)), initial=0.0))
    return True, bool(reduced[0] > RANK_TOL * max(scale, 1e-300)), multipliers


def _null_space(rows: np.ndarray, k: int) -> np.ndarray:
    """An orthonormal basis (k, d) of {d : rows d = 0} (all of R^k where there are none)."""
    if not len(rows):
        return np.eye(k)
    from scipy.linalg import null_space

    return null_space(rows)


def _qp_form(jac: np.ndarray, res0: np.ndarray, objective: Objective, region: Region):
    """DAQP's form: min 0.5 x'Hx + c'x, lower <= [bounds on x; rows x] <= upper.

    x = z (l2), (z, t) (linf), (z, t_1..t_m) (l1). The faces come last among the rows.
    """
    m, k = jac.shape
    prior = objective.prior
    faces = region.faces
    n_faces = len(region.face_bounds)
    if objective.loss == "l2":
        hessian = 2.0 * (jac.T @ jac / m + prior * np.eye(k))
        cost = 2.0 * jac.T @ res0 / m
        return (hessian, cost, np.ascontiguousarray(faces), region.face_bounds.copy(),
                np.full(n_faces, -np.inf), 0)
    n_t = 1 if objective.loss == "linf" else m
    n_x = k + n_t
    hessian = np.zeros((n_x, n_x))
    hessian[:k, :k] = 2.0 * prior * np.eye(k)
    cost = np.concatenate([np.zeros(k), np.ones(n_t)])
    slack = np.ones((m, 1)) if n_t == 1 else np.eye(m)
    # |J z + r0| <= t row by row: J z - t <= -r0 and J z + t >= -r0.
    rows = np.vstack([np.hstack([jac, -slack]), np.hstack([jac, slack]),
                      np.hstack([faces, np.zeros((n_faces, n_t))])])
    upper = np.concatenate([np.full(n_x, np.inf), -res0, np.full(m, np.inf),
                            region.face_bounds])
    lower = np.concatenate([np.full(k, -np.inf), np.zeros(n_t), np.full(m, -np.inf), -res0,
                            np.full(n_faces, -np.inf)])
    return hessian, cost, np.ascontiguousarray(rows), upper, lower, n_x


def _lifted_start(z: np.ndarray, jac: np.ndarray, res0: np.ndarray,
                  objective: Objective) -> np.ndarray:
    """The start z with the slacks it needs (linf, l1)."""
    if objective.loss == "l2":
        return z
    residual = np.abs(jac @ z + res0)
    t = np.array([residual.max(initial=0.0)]) if objective.loss == "linf" else residual
    return np.concatenate([z, t])


def _kkt_holds(hessian: np.ndarray, cost: np.ndarray, rows: np.ndarray, upper: np.ndarray,
               lower: np.ndarray, x: np.ndarray, lam: np.ndarray, n_x: int) -> bool:
    """Whether (x, lam) satisfy the KKT conditions of the QP to KKT_TOL (relative).

    DAQP's convention: H x + c + [I_bounds; A]' lam = 0, lam > 0 at an upper end, < 0 at a
    lower; the first n_x ends are simple bounds on x. For a convex QP these prove x optimal.
    """
    values = np.concatenate([x[:n_x], rows @ x])
    size = 1.0 + np.abs(values) + np.where(np.isfinite(upper), np.abs(upper), 0.0)
    if np.max((np.maximum(values - upper, lower - values)) / size, initial=0.0) > KKT_TOL:
        return False  # infeasible
    with np.errstate(invalid="ignore"):
        # A multiplier at a row end the point does not reach breaks complementarity.
        gap = np.where(lam > 0, upper - values, np.where(lam < 0, values - lower, 0.0)) / size
    scale = 1.0 + float(np.max(np.abs(lam), initial=0.0))
    if np.max(np.abs(lam) * gap, initial=0.0) > KKT_TOL * scale:
        return False
    stationarity = hessian @ x + cost + rows.T @ lam[n_x:]
    stationarity[:n_x] += lam[:n_x]
    size = (1.0 + float(np.max(np.abs(cost), initial=0.0))
            + float(np.max(np.abs(hessian @ x), initial=0.0)))
    return bool(np.max(np.abs(stationarity), initial=0.0) <= KKT_TOL * size * scale)


# ---------------------------------------------------------------------------- local search
@dataclass
class PatternSolution:
    """The outcome of one local search (or the best over several)."""

    z: np.ndarray
    objective: float
    region: Region
    fit: RegionFit
    regions_visited: int
    local_optimum: bool
    """Certified: optimal on its region and no single flip of a binding face improves."""
    iterations: int = 0
    message: str = ""
    history: list[float] = field(default_factory=list)


def local_search(net: Network, objective: Objective, start: np.ndarray,
                 max_regions: int) -> PatternSolution:
    """Descent on the piecewise-convex objective from `start` (module docstring)."""
    region = region_of(net, pattern_at(net, start))
    fit = solve_region(region, objective, start)
    visited = {_key(region.pattern)}
    iterations, history = fit.iterations, [fit.objective]
    while True:
        if not fit.certified:
            return PatternSolution(fit.z, fit.objective, region, fit, len(visited), False,
                                   iterations, fit.message, history)
        moved = False
        binding = _binding_faces(region, fit.z)
        flips = _FlipTest.of(net, region, objective, fit.z, binding)
        for units in _flip_candidates(region, fit, binding):
            if len(visited) >= max_regions:
                return PatternSolution(fit.z, fit.objective, region, fit, len(visited), False,
                                       iterations, "the region budget ran out", history)
            pattern = flipped(region.pattern, units)
            key = _key(pattern)
            if key in visited:
                continue
            visited.add(key)
            if flips is not None and len(units) == 1 and flips.stays_optimal(units[0]):
                continue  # fit.z is optimal on the flipped region too: no decrease there
            trial_region = flipped_region(net, region, pattern)
            trial = solve_region(trial_region, objective, fit.z)
            iterations += trial.iterations
            if trial.certified and trial.objective < fit.objective - IMPROVE_TOL * (
                    1 + abs(fit.objective)):
                region, fit, moved = trial_region, trial, True
                history.append(fit.objective)
                break
        if not moved:
            return PatternSolution(fit.z, fit.objective, region, fit, len(visited), True,
                                   iterations, "", history)


def _flip_candidates(region: Region, fit: RegionFit, binding: np.ndarray
                     ) -> Iterator[np.ndarray]:
    """The flips to try, best first: every binding face whose multiplier is positive at once,
    then each binding face alone, by decreasing multiplier (the certificate needs them all)."""
    if not len(binding):
        return
    order = binding[np.argsort(-fit.face_multipliers[binding], kind="stable")]
    blocking = order[fit.face_multipliers[order] > 0]
    if len(blocking) > 1:
        yield region.face_units[blocking]
    for face in order:
        yield region.face_units[[face]]


FLIP_TEST_TOL = 1e-9
"""`_FlipTest` calls z optimal on the flipped region where the KKT stationarity residual
there is within FLIP_TEST_TOL of the gradient's size (relative; KKT_TOL / 100, so that what
it lets pass is a decrease far below IMPROVE_TOL)."""


@dataclass
class _FlipTest:
    """Whether the optimum z of a region stays optimal on the region across one of its
    binding faces, without building that region (l2 loss, piecewise-linear output).

    At z on the face u_j = 0 both regions give the same output, residual and binding faces;
    flipping unit j (layer l, slope change ds) changes every form above it by the response
    r of the layers above to e_j (the pattern's slopes) times q = ds P_l[j]: the output
    Jacobian by r_out q, the binding faces of the layers above by sign_i r_i q, and face j
    changes sign. The objective's gradient becomes g + (2 / m) q (A r_out . residual). The
    region's QP is convex, so z is optimal there iff the KKT conditions hold at z with the
    binding faces alone: g' + S_B' mu = 0 for some mu >= 0 (a tiny NNLS). Where they hold,
    solving the flipped region could only return z's own objective: the local search skips
    it. Measured (variance 0.3 denoising, 20 instances): on the conv decoder 469 of the 479
    single flips tried were skipped, none of which a full solve would have taken, and the
    polish took 0.62-0.74 s instead of 1.15-1.44 s; on the dense ReLU decoder all 177.
    """

    net: Network
    region: Region
    objective: Objective
    z: np.ndarray
    binding: np.ndarray
    residual: np.ndarray
    """The residual A G(z) - y (m,) and the l2 objective's gradient (k,) at z."""
    gradient: np.ndarray
    offsets: dict[int, int]
    """Each layer's first face."""

    @classmethod
    def of(cls, net: Network, region: Region, objective: Objective, z: np.ndarray,
           binding: np.ndarray) -> _FlipTest | None:
        if objective.loss != "l2" or region.output is not None or not len(binding):
            return None
        jac, res0 = objective.measured(region)
        residual = jac @ z + res0
        gradient = 2.0 * jac.T @ residual / len(residual) + 2.0 * objective.prior * z
        layers = region.face_units[:, 0]
        offsets = {int(layer): int(np.searchsorted(layers, layer))
                   for layer in np.unique(layers)}
        return cls(net, region, objective, z, binding, residual, gradient, offsets)

    def stays_optimal(self, unit: np.ndarray) -> bool:
        """Whether z is optimal on the region with this (layer, unit) of a binding face
        flipped: the KKT conditions there, to FLIP_TEST_TOL."""
        gradient, rows = self.flipped_terms(unit)
        mu, _ = nnls(rows.T, -gradient)
        stationarity = gradient + rows.T @ mu
        size = 1.0 + float(np.max(np.abs(gradient))) + float(np.max(np.abs(rows.T @ mu)))
        return bool(np.max(np.abs(stationarity)) <= FLIP_TEST_TOL * size)

    def flipped_terms(self, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(gradient at z, binding faces' rows) on the flipped region."""
        layer, j = int(unit[0]), int(unit[1])
        region, net = self.region, self.net
        face = self.offsets[layer] + j
        on = bool(region.pattern[layer][j])
        kink = net.layers[layer].activation.kink
        ds = float(_slopes(kink, not on) - _slopes(kink, on))
        sign = -1.0 if on else 1.0
        q = ds * sign * region.faces[face]  # ds P_l[j]
        rows = region.faces[self.binding].copy()
        rows[self.binding == face] *= -1.0
        bound_layers = region.face_units[self.binding, 0]
        response = np.zeros((1, net.layers[layer].n_out))
        response[0, j] = 1.0
        for above in range(layer + 1, len(net.layers)):
            pre = net.layers[above].operator.apply(response)[0]
            here = bound_layers == above
            if here.any():
                units = region.face_units[self.binding[here], 1]
                face_sign = np.where(region.pattern[above][units], -1.0, 1.0)
                rows[here] += (face_sign * pre[units])[:, None] * q[None, :]
            response = (_slopes(net.layers[above].activation.kink, region.pattern[above])
                        * pre)[None, :]
        out = _observed(response, self.objective.rows)[0]
        # J' = J + out q; the residual at z is the same (z is on the face, u_j = 0).
        gradient = self.gradient + (2.0 / len(self.residual)) * q * float(out @ self.residual)
        return gradient, rows


# ------------------------------------------------------------------------- identifiability
@dataclass(frozen=True)
class RegionCertificate:
    sigma_min: float
    """Smallest singular value of A J_P (0 where it has fewer rows than columns)."""
    identifiable: bool
    """A J_P has full column rank: z is the only point of its region with its output."""
    error_bound: float
    """||z - z*||_inf <= ||(A J_P)^+||_inf (eps + noise) for z* in the same region; inf where
    not identifiable."""


def certificate(net: Network, region: Region, objective: Objective, z: np.ndarray,
                noise: float | None) -> RegionCertificate:
    """The region's identifiability and error bound at z.

    Where z lies on faces of its region (units at their kink), the regions across those
    faces contain z too: z is identified only if the region with every such unit switched is
    of full rank as well (measured: x = 0 on a (2, 6, 14) net was fitted at a z whose output
    units sat at u = 0, 'on' in a full-rank region while the region with them off, of rank
    0, holds a whole set of pre-images). "At the kink" is |u_j| <= NEAR_FACE max_j |u_j| of
    its layer, not only exactly 0: a fit to round-off cannot tell u_j = 1e-10 from u_j < 0
    (measured: realizable 130 x 250 x 600 data whose z* has fewer than 130 active hidden
    units were fitted at points just inside a full-rank region, far from z*). sigma_min is
    the smaller of the two.
    """
    jac, res0 = objective.measured(region, z)
    sigma_min, full_rank = _rank(jac)
    on_face = _units_near_faces(region, z)
    if full_rank and len(on_face):
        other = region_of(net, flipped(region.pattern, on_face))
        other_sigma, full_rank = _rank(objective.measured(other, z)[0])
        sigma_min = min(sigma_min, other_sigma)
    if not full_rank:
        return RegionCertificate(sigma_min, False, np.inf)
    eps = float(np.max(np.abs(jac @ z + res0), initial=0.0))
    if region.output is not None:
        # The bound holds for an affine G only; through a smooth output it is first order.
        return RegionCertificate(sigma_min, True, np.inf)
    pinv = np.linalg.pinv(jac)
    bound = float(np.abs(pinv).sum(axis=1).max()) * (eps + (eps if noise is None else noise))
    return RegionCertificate(sigma_min, True, bound)


def _rank(jac: np.ndarray) -> tuple[float, bool]:
    """(sigma_min, full column rank) of a measured Jacobian."""
    if jac.shape[0] < jac.shape[1]:
        return 0.0, False
    singular = np.linalg.svd(jac, compute_uv=False)
    sigma_min = float(singular[-1])
    return sigma_min, sigma_min > RANK_TOL * max(float(singular[0]), 1e-300)


def _binding_faces(region: Region, z: np.ndarray) -> np.ndarray:
    """The indices of the faces that bind at z (slack within FACE_TOL)."""
    slack = region.face_bounds - region.faces @ z
    return np.flatnonzero(slack <= FACE_TOL * (1 + np.abs(region.face_bounds)))


NEAR_FACE = 1e-6
"""A unit counts as at its kink for the certificate where |u_j| <= NEAR_FACE max |u| of its
layer (for random z* the smallest of 250 is about 4e-3 of the largest)."""


def _units_near_faces(region: Region, z: np.ndarray) -> np.ndarray:
    """The (layer, unit) pairs whose pre-activation at z is within NEAR_FACE of the kink."""
    slack = region.face_bounds - region.faces @ z  # |u_j|, every face being sign-adjusted
    layers = region.face_units[:, 0]
    scale = np.zeros(len(slack))
    for layer in np.unique(layers):
        here = layers == layer
        scale[here] = np.max(np.abs(slack[here]), initial=0.0)
    return region.face_units[np.abs(slack) <= NEAR_FACE * scale]


# ---------------------------------------------------------------------------- Gauss-Newton
GN_STOP = 1e-6
"""Gauss-Newton stops a start once a step lowers its objective by less than GN_STOP (1 + f):
the certified local search takes over from there. Measured (variance 0.3 denoising): with
1e-7 the last steps crossed tiny regions at a few per cent of a step each; once the local
search decided most flips without building their regions (`_FlipTest`), 1e-6 took 0.66x the
time on 100 instances of the dense decoder (objective no higher on 98 % of them, worse by
over 1e-6 on 2 %) and 0.79x on 40 of the conv decoder (median PSNR equal); on the conv
experiment's 50 denoising trials per source, PSNR 23.06 / 23.95 dB at 12.2 / 14.1x less time
than gd against 23.07 / 23.95 dB at 9.5 / 11.0x with 1e-7. 1e-5 lost more (PSNR 23.11
against 23.20 dB on the 40 conv instances, objective worse by over 1e-6 on 22 %)."""


GN_DAMPING = (4.0, 0.3, 1e-4)
"""Levenberg-Marquardt damping of each start's step, (up, down, least): mu (relative to the
model's trace / k) grows by `up` (at least to `least`) after a step the line search had to
shorten, shrinks by `down` after a full step (to 0 below `least`); at most GN_DAMPING_MAX.
The model's step overshoots the small regions; damped, fewer steps are shortened."""

GN_DAMPING_MAX = 1e-3
"""The most damping (relative to trace / k). Measured: on the shipped conv decoder, variance
0.3 denoising, 20 instances, Gauss-Newton plus polish took 5.0 s undamped, 4.1 s damped
without a cap and 3.4 s with this one, the objectives equal but for one better and one worse
(by 4e-7); a cap of 1e-2 made tests/test_conv_inversion's realizable random DCGANs (relu
output) take 365 s instead of 15 s (damping dominates the small singular directions and
Gauss-Newton stops short of the exact fit), this one 12.5 s."""


def gauss_newton(net: Network, objective: Objective, starts: np.ndarray,
                 max_steps: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Fast descent for the l2 loss from several starts at once (S, k), across many regions
    per step: on the region of each current point, minimise the affine model without its
    faces (least squares in k unknowns, damped by GN_DAMPING), then backtrack along that step
    on the true, piecewise objective.

    Returns (z (S, k), objectives (S,)). Not certified: `local_search` polishes.
    Where the starts' tangents (`_Tangents`) would not fit TANGENT_BUDGET together but do in
    smaller groups, the starts descend group by group (each start's descent is its own).
    """
    group = _Tangents.most_starts(net)
    if 0 < group < len(starts):
        parts = [gauss_newton(net, objective.at(index), starts[index], max_steps)
                 for index in np.array_split(np.arange(len(starts)),
                                             -(-len(starts) // group))]
        return (np.concatenate([part[0] for part in parts]),
                np.concatenate([part[1] for part in parts]))
    z = np.array(starts, dtype=np.float64, copy=True)
    # Each start's forward pass (output, slopes) is kept from the line search that accepted
    # its point: the next step's normal equations read it instead of passing forward again.
    state = _ForwardState.of(net, z)
    values = state.values(objective, z)
    active = np.ones(len(z), dtype=bool)
    tangents = _Tangents(net, len(z)) if _Tangents.takes(net, len(z)) else None
    damping = np.zeros(len(z))
    up, down, least = GN_DAMPING
    for _ in range(max_steps):
        index = np.flatnonzero(active)
        if not len(index):
            break
        normal, rhs = _normal_equations(net, objective.at(index), z[index], tangents, index,
                                        state.at(index))
        if damping.any():  # min model + mu |z - z_now|^2
            scale = damping[index] * np.trace(normal, axis1=1, axis2=2) / z.shape[1]
            normal = normal + scale[:, None, None] * np.eye(z.shape[1])
            rhs = rhs + scale[:, None] * z[index]
        model = _solve_batch(normal, rhs)
        direction = model - z[index]
        alpha = np.ones(len(index))
        pending = np.ones(len(index), dtype=bool)
        new_values = values[index].copy()
        while pending.any() and alpha.max() > 1e-6:
            rows = np.flatnonzero(pending)
            trial = z[index[rows]] + alpha[rows, None] * direction[rows]
            trial_state = _ForwardState.of(net, trial)
            trial_values = trial_state.values(objective.at(index[rows]), trial)
            better = trial_values < values[index[rows]] - 1e-12 * (1 + np.abs(
                values[index[rows]]))
            accepted = rows[better]
            z[index[accepted]] = trial[better]
            state.put(index[accepted], trial_state.at(np.flatnonzero(better)))
            new_values[accepted] = trial_values[better]
            pending[accepted] = False
            alpha[rows[~better]] *= 0.5
            pending &= alpha > 1e-6
        decrease = values[index] - new_values
        values[index] = new_values
        full = alpha == 1.0
        damping[index[full]] *= down
        damping[index[~full]] = np.clip(damping[index[~full]] * up, least, GN_DAMPING_MAX)
        damping[damping < least] = 0.0
        active[index] = decrease > GN_STOP * (1 + np.abs(new_values))
    return z, values


@dataclass
class _ForwardState:
    """The forward pass of points z (S, k): the output (S, n_out) and each layer's slopes
    (S, n_l), the ReLU-like units' 0/1 (or LeakyReLU's) slope and a smooth output's act'(u)."""

    output: np.ndarray
    slopes: list[np.ndarray]

    @classmethod
    def of(cls, net: Network, z: np.ndarray) -> _ForwardState:
        slopes, x = [], z
        for layer in net.layers:
            u = layer.preactivation(x)
            kink = layer.activation.kink
            x = layer.activation.forward(u)
            # A smooth output (check_pattern_network) is linearised: its slope is act'(u).
            slopes.append(layer.activation.derivative(u, x) if kink is None
                          else _slopes(kink, u >= 0))
        return cls(x, slopes)

    def values(self, objective: Objective, z: np.ndarray) -> np.ndarray:
        """The objective at the points z whose forward pass this is."""
        return objective.value(_observed(self.output, objective.rows) - objective.target, z)

    def at(self, index: np.ndarray) -> _ForwardState:
        return _ForwardState(self.output[index], [slope[index] for slope in self.slopes])

    def put(self, index: np.ndarray, other: _ForwardState) -> None:
        self.output[index] = other.output
        for mine, theirs in zip(self.slopes, other.slopes, strict=True):
            mine[index] = theirs


def _solve_batch(normal: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(normal, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:  # a singular model: least squares, start by start
        return np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(normal, rhs,
                                                                               strict=True)])


def _normal_equations(net: Network, objective: Objective, z: np.ndarray,
                      tangents: _Tangents | None = None, index: np.ndarray | None = None,
                      state: _ForwardState | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each z (S, k), the Gauss-Newton normal equations of its region's affine model:
    (J'J / m + prior I + damping) and -J'(A c_P - y) / m, with J = A J_P (S, k, k), (S, k).

    Start by start, through the live units only (nonzero slope on the region): a ReLU unit
    that is off contributes a zero row to J_P and a zero column to the layer above, so it is
    left out of every product. On the shipped decoder about half the hidden and a quarter of
    the output units are on; measured, one step took 53 us a start this way against 131 us
    with the full (n, S k) products of all starts at once (330 starts).
    With `tangents` (a convolutional network, `_Tangents`), start `index[s]`'s Jacobian is
    updated from its previous one through the units whose slope changed. `state` is z's
    forward pass where the caller has it (`_ForwardState.of(net, z)` otherwise).
    """
    count, k = z.shape
    m = net.output_dim if objective.rows is None else objective.rows.shape[0]
    normal, rhs = np.empty((count, k, k)), np.empty((count, k))
    if state is None:
        state = _ForwardState.of(net, z)
    x, slopes = state.output, state.slopes
    lives = []
    for slope in slopes:
        starts, units = np.nonzero(slope)  # the live units of every start, in one call
        lives.append(np.split(units, np.searchsorted(starts, np.arange(1, count))))
    target = np.broadcast_to(objective.target, (count, m))
    for s in range(count):
        if tangents is not None:
            assert index is not None
            live = lives[-1][s]
            jac = tangents.output_jacobian(int(index[s]), [slope[s] for slope in slopes],
                                           live)
        else:
            jac, live = _live_jacobian(net, [slope[s] for slope in slopes],
                                       [live_units[s] for live_units in lives])
        residual = x[s, live] - jac @ z[s]  # c_P on the live outputs (the others: 0)
        if objective.rows is None:
            residual = residual - target[s, live]
        else:
            jac = objective.rows[:, live] @ jac
            residual = objective.rows[:, live] @ residual - target[s]
        normal[s] = jac.T @ jac / m
        rhs[s] = -(jac.T @ residual) / m
    normal += objective.prior * np.eye(k)
    # A whisper of damping: a rank-deficient region (a narrow layer) gives a singular
    # model, whose step then is the nearly minimum-norm one instead of a LinAlgError.
    damping = 1e-12 * np.trace(normal, axis1=1, axis2=2) / k
    return normal + damping[:, None, None] * np.eye(k), rhs


def _live_jacobian(net: Network, slopes: list[np.ndarray], lives: list[np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(J, live): the Jacobian of the last layer's live outputs on one region, (len(live), k).

    A dense weight gives its live rows (the least-squares products stay dense and small); a
    matrix-free one (a convolution) is applied to the Jacobian's columns instead, since its
    dense rows would cost n_out x n_in numbers (a 64 x 64 x 3 DCGAN's third layer: 8.6 GB)
    against n_out x k for its product with the k columns.
    """
    jac, live = None, None
    for layer, slope, rows in zip(net.layers, slopes, lives, strict=True):
        operator = layer.operator
        if isinstance(operator, DenseOperator):
            chosen = operator.rows(rows)
            jac = chosen if jac is None else chosen[:, live] @ jac
        else:  # the layer's input Jacobian, its dead rows zero, through the operator
            columns = np.eye(net.input_dim)
            if jac is not None:
                columns = np.zeros((operator.n_in, net.input_dim))
                columns[live] = jac
            jac = operator.matmat(columns)[rows]
        jac = slope[rows, None] * jac
        live = rows
    assert jac is not None and live is not None
    return jac, live


TANGENT_BUDGET = 2**25
"""Most numbers (float64) that `_Tangents` keeps: its layers' Jacobians for every start and the
convolutions' sparse matrices (2**25: 256 MB); a larger network takes `_live_jacobian`."""

TANGENT_REFRESH = 0.8
"""`_Tangents` recomputes a layer's Jacobian whole where more than this fraction of the
layer below changed (the sparse update would cost about as much)."""


class _Tangents:
    """Each Gauss-Newton start's layer Jacobians, updated step by step.

    P_l (n_l, k) is layer l's pre-activation Jacobian on the start's region and J_l = D_l P_l
    (D_l its slopes). Between two steps only a few units change slope (measured on the shipped
    conv decoder, variance 0.3 denoising: median 10 of 5488 per step), so P_l changes by
    W_l[:, c] (J_l-1 new - J_l-1 old)[c] over the rows c of J_l-1 that changed: the
    convolution's `columns_product`, its cost the nonzeros of those columns, where the whole
    product through the convolution costs 1.4 ms per start on that decoder. Where over
    TANGENT_REFRESH of a layer changed, its P is recomputed whole (also clearing the
    round-off the updates accumulate). Used where every layer after the first is a
    convolution (`takes`).

    A ReLU-like output's Jacobian is needed on its live rows only (a median 208 of the
    decoder's 784): it is not kept but built at each step from those rows of the last
    convolution (`rows_product`, 0.19 ms), which measured cheaper than updating the whole
    output layer (0.62 ms a start-step: the changed rows of the layer below, a median half of
    them, and their columns' product). A smooth output's rows are all live: it is kept and
    updated like the hidden layers.
    """

    def __init__(self, net: Network, count: int):
        self.operators = [layer.operator for layer in net.layers]
        self.kept = self._kept(net)
        self.first = self.operators[0].matmat(np.eye(net.input_dim))
        self.slopes: list[list[np.ndarray] | None] = [None] * count
        self.pre: list[list[np.ndarray] | None] = [None] * count

    @staticmethod
    def _kept(net: Network) -> int:
        """How many layers' Jacobians are kept: all, or all but a ReLU-like output."""
        return len(net.layers) - (net.layers[-1].activation.kink is not None)

    @staticmethod
    def takes(net: Network, count: int) -> bool:
        return count <= _Tangents.most_starts(net)

    @staticmethod
    def most_starts(net: Network) -> int:
        """The most starts whose tangents fit TANGENT_BUDGET: 0 where no start's fits beside
        the sparse copies; negative where those alone exceed it, or where the network is not
        one whose layers after the first are all convolutions."""
        operators = [layer.operator for layer in net.layers]
        if len(operators) < 2 or not all(isinstance(op, Conv2dOperator)
                                         for op in operators[1:]):
            return -1
        # each convolution's CSC copy (values and row indices), and the output's CSR copy
        fixed = sum(2 * op.n_out * op.kernel[0].size for op in [*operators[1:],
                                                                 operators[-1]])
        per_start = net.input_dim * sum(op.n_out for op in operators[:_Tangents._kept(net)])
        return (TANGENT_BUDGET - fixed) // per_start

    def output_jacobian(self, start: int, slopes: list[np.ndarray], live: np.ndarray
                        ) -> np.ndarray:
        """The rows `live` of the output Jacobian D_L P_L at the start's new slopes."""
        old_slopes, pre = self.slopes[start], self.pre[start]
        if old_slopes is None or pre is None:
            pre = [self.first]
            for operator, slope in zip(self.operators[1:self.kept], slopes, strict=False):
                pre.append(operator.matmat(slope[:, None] * pre[-1]))
        else:
            pre = [self.first, *pre[1:]]
            changed, delta = _changed_rows(self.first, self.first,
                                           np.zeros(len(self.first), dtype=bool),
                                           slopes[0], old_slopes[0])
            for layer in range(1, len(pre)):
                if len(changed) > TANGENT_REFRESH * len(pre[layer - 1]):
                    new = self.operators[layer].matmat(slopes[layer - 1][:, None]
                                                       * pre[layer - 1])
                    step = new - pre[layer]
                else:
                    step = _form_step(self.operators[layer], changed, delta,
                                      pre[layer].shape[1])
                    new = pre[layer] + step
                if layer < len(pre) - 1:
                    changed, delta = _changed_rows(new, pre[layer],
                                                   np.any(step != 0.0, axis=1),
                                                   slopes[layer], old_slopes[layer])
                pre[layer] = new
        self.slopes[start], self.pre[start] = [s.copy() for s in slopes], pre
        if self.kept == len(self.operators):
            return slopes[-1][live, None] * pre[-1][live]
        below = slopes[-2][:, None] * pre[-1]  # the last hidden layer's output Jacobian
        return slopes[-1][live, None] * self.operators[-1].rows_product(live, below)


# ------------------------------------------------------------------------------ the method
ACTIVE_TOL = LayerOptions.active_tol
"""The layer-wise default relative threshold, used where y alone shows no noise."""

START_STREAM = 0x7061  # "pa": the random starts' seed stream (`_validation.sample_rngs`)

HOP_STREAM = 0x686F  # "ho": the hops' seed stream

HOPS = 0
"""Hops per sample (`_hop_points`) after the random starts; none by default (decision, from
the measurements below): hops lower the objective but not the error against the truth.
Measured on `benchmarks/bench_pattern.py --part mnist`'s instances (the shipped decoder,
variance 0.3 denoising, 100 instances, prior 0.3 / 784; the share of instances whose
objective is no higher than gradient descent's (bora2017), G(z*) / real digits / 50 %
inpainting, and CPU time against gd's, a 2-core machine shared with another job): 8 starts
and no hops 82 / 81 / 78 % at 9.4 / 7.9 / 10.9x less; 16 starts 86 / 88 / 85 % at 5.1 / 5.5
/ 6.8x; 8 starts and 8 hops 90 / 93 / 89 % at 5.7 / 5.4 / 6.1x (another 100 instances, seed
1: 95 / 87 / 85 % at 6.3 / 4.8 / 8.0x); 8 and 12 93 / 94 / 94 % at 4.8 / 4.4 / 5.4x (seed 1:
94 / 87 / 89 %, the inpainting PSNR 21.43 dB against gd's 21.65); 16 and 8 95 / 93 / 91 % at
4.0 / 4.8 / 5.6x (seed 1: 93 / 91 / 91 %). On the shipped conv decoder (`bench_conv.py --part
grid`, 20 trials per source) 8 hops raised the share of objectives no higher than gd's from
14 and 15 of 20 to 19 and 17 of 20 but lowered the median PSNR (23.37 to 23.32 dB, 23.83 to
23.63; gd 23.41, 23.91) and the speed-up from 10.6 / 13.8x to 6.7 / 7.3x: the MAP objective's
deeper minima fit more of the noise. The deeper minima that gradient descent found and 48
random starts did not (14 instances of 100) lie 0.04-0.7 away in z, 1-8 hidden units and
2-34 output units flipped, behind a barrier (every region meeting at the local optimum is
solved to that same point): no flip search reaches them, a hop does."""

HOP_SCALE = 1.0
"""A hop is z + N(0, HOP_SCALE f / m H^-1): H the Gauss-Newton Hessian of the objective at
the best answer z (J'J / m + prior I), f its objective (the noise variance where the model
fits), m the measurements: the posterior's spread under Gaussian noise of variance f.
Measured as HOPS (8 starts and 8 hops, the first 100 instances): scales 0.5, 1, 2, 4 and 16
gave 92 / 93 / 86, 90 / 93 / 91, 90 / 92 / 89, 87 / 91 / 91 and 89 / 93 / 87 % (within the
noise of 100 instances of each other)."""

HOP_FLOOR = 1e-6
"""Eigenvalues of H below HOP_FLOOR times its largest count as that: a rank-deficient
region (prior 0) would otherwise hop without bound along its flat directions."""

POLISHED = 3
"""The best Gauss-Newton answers per sample (distinct ones) that the certified local search
polishes. Measured on the shipped decoder, variance 0.3 denoising, prior 3.8e-4, 20
instances, 10 starts: polishing the best one only reached gradient descent's objective on
18 of 20, the best three on 19 of 20."""

POLISHED_CONV = 1
"""POLISHED on a network with a convolution (decision): the best answer only. There one
local search costs about what a start's whole Gauss-Newton descent does (on the shipped conv
decoder 27 ms a candidate against 20 ms a start: its regions have 5,488 faces), and the
second and third candidates bought objective decreases of at most 1e-4 relative (they won
on 11 of 50 instances). Measured (variance 0.3 denoising, MAP prior, 50 instances in one
call): polishing 3 / 2 / 1 took 15.9 / 12.6 / 10.4 s, the objective no higher than gradient
descent's on 72 / 70 / 70 %, median PSNR 23.31 dB each (gd's 23.31)."""


def default_polish(net: Network) -> int:
    """How many Gauss-Newton answers per sample the local search polishes by default."""
    if any(isinstance(layer.operator, Conv2dOperator) for layer in net.layers):
        return POLISHED_CONV
    return POLISHED


def invert_pattern(net: Network, x: object, *, loss: str = "l2", prior: float = 0.0,
                   starts: int = 8, seed: object = 0, max_regions: int = 200,
                   noise: float | None = None, rtol: float = 1e-9,
                   start: np.ndarray | None = None, rows: np.ndarray | None = None,
                   polish: int | None = None, hops: int = HOPS,
                   progress: bool | None = None) -> Inversion:
    """`invert(net, x, method="pattern")`: the whole network fitted on activation regions.

    Per sample: Gauss-Newton (`gauss_newton`, the l2 objective with `prior`) from z = 0,
    from `start` (e.g. the layer-wise answer) where given and from `starts` seeded N(0, I)
    draws, all at once; then from `hops` (HOPS: none by default) seeded draws around the best
    of those (`_hop_points`; none where it already fits exactly); then the certified local
    search (`local_search`, on `loss`) from the `polish` (`default_polish`) best distinct
    answers (and from `start` itself for linf and l1), at most `max_regions` regions each.
    The best is returned with its region's certificate.
    `rows` (m, n_out) is a linear measurement A (the objective is then on A G(z) - x).
    The hidden activations must be piecewise linear; the output's may be smooth and
    strictly increasing (tanh, sigmoid, elu) with loss 'l2' (module docstring).
    """
    loss = check_choice(loss, LOSSES, "loss")
    check_pattern_network(net, loss)
    prior = check_positive(prior, "prior", allow_zero=True)
    rtol = check_positive(rtol, "rtol", allow_zero=True)
    polish = default_polish(net) if polish is None else polish
    for name, value, low in (("starts", starts, 0), ("max_regions", max_regions, 1),
                             ("polish", polish, 1), ("hops", hops, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an int >= {low}; got {value!r}")
    if noise is not None:
        noise = check_positive(noise, "noise", allow_zero=True)
    m = net.output_dim if rows is None else rows.shape[0]
    batch, single = check_batch(x, m, "x")
    extra = None if start is None else np.atleast_2d(np.asarray(start, dtype=np.float64))
    if extra is not None and extra.shape != (len(batch), net.input_dim):
        raise InputError(f"start must have shape ({len(batch)}, {net.input_dim}); got "
                         f"{np.shape(start)}")
    with single_threaded_blas():  # _blas.py: threads cost 10x on busy cores
        return _invert_batch(net, batch, single, loss, prior, starts, seed, max_regions,
                             noise, rtol, extra, rows, polish, hops, progress)


def _invert_batch(net: Network, batch: np.ndarray, single: bool, loss: str, prior: float,
                  starts: int, seed: object, max_regions: int, noise: float | None,
                  rtol: float, extra: np.ndarray | None, rows: np.ndarray | None,
                  polish: int, hops: int, progress: bool | None) -> Inversion:
    began = time.perf_counter()
    points = _start_points(net.input_dim, len(batch), extra, starts, seed)
    fixed = 1 if extra is None else 2  # z = 0 and the given start come first
    z_gn, values = np.array(points), np.full(points.shape[:2], np.inf)
    z_gn[:, :fixed], values[:, :fixed] = _descend(net, batch, points[:, :fixed], prior, rows)
    objectives = [Objective(batch[b], loss, prior, rows,
                            _ambiguous_rows(net, batch[b], noise, rows, loss))
                  for b in range(len(batch))]
    answers: list = [None] * len(batch)
    for b in np.flatnonzero(_looks_exact(values[:, :fixed], batch, prior)):
        # An exact fit from a fixed start is a global optimum: the random starts could only
        # tie it (the classic 64 x 64 x 3 DCGAN: 202 s with all 9 starts, 17.7 s without).
        answer = _best_of(net, objectives[b], _distinct(z_gn[b, :fixed], values[b, :fixed],
                                                        1), max_regions, noise, rtol, fixed, 0.0)
        if answer[2] == Status.OPTIMAL:
            answers[b] = answer
    rest = np.array([b for b, answer in enumerate(answers) if answer is None], dtype=int)
    if len(rest) and points.shape[1] > fixed:
        z_gn[rest, fixed:], values[rest, fixed:] = _descend(net, batch[rest],
                                                            points[rest, fixed:], prior, rows)
    hopped = np.zeros(len(batch), dtype=bool)
    if hops and len(rest):
        hopped[rest[~_looks_exact(values[rest], batch[rest], prior)]] = True
    if hopped.any():
        z_gn, values = _hop(net, batch, z_gn, values, np.flatnonzero(hopped), prior, rows,
                            hops, seed)
    shared = (time.perf_counter() - began) / len(batch)
    for b in tqdm(rest, desc=f"invert (pattern, {loss})", unit="sample",
                  leave=False, disable=progress is False, delay=0.0 if progress else 2.0):
        sample_began = time.perf_counter()
        candidates = _distinct(z_gn[b], values[b], polish)
        if extra is not None and loss != "l2":
            candidates.append(extra[b])
        answers[b] = _best_of(net, objectives[b], candidates, max_regions, noise, rtol,
                              points.shape[1], shared + time.perf_counter() - sample_began,
                              hops if hopped[b] else 0)
    z = np.array([answer[0] for answer in answers])
    reports = [answer[1] for answer in answers]
    statuses = [answer[2] for answer in answers]
    residual = np.max(np.abs(_measured(net, z, rows) - batch), axis=1)
    success = [status in (Status.OPTIMAL, Status.LOCAL_OPTIMUM) for status in statuses]
    return Inversion.from_batch(z, success, statuses, [[] for _ in answers], residual,
                                time.perf_counter() - began, "pattern", single=single,
                                regions=reports)


def _descend(net: Network, batch: np.ndarray, points: np.ndarray, prior: float,
             rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton (l2 with the prior) from points (B, S, k) of the samples batch (B, m):
    the points reached (B, S, k) and their objectives (B, S)."""
    count = points.shape[1]
    surrogate = Objective(np.repeat(batch, count, axis=0), "l2", prior, rows)
    z, values = gauss_newton(net, surrogate, points.reshape(-1, net.input_dim))
    return z.reshape(points.shape), values.reshape(len(batch), count)


def _hop(net: Network, batch: np.ndarray, z_gn: np.ndarray, values: np.ndarray,
         samples: np.ndarray, prior: float, rows: np.ndarray | None, hops: int,
         seed: object) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton from `hops` draws around the best answer of each of `samples`: the
    answers (B, S + hops, k) and objectives (B, S + hops); the other samples' hop columns
    are inf, so `_distinct` ranks them last."""
    best = np.argmin(values[samples], axis=1)
    centre, value = z_gn[samples, best], values[samples, best]
    rngs = sample_rngs(seed, len(batch), HOP_STREAM)
    points = _hop_points(net, batch[samples], centre, value, prior, rows,
                         [rngs[b] for b in samples], hops)
    z_hop = np.zeros((len(batch), hops, net.input_dim))
    v_hop = np.full((len(batch), hops), np.inf)
    z_hop[samples], v_hop[samples] = _descend(net, batch[samples], points, prior, rows)
    return np.concatenate([z_gn, z_hop], axis=1), np.concatenate([values, v_hop], axis=1)


def _hop_points(net: Network, batch: np.ndarray, centre: np.ndarray, value: np.ndarray,
                prior: float, rows: np.ndarray | None, rngs: list[np.random.Generator],
                hops: int) -> np.ndarray:
    """(B, hops, k): centre_b + N(0, HOP_SCALE f_b / m H_b^-1) (HOP_SCALE, HOP_FLOOR)."""
    m = net.output_dim if rows is None else rows.shape[0]
    hessian, _ = _normal_equations(net, Objective(batch, "l2", prior, rows), centre)
    points = np.empty((len(centre), hops, net.input_dim))
    for b, (h, rng) in enumerate(zip(hessian, rngs, strict=True)):
        eigenvalues, vectors = np.linalg.eigh(h)
        floor = HOP_FLOOR * max(float(eigenvalues[-1]), np.finfo(float).tiny)
        spread = np.sqrt(HOP_SCALE * max(float(value[b]), 0.0) / m
                         / np.maximum(eigenvalues, floor))
        points[b] = centre[b] + (rng.standard_normal((hops, net.input_dim)) * spread) @ vectors.T
    return points


EXACT_HINT = 1e-3
"""A Gauss-Newton answer whose rms residual is below EXACT_HINT max|y| (no prior) may be an
exact fit: it is polished at once and, if 'optimal', the random starts are skipped."""


def _looks_exact(values: np.ndarray, batch: np.ndarray, prior: float) -> np.ndarray:
    """Per sample: some fixed start's l2 objective (mean squared residual) looks like zero."""
    if prior != 0:
        return np.zeros(len(batch), dtype=bool)
    scale = np.max(np.abs(batch), axis=1)
    return np.min(values, axis=1) <= (EXACT_HINT * scale) ** 2


def _ambiguous_rows(net: Network, y: np.ndarray, noise: float | None,
                    rows: np.ndarray | None, loss: str) -> np.ndarray | None:
    """`Objective.ambiguous` for a ReLU-like output observed directly: y_j <= threshold, the
    layer-wise method's threshold (the stated noise, else twice the largest negative
    excursion of y, at least 1e-6 max|y|); None where it does not apply."""
    activation = net.layers[-1].activation
    if rows is not None or loss == "l2" or activation.kink.below != 0:
        return None
    floor = ACTIVE_TOL * float(np.max(np.abs(y), initial=0.0))
    threshold = noise if noise is not None else max(
        floor, EXCURSION_FACTOR * activation.noise_floor(y))
    return y <= threshold


def _start_points(k: int, n_samples: int, extra: np.ndarray | None, starts: int,
                  seed: object) -> np.ndarray:
    """(B, S, k): z = 0, the given start (if any), then each sample's seeded draws."""
    rngs = sample_rngs(seed, n_samples, START_STREAM)
    fixed = [np.zeros((n_samples, 1, k))]
    if extra is not None:
        fixed.append(extra[:, None, :])
    drawn = np.stack([rng.standard_normal((starts, k)) for rng in rngs])
    return np.concatenate([*fixed, drawn], axis=1)


def _distinct(points: np.ndarray, values: np.ndarray, count: int) -> list[np.ndarray]:
    """The `count` lowest-valued points, skipping any that repeats one already taken."""
    chosen: list[np.ndarray] = []
    for i in np.argsort(values, kind="stable"):
        point = points[i]
        if all(np.linalg.norm(point - c) > 1e-6 * (1 + np.linalg.norm(c)) for c in chosen):
            chosen.append(point)
        if len(chosen) == count:
            break
    return chosen


def _best_of(net: Network, objective: Objective, candidates: list[np.ndarray],
             max_regions: int, noise: float | None, rtol: float, starts: int,
             seconds: float, hops: int = 0) -> tuple[np.ndarray, PatternReport, Status]:
    """The certified local search from each candidate; the best, its report and status."""
    began = time.perf_counter()
    best, visited = None, 0
    for candidate in candidates:
        solution = local_search(net, objective, candidate, max_regions)
        visited += solution.regions_visited
        if best is None or solution.objective < best.objective or (
                not best.fit.certified and solution.fit.certified):
            best = solution
    assert best is not None
    cert = certificate(net, best.region, objective, best.z, noise)
    status = _status(best, cert, objective, rtol)
    report = PatternReport(objective.loss, best.objective, visited, best.local_optimum,
                           cert.sigma_min, cert.identifiable, cert.error_bound,
                           best.region.pattern, starts,
                           seconds + time.perf_counter() - began, best.message, hops)
    return best.z, report, status


def _status(best: PatternSolution, cert: RegionCertificate, objective: Objective,
            rtol: float) -> Status:
    if not best.fit.certified and not (best.fit.stationary and not cert.identifiable):
        return Status.SOLVER_ERROR
    if not cert.identifiable:
        return Status.NOT_IDENTIFIABLE
    jac, res0 = objective.measured(best.region, best.z)
    residual = float(np.max(np.abs(jac @ best.z + res0), initial=0.0))
    scale = float(np.max(np.abs(objective.target), initial=0.0))
    if objective.prior == 0 and residual <= rtol * max(scale, 1e-300):
        # The objective is zero to round-off: no z does better, so this is a global optimum.
        return Status.OPTIMAL
    return Status.LOCAL_OPTIMUM if best.local_optimum else Status.MAX_STEPS


def _measured(net: Network, z: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    return _observed(net.forward(z), rows)


def _observed(out: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """Network outputs (S, n_out) as measured: A G(z) for rows A (m, n_out), else G(z)."""
    return out if rows is None else out @ rows.T


# ------------------------------------------------------- with the layer-wise methods
JOINT_LOSS = {"exact": "l2", "linf": "linf", "l1": "l2"}
"""The whole-network loss that finishes a layer-wise method where a layer's pre-image is not
unique: l2 for exact (its answer is a zero-residual fit), l_inf for linf, and l2 for l1 too
(decision): DAQP's dense l_1 form has one slack per row, and the joint l_1 solve took 7 s
per instance of the 784-pixel MNIST denoising (the linf one 0.2 s). The answer is accepted
only where it keeps the walk's fit promise (`_joint_status`)."""

JOINT_STARTS = 2
"""Random starts of that joint solve, beside z = 0 and the walk's answer (no hops: the
walk's answer of realizable data starts it at the fit; its figures were measured so)."""

JOINT_REGIONS = 50
"""Regions per local search of the joint solve (the walk's answer starts it close)."""

REFINED_STATUSES = (Status.OPTIMAL, Status.LOCAL_OPTIMUM)
"""The statuses of a pattern answer that count as success."""

PATTERN_OPTIONS = ("loss", "prior", "starts", "hops", "seed", "max_regions")
"""What `invert(method='pattern' or 'auto', **options)` passes on to `invert_pattern`."""


def is_piecewise_linear(net: Network) -> bool:
    return all(layer.activation.kink is not None for layer in net.layers)


def takes_pattern(net: Network) -> bool:
    """Whether the pattern method applies (`check_pattern_network` with the l2 loss): every
    hidden activation piecewise linear, the output's too or smooth and increasing."""
    return all(layer.activation.kink is not None for layer in net.layers[:-1])


def joint_loss(net: Network, method: str) -> str:
    """JOINT_LOSS[method], or l2 through a smooth output (the one loss it takes)."""
    return JOINT_LOSS[method] if is_piecewise_linear(net) else "l2"


def solve_jointly(net: Network, batch: np.ndarray, z: np.ndarray, statuses: list[Status],
                  method: str, noise: float | None, rtol: float, fit_limits: Sequence[float]
                  ) -> tuple[np.ndarray, list[Status], list[PatternReport | None] | None]:
    """A layer-wise answer finished on the whole network where a layer did not determine it.

    Samples whose status is 'not_unique' or 'fit_lost' are solved again on activation
    regions (loss `joint_loss`, starting from the walk's z among others), and the
    joint answer replaces the walk's as `_joint_status` says. `fit_limits[i]` is the walk's
    promise for sample i (FIT_FACTOR eps_last + FIT_FLOOR max|x|). 'optimal' (a
    zero-residual fit) then certifies the region: z is the only point of it with its output
    (other regions may hold other pre-images; `exact.preimage` decides that globally on small
    networks). Returns (z,
    statuses, regions), regions None where no sample needed it (or the pattern method does
    not take the network: a smooth hidden activation).
    """
    todo = [i for i, status in enumerate(statuses)
            if status in (Status.NOT_UNIQUE, Status.FIT_LOST)]
    if not todo or not takes_pattern(net):
        return z, statuses, None
    loss = joint_loss(net, method)
    joint = invert_pattern(net, batch[todo], loss=loss, starts=JOINT_STARTS, hops=0,
                           seed=0, max_regions=JOINT_REGIONS, noise=noise, rtol=rtol,
                           start=z[todo], progress=False)
    z, statuses = z.copy(), list(statuses)
    regions: list[PatternReport | None] = [None] * len(batch)
    for position, i in enumerate(todo):
        status = _joint_status(joint.status[position], joint.residual[position],
                               fit_limits[i], method)
        if status is not None:
            z[i], statuses[i], regions[i] = joint.z[position], status, joint.regions[position]
    return z, statuses, regions


def _joint_status(status: Status, residual: float, fit_limit: float,
                  method: str) -> Status | None:
    """A joint answer's status for a layer-wise method; None: keep the walk's answer.

    exact: 'optimal' only for a zero-residual fit on an identifiable region (the pattern
    method's 'optimal'); 'not_unique' for a zero-residual fit on a rank-deficient one.
    linf, l1: a certified answer on an identifiable region that keeps the walk's promise
    ||G(z) - x||_inf <= `fit_limit` is 'optimal' where its residual is zero (the pattern
    method's 'optimal') and 'local_optimum' otherwise (noisy data: no global claim);
    rank-deficient there: 'not_unique'.
    Anything else (a local optimum of exact's l2 fit that does not fit, a fit worse than the
    promise) leaves the walk's answer and status as they were.
    """
    if status == Status.NOT_IDENTIFIABLE:
        fits = residual <= fit_limit
        return Status.NOT_UNIQUE if fits else None
    if method == "exact":
        return Status.OPTIMAL if status == Status.OPTIMAL else None
    if status in REFINED_STATUSES and residual <= fit_limit:
        return status
    return None


def needs_refining(result: Inversion, batch: np.ndarray, noise: float | None,
                   rtol: float) -> np.ndarray:
    """Which samples of a layer-wise l_inf result the 'auto' method refines: noise stated
    (> 0), noise found (the output layer's fit above rtol max|x|), or not 'optimal'."""
    scale = np.max(np.abs(batch), axis=1)
    eps = np.array([reports[-1].eps if reports else np.inf for reports in result.layers])
    noisy = (noise is not None and noise > 0) | (eps > rtol * scale)
    return noisy | (np.asarray(result.status) != Status.OPTIMAL)
