"""Inverse problems with a generative prior: from measurements y = A(G(z*)) + noise back to z.

`reconstruct(net, y, measurement, method)` returns a `Reconstruction`: the `Inversion` (z,
success, status, ...), the signal estimate G(z_hat) on all n outputs and the measurement
residual. Which method does what:

- `Identity`, `Mask` with the LP methods ('exact', 'linf', 'l1', and 'lp+gd'): the mask folds
  into the network (its last layer keeps only the kept rows, `Mask.fold`) and `invert` solves
  the layer-wise LP on that smaller network. The signal is the full G(z_hat), so inpainting
  fills the hidden entries. `noise`, `solver`, ... go to `invert`.
- Linear A ('pgd', the default for `Matrix` and `Gaussian`): projected gradient descent
  (Shah and Hegde, "Solving Linear Inverse Problems Using GAN Priors: An Algorithm with
  Provable Guarantees", ICASSP 2018) with the layer-wise LP as the projection onto the range:
  P(v) = G(invert(G, v, projection).z), certify off (see `pgd_options`).
- `Magnitude` ('pgd', the default): alternating phase retrieval, sign estimation and the
  linear PGD above, from a spectral start (see below).
- 'pattern' on every linear operator: the whole network fitted on activation regions
  (`_pattern.py`), A G(z) being affine on each; a Mask folds into the network first.
- 'gd' on every operator: gradient descent on the latent, loss mean_j (A(G(z)) - y)_j^2, the
  CSGM estimator (Bora et al. 2017), `layerinv._gradient.gradient_descent` with
  `measurement=measurement.to_torch()` and its presets (`preset='bora2017'` by default: Adam,
  lr 0.01, 1,000 steps, 10 restarts; `hand2017`).

Projected gradient descent (linear A, signal x_t = G(z_t) always in the range)
-----------------------------------------------------------------------------
    x_0 = P(A^T y)
    x_{t+1} = P(x_t + eta_t A^T (y - A x_t))
Step size: eta_0 = n / ||A||_F^2, the inverse mean eigenvalue of A^T A (= 1 in expectation for
`Gaussian`, whose E[A^T A] = I), and backtracking on the measurement loss
L(x) = ||y - A x||_2: a trial step whose projected point does not lower L (to a relative 1e-12)
is halved, at most `max_halvings` times (then the status is 'stalled'); after an accepted step
eta doubles again, capped at eta_0. Measured on 20 x 100 x 500 ReLU nets with m = 200: a fixed
eta = 1 diverged or wandered on 10 of 10 instances (the LP projection of a point far from the
range is poor: relative projection error 0.8 for a perturbation of relative size 1), eta = 0.5
recovered 1 of 10; backtracking recovered 9 of 10, in a median of 100 steps.

Polish (polish=True, the default): after each projection, Gauss-Newton steps on the linear
piece of G at z (G(z + d) = G(z) + J d exactly while no unit changes sign, for ReLU nets):
d = argmin ||y - A G(z) - A J d||_2, kept while L decreases (at most `polish_steps`). The LP
finds the right piece, the least-squares step lands on the answer within it: with polish, 10
of 10 of the instances above were recovered to 1e-15 in a median of 10 steps. For sigmoid or
tanh layers it is an ordinary Gauss-Newton step. With noise it is the least-squares fit on the
piece.

Stopping: the relative change ||x_{t+1} - x_t|| / ||x_t|| < tol (status 'converged'), L at
round-off (L <= 1e-13 ||y||, 'converged'), no step size lowers L ('stalled') or max_iter
steps ('max_steps', the same status as gradient descent's step cap: one vocabulary,
results.Status; the parameter keeps its name `max_iter`, which users and the CLI's
--max-iter already spell). `history` holds L(x_t) for t = 0, 1, ...

Starts (`restarts`, default 3): the first from A^T y, the others x = G(z0), z0 ~ N(0, I) from
numpy.random.default_rng([seed, RESTART_STREAM]) (`restart_latents`; the same seed for every
sample, so a batch equals separate calls; tagged, so never the stream a user drew z* from);
the start with the lowest final L is kept, and a start whose L <= fit_tol ||y|| (an exact
fit) ends the restarts early, so noiseless data that the first start solves costs one
start; noisy data runs them all. Measured on the MNIST decoder (10 instances each): 8 and 9
of 10 recovered at m = 50 and 100 with one start, 10 and 10 with three.

Phase retrieval (Magnitude, y = |A x|)
--------------------------------------
Start: the spectral estimate (Netrapalli, Jain and Sanghavi 2013; Candes, Li and
Soltanolkotabi 2015): the leading eigenvector u of (1/m) sum_i y_i^2 a_i a_i^T, scaled to
||x|| ~ sqrt(sum_i y_i^2 n / ||A||_F^2), projected with P; of P(+s u) and P(-s u) the one with
the lower amplitude loss ||y - |A x|||_2 is kept. Then, alternately: the signs
c = sign(A x_t) (0 counts as +), and one PGD step (with backtracking and polish, as above) on
the linear problem c o y = A x; a step is accepted when it lowers the amplitude loss.
Restarts add random starts as above. The answer is determined up to
the global sign x -> -x only (|A x| = |A(-x)|); success in the tests is judged by
min(||x_hat - x||, ||x_hat + x||) / ||x|| < 1e-3. For a net with a ReLU output, x >= 0 and -x
is not in the range (unless x = 0), so in practice the estimate is x itself.

`success` for 'pgd' (as for 'gd') is about the fit: ||A(G(z)) - y||_inf <= success_tol
||y||_inf (default 1e-4); with noisy measurements it is usually False. `residual` is that
l_inf misfit in measurement space; `layers` is empty (the projections are not certified).
"""

from __future__ import annotations

import inspect
import numbers
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from layerinv import solvers
from layerinv._blas import single_threaded_blas
from layerinv._layer_inversion import METHODS as LP_METHODS
from layerinv._pattern import invert_pattern
from layerinv._validation import check_batch, check_choice, check_positive
from layerinv._walk import invert
from layerinv.errors import InputError
from layerinv.measurements import Measurement
from layerinv.network import Network
from layerinv.results import Inversion, Reconstruction, Status

PGD_STATUSES = (Status.CONVERGED, Status.STALLED, Status.MAX_STEPS)
PROJECTIONS = ("linf", "l1", "pattern")
PATTERN_PROJECTION_STARTS = 2
"""Random starts of a 'pattern' projection, beside z = 0 (and no hops: a projection runs at
every PGD step, where PGD's own steps do the exploring; its figures were measured so)."""
METHODS = ("auto", *LP_METHODS, "lp+gd", "gd", "pgd", "pattern")
ROUNDOFF = 1e-13
"""A measurement loss at or below this times ||y|| counts as an exact fit (stop)."""
RESTART_STREAM = 0x706764  # "pgd"
"""Random restarts draw from default_rng([seed, RESTART_STREAM]), never default_rng(seed): a
user who drew z* from default_rng(0) and ran pgd with seed 0 had restart 1 = z* (10 of 10
recovered at m = 25 against 2 of 10 for z* from default_rng(1)). _gradient.py does the same."""


def reconstruct(net: Network, y: object, measurement: Measurement, method: str = "auto",
                *, progress: bool | None = None, **options: Any) -> Reconstruction:
    """Find z with A(G(z)) close to y, for a measurement operator A; see the module docstring.

    Parameters
    ----------
    net : Network
    y : array, shape (m,) or (B, m)
        Measurements, m = measurement.out_dim.
    measurement : Measurement
        `Identity`, `Mask`, `Matrix`, `Gaussian` or `Magnitude` from `layerinv.measurements`;
        its in_dim must equal net.output_dim.
    method : {'auto', 'exact', 'linf', 'l1', 'lp+gd', 'gd', 'pgd', 'pattern'}
        'auto': 'linf' for Identity and Mask, 'pgd' otherwise. The LP methods need Identity or
        Mask; 'pattern' any linear operator; 'pgd' and 'gd' take every operator.
    progress : bool, optional
        A progress bar; None shows one only for runs longer than two seconds.
    **options
        LP methods and 'lp+gd': `invert`'s options (noise, solver, ...); 'gd': those of
        `gradient_descent` (preset, steps, restarts, seed, ...); 'pgd': those of `pgd`;
        'pattern': those of `invert(method='pattern')` (loss, prior, starts, seed, ...).
    """
    if not isinstance(net, Network):
        raise InputError(f"net must be a layerinv.Network; got {type(net).__name__}")
    if not isinstance(measurement, Measurement):
        raise InputError(f"measurement must be a layerinv.measurements.Measurement (Identity, "
                         f"Mask, Matrix, Gaussian, Magnitude); got {type(measurement).__name__}")
    measurement = measurement.resolved(net.output_dim)
    method = check_choice(method, METHODS, "method")
    foldable = measurement.foldable
    if method == "auto":
        method = "linf" if foldable else "pgd"
    if method in (*LP_METHODS, "lp+gd") and not foldable:
        raise InputError(f"method {method!r} inverts the network directly and needs an Identity "
                         f"or Mask measurement; for {measurement!r} use 'pgd' or 'gd'")
    y_batch, single = check_batch(y, measurement.out_dim, "y")

    if method == "pgd":
        _check_options(options, pgd, "pgd")
        result = pgd(net, y, measurement, progress=progress, **options)
    elif method == "pattern":
        result = _pattern_solve(net, y, measurement, progress, options)
    elif method == "gd":
        from layerinv._gradient import gradient_descent

        _check_options(options, gradient_descent, "gd")
        result = gradient_descent(net, y, measurement=measurement.to_torch(),
                                  progress=progress, **options)
    else:
        result = invert(measurement.fold(net), y, method, progress=progress, **options)
    signal = np.atleast_2d(net.forward(result.z))
    fit = np.linalg.norm(measurement.apply(signal) - y_batch, axis=1)
    return Reconstruction.from_batch(result, signal, fit, measurement, single=single)


def _pattern_solve(net: Network, y: object, measurement: Measurement,
                   progress: bool | None, options: dict[str, Any]) -> Inversion:
    """'pattern': the whole network on activation regions (`_pattern.invert_pattern`); a
    mask folds into the network as for the LP methods, any other linear A enters the
    objective as its matrix (A G(z) is affine on a region too)."""
    _check_options(options, invert_pattern, "pattern")
    if measurement.foldable:
        return invert_pattern(measurement.fold(net), y, progress=progress, **options)
    if not measurement.linear:
        raise InputError(f"method 'pattern' needs a linear measurement (A G(z) affine on a "
                         f"region); for {measurement!r} use 'pgd' or 'gd'")
    return invert_pattern(net, y, rows=measurement.matrix, progress=progress, **options)


def _check_options(options: dict[str, Any], function: Any, method: str) -> None:
    known = set(inspect.signature(function).parameters) - {"net", "generator", "x", "y",
                                                            "measurement", "rows"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"options {unknown} do not apply to method={method!r}; it takes "
                         f"{sorted(known - {'progress'})}")


# ------------------------------------------------------------------------------------ PGD
@dataclass(frozen=True)
class _PGDOptions:
    projection: str
    max_iter: int
    tol: float
    step: float
    max_halvings: int
    polish: bool
    polish_steps: int
    restarts: int
    fit_tol: float
    seed: int | None
    solver: str


def pgd(net: Network, y: object, measurement: Measurement, *, projection: str = "linf",
        max_iter: int = 100, tol: float = 1e-6, step: float | None = None,
        max_halvings: int = 10, polish: bool = True, polish_steps: int = 5,
        restarts: int = 3, fit_tol: float = 1e-9, success_tol: float = 1e-4,
        seed: int | None = 0, solver: str = "auto", progress: bool | None = None) -> Inversion:
    """Projected gradient descent with the layer-wise LP as the projection (module docstring).

    Parameters
    ----------
    projection : {'linf', 'l1', 'pattern'}
        The LP used as P. 'l1' maps points far from the range to z = 0 (measured: every
        instance of the 20 x 100 x 500, m = 200 suite stayed at relative error 1.0).
        'pattern': P(v) = G(z) for the pattern method's l2 fit of v (`invert(method=
        'pattern')`, seeded), a local l2 projection onto the range.
    max_iter : int >= 1
        Most PGD steps per start; a start that runs out of them stops with status
        'max_steps' (gradient descent's name for its cap: one status vocabulary; the
        parameter keeps the name users and the CLI's --max-iter know).
    tol : float > 0
        Stop once the relative change of the signal in one step is below tol.
    step : float > 0, optional
        eta_0; default n / ||A||_F^2 (1 in expectation for `Gaussian`).
    max_halvings : int >= 0
        Backtracking halvings of the step before the run counts as stalled.
    polish : bool
        Gauss-Newton steps on the linear piece of G after each projection.
    polish_steps : int >= 1
    restarts : int >= 1
        Starts per sample: the first from A^T y (spectral for Magnitude), the others random.
    fit_tol : float >= 0
        A start whose measurement loss is <= fit_tol ||y|| ends the restarts.
    success_tol : float > 0
        success = ||A(G(z)) - y||_inf <= success_tol ||y||_inf.
    seed : int or None
        Seeds the random restarts (the same for every sample), from the tagged stream
        default_rng([seed, RESTART_STREAM]) (`restart_latents`).
    solver : str
        The LP backend of the projections, a name in `layerinv.solvers.names()` (as `invert`).

    Returns
    -------
    Inversion with method 'pgd', status one of PGD_STATUSES ('max_steps': max_iter steps ran
    out) and history the measurement loss per iteration of the start kept.
    """
    started = time.perf_counter()
    if not isinstance(net, Network):
        raise InputError(f"net must be a layerinv.Network; got {type(net).__name__}")
    if not (isinstance(measurement, Measurement) and (measurement.linear or measurement.magnitude)):
        raise InputError(f"pgd needs a linear measurement or a Magnitude; got {measurement!r}")
    measurement = measurement.resolved(net.output_dim)
    magnitude = measurement.magnitude
    batch, single = check_batch(y, measurement.out_dim, "y")
    matrix = np.asarray(measurement.matrix, dtype=np.float64)
    opts = _PGDOptions(
        projection=check_choice(projection, PROJECTIONS, "projection"),
        max_iter=_check_int(max_iter, "max_iter", 1),
        tol=check_positive(tol, "tol"),
        step=_default_step(net.output_dim, matrix) if step is None
        else check_positive(step, "step"),
        max_halvings=_check_int(max_halvings, "max_halvings", 0),
        polish=_check_bool(polish, "polish"),
        polish_steps=_check_int(polish_steps, "polish_steps", 1),
        restarts=_check_int(restarts, "restarts", 1),
        fit_tol=check_positive(fit_tol, "fit_tol", allow_zero=True),
        seed=_check_seed(seed),
        solver=check_choice(solver, solvers.names(), "solver"),
    )
    success_tol = check_positive(success_tol, "success_tol")
    problem = _Problem(net, matrix, magnitude, opts)
    bar = tqdm(total=len(batch), desc="reconstruct (pgd)", unit="sample", leave=False,
               disable=progress is False, delay=0.0 if progress else 2.0)
    zs, statuses, histories = [], [], []
    with single_threaded_blas(), bar:
        for y_b in batch:
            z_b, status_b, history_b = problem.solve(y_b)
            zs.append(z_b)
            statuses.append(status_b)
            histories.append(history_b)
            bar.update()
    z = np.array(zs)
    out = measurement.apply(net.forward(z))
    residual = np.max(np.abs(out - batch), axis=1)
    success = residual <= success_tol * np.max(np.abs(batch), axis=1)
    seconds = time.perf_counter() - started
    return Inversion.from_batch(z, success, statuses, [[] for _ in zs], residual, seconds,
                                "pgd", histories, single=single)


class _Problem:
    """One network and one A: solves sample by sample."""

    def __init__(self, net: Network, matrix: np.ndarray, magnitude: bool, opts: _PGDOptions):
        self.net, self.A, self.magnitude, self.opts = net, matrix, magnitude, opts

    # -- pieces
    def project(self, v: np.ndarray) -> np.ndarray:
        """z of the layer-wise LP for the point v, or of the pattern method's l2 fit to it
        (projection='pattern'); not certified."""
        if self.opts.projection == "pattern":
            # The l2 projection onto the range on activation regions (a local one, seeded;
            # no l_inf start: the LP at every step tripled the time, measured at m = 20).
            return invert_pattern(self.net, v, starts=PATTERN_PROJECTION_STARTS, hops=0,
                                  seed=0, progress=False).z
        # joint=False: a projection of a point off the range is expected not to be unique;
        # the joint solve would refit it on regions at every step (the polish does that once).
        return invert(self.net, v, self.opts.projection, certify=False, progress=False,
                      solver=self.opts.solver, joint=False).z

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        ax = self.A @ x
        return float(np.linalg.norm(y - (np.abs(ax) if self.magnitude else ax)))

    def polish(self, z: np.ndarray, target: np.ndarray, y: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, float]:
        """Gauss-Newton on ||target - A G(z)||, steps kept while the loss on y decreases."""
        x = self.net.forward(z)
        f = self.loss(x, y)
        if not self.opts.polish:
            return z, x, f
        for _ in range(self.opts.polish_steps):
            x_lin, jac = linearise(self.net, z)
            d = np.linalg.lstsq(self.A @ jac, target - self.A @ x_lin, rcond=None)[0]
            z_new = z + d
            x_new = self.net.forward(z_new)
            f_new = self.loss(x_new, y)
            if not f_new < f:
                break
            z, x, f = z_new, x_new, f_new
            if f <= ROUNDOFF * max(np.linalg.norm(y), 1e-300):
                break
        return z, x, f

    # -- one sample
    def solve(self, y: np.ndarray) -> tuple[np.ndarray, Status, np.ndarray]:
        opts = self.opts
        randoms = restart_latents(opts.seed, opts.restarts - 1, self.net.input_dim)
        scale = float(np.linalg.norm(y))
        best: tuple[float, np.ndarray, Status, np.ndarray] | None = None
        for r in range(opts.restarts):
            z0 = self.first_start(y) if r == 0 else randoms[r - 1]
            z, status, history = self.run(z0, y)
            if best is None or history[-1] < best[0]:
                best = (history[-1], z, status, history)
            if history[-1] <= opts.fit_tol * scale:
                break
        assert best is not None
        return best[1], best[2], best[3]

    def first_start(self, y: np.ndarray) -> np.ndarray:
        if not self.magnitude:
            return self.project(self.A.T @ y)
        u = spectral_direction(self.A, y)
        size = np.sqrt(np.sum(y * y) * self.A.shape[1] / np.sum(self.A * self.A))
        candidates = [self.project(sign * size * u) for sign in (1.0, -1.0)]
        return min(candidates, key=lambda z: self.loss(self.net.forward(z), y))

    def run(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, Status, np.ndarray]:
        opts, A = self.opts, self.A
        floor = ROUNDOFF * max(float(np.linalg.norm(y)), 1e-300)
        target = self.targets(z, y)
        z, x, f = self.polish(z, target, y)
        history = [f]
        eta = opts.step
        status = Status.MAX_STEPS
        for _ in range(opts.max_iter):
            if f <= floor:
                status = Status.CONVERGED
                break
            target = self.targets(z, y) if self.magnitude else y
            direction = A.T @ (target - A @ x)
            for _halving in range(opts.max_halvings + 1):
                z_new, x_new, f_new = self.polish(self.project(x + eta * direction), target, y)
                if f_new <= f * (1.0 + 1e-12):
                    break
                eta /= 2.0
            else:
                status = Status.STALLED
                break
            change = np.linalg.norm(x_new - x) / max(float(np.linalg.norm(x)), 1e-300)
            z, x, f = z_new, x_new, f_new
            history.append(f)
            eta = min(2.0 * eta, opts.step)
            if change < opts.tol:
                status = Status.CONVERGED
                break
        return z, status, np.array(history)

    def targets(self, z: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The linear measurements: y itself, or y with the signs of A G(z) (Magnitude)."""
        if not self.magnitude:
            return y
        signs = np.sign(self.A @ self.net.forward(z))
        signs[signs == 0] = 1.0
        return signs * y


def restart_latents(seed: int | None, count: int, k: int) -> np.ndarray:
    """The random restarts' latents, (count, k): standard normal rows from the tagged stream
    default_rng([seed, RESTART_STREAM]) (fresh entropy for seed None)."""
    rng = np.random.default_rng(None if seed is None else [seed, RESTART_STREAM])
    return rng.standard_normal((count, k))


def spectral_direction(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unit leading eigenvector of (1/m) sum_i y_i^2 a_i a_i^T (a_i the rows of A)."""
    m, n = A.shape
    if n <= 2000:
        gram = (A.T * (y * y)) @ A / m
        return np.linalg.eigh(gram)[1][:, -1]
    from scipy.sparse.linalg import LinearOperator, eigsh

    op = LinearOperator((n, n), matvec=lambda v: A.T @ ((y * y) * (A @ v)) / m,
                        dtype=np.float64)
    return eigsh(op, k=1, which="LA")[1][:, 0]


def linearise(net: Network, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """G(z) and the Jacobian dG/dz at z, shape (n, k). For ReLU nets G(z + d) = G(z) + J d
    while no unit changes sign (a ReLU at exactly 0 counts as off)."""
    h = np.asarray(z, dtype=np.float64)
    jac = np.eye(h.size)
    for layer in net.layers:
        u = layer.preactivation(h[None])[0]
        out = layer.activation.forward(u)
        jac = layer.activation.derivative(u, out)[:, None] * layer.operator.matmat(jac)
        h = out
    return h, jac


def _default_step(n: int, matrix: np.ndarray) -> float:
    """eta_0 = n / ||A||_F^2; an A whose squares underflow has no step (nor a useful fit)."""
    squares = float(np.sum(matrix * matrix))
    if not squares > 0 or not np.isfinite(n / squares):
        raise InputError(f"A (the measurement matrix) must have ||A||_F^2 > 0 in float64 to "
                         f"take a gradient step; got ||A||_F = {np.linalg.norm(matrix):.3g}: "
                         f"rescale A and y together")
    return n / squares


def _check_int(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InputError(f"{name} must be an int >= {low}; got {value!r}")
    return int(value)


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise InputError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def _check_seed(seed: object) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise InputError(f"seed must be an int or None; got {seed!r}")
    return None if seed is None else int(seed)
