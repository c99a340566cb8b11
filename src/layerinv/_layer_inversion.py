"""One layer's inversion: given estimates y of act(W h + b), one per sample, find each h.

The entry point `invert_layer_batch` takes a whole batch of observations of one layer. Each
sample's inversion is its own (`_invert_one`: thresholds, the least-squares shortcut, the LP
and its re-classification passes, the report and certificate, as below); what the batch
shares is the solver: every round, the LPs of all samples still at work go to the backend in
one `solvers.solve_many` call, so a batched backend sees them together.

Methods (Lei et al. 2019):
- exact (eq. 4): least squares on the rows that pin the pre-activation (ReLU: y > threshold;
  every row for the invertible activations), then a check of the one-sided rows and of the
  bounds on h. An LP (l_inf) only where that is rank-deficient or inconsistent.
- linf (eq. 5): one slack t for all rows, minimised by the LP.
- l1 (eq. 6): one slack per row, their sum minimised.

The active threshold. Rows whose observation is within the threshold of a kink are ambiguous.
A stated noise bound e is the threshold itself (the rows then split exactly: the LP's feasible
set at t = e is the set of h that fit within e). With no stated noise it starts at
active_tol * max|y| and is raised for ReLU to twice the largest negative excursion of y: a
ReLU never outputs below 0, so -min(y) is a lower estimate of the noise amplitude read off the
observation itself (never off the ground truth).
For l_inf without a stated noise bound, the slack t the LP finds is the measured noise level:
where re-classifying the rows at t can change the answer (`_reclassifying_helps`), the LP is
solved again at that threshold (at most `max_passes` solves) and the solution with the smallest
achieved residual is kept.

A stated bound is reported contradicted ('noise_bound_violated') only when it is: the l_inf
LP's optimum exceeds it beyond the solver's accuracy (`solvers.proves_slack_above`) and the best
fit then found does not meet it either. By the same rule, the exact method reports
'not_realizable' only when the l_inf LP's optimal slack exceeds zero beyond the solver's
accuracy (`_beyond_accuracy`): an all-zero ReLU observation, realizable by h = 0, gave slack
2e-10 at accuracy 1.9e-10 and was called not realizable.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np

from layerinv import _linalg as linalg
from layerinv import solvers
from layerinv.activations import Band
from layerinv.network import Layer
from layerinv.results import LAYER_STATUSES, LayerReport, Status

METHODS = ("exact", "linf", "l1")


@dataclass(frozen=True)
class LayerOptions:
    method: str = "linf"
    solver: str = "auto"
    active_tol: float = 1e-6
    rtol: float = 1e-9
    max_passes: int = 3
    certify: bool = True


def invert_layer_batch(layer: Layer, ys: Sequence[np.ndarray], h_low: np.ndarray,
                       h_high: np.ndarray, options: LayerOptions, index: int,
                       noise: float | None, error_levels: Sequence[float],
                       incomings: Sequence[float | None], *, n_jobs: int | None = None,
                       done: Callable[[int], object] | None = None
                       ) -> list[tuple[np.ndarray, LayerReport]]:
    """Invert one layer for a batch of observations ys (each (n_out,)); h in [h_low, h_high].

    Each sample is inverted as by itself (`_invert_one`, a generator that hands out its LPs
    one at a time); the samples only share the solver calls: in every round, the LPs that all
    samples still at work need are solved in ONE `solvers.solve_many(problems, solver,
    n_jobs=n_jobs)` call, and each answer goes back to its sample. Round 1 holds every sample
    whose least-squares point does not fit; later rounds the re-classification passes and the
    best fits of contradicted noise bounds. `done(1)` is called as each sample finishes.

    `noise` is a bound stated by the user (output layer only). `error_levels[i]` bounds the
    error of ys[i] when it is itself an estimate handed down from the layer above (0 if not):
    entries of y below it are treated as ambiguous (an LP's answer is an interior point of its
    optimal face, whose inactive units come back as small positives, not zeros).
    `incomings[i]` bounds ||y - act(W h* + b)||_inf for the true h* (the certificate's input);
    None means "assume the eps found", the only estimate there is at an output layer with no
    stated noise.

    A report's `seconds` is the sample's own: the time of its steps here plus the solver's
    `seconds` for each of its LPs (not the wall time of the batch's calls).
    """
    n = len(ys)
    runs = [_invert_one(layer, y, h_low, h_high, options, index, noise, level, incoming)
            for y, level, incoming in zip(ys, error_levels, incomings, strict=True)]
    answers: list[tuple[np.ndarray, LayerReport] | None] = [None] * n
    seconds = [0.0] * n
    waiting: dict[int, solvers.LayerProblem] = {}

    def step(i: int, result: solvers.LPResult | None) -> None:
        started = time.perf_counter()
        try:
            waiting[i] = runs[i].send(result)
        except StopIteration as finished:
            answers[i] = finished.value
        seconds[i] += time.perf_counter() - started
        if result is not None:
            seconds[i] += result.seconds
        if answers[i] is not None:
            answers[i][1].seconds = seconds[i]
            if done is not None:
                done(1)

    for i in range(n):
        step(i, None)
    while waiting:
        order, problems = list(waiting), list(waiting.values())
        waiting.clear()
        results = solvers.solve_many(problems, options.solver, n_jobs=n_jobs)
        for i, result in zip(order, results, strict=True):
            step(i, result)
    return answers  # type: ignore[return-value]  # every sample has finished


# A sample's inversion is a generator: it yields each LayerProblem it needs solved, is sent the
# LPResult, and returns (h, report). So the per-sample logic reads as straight code while the
# batch driver above collects one round of LPs over all samples.
_Solving = Generator[solvers.LayerProblem, solvers.LPResult, tuple[np.ndarray, LayerReport]]


def _invert_one(layer: Layer, y: np.ndarray, h_low: np.ndarray, h_high: np.ndarray,
                options: LayerOptions, index: int, noise: float | None, error_level: float,
                incoming: float | None) -> _Solving:
    """One observation's inversion (see `invert_layer_batch`), its LPs yielded."""
    scale = max(float(np.abs(y).max()), 1e-300)
    own = _initial_threshold(layer, y, noise, options.active_tol * scale)
    # The threshold without the stated bound (used if the bound turns out contradicted).
    unbounded = own if noise is None else _initial_threshold(layer, y, None,
                                                              options.active_tol * scale)
    context = _Context(layer, y, h_low, h_high, options, index, noise, own, incoming,
                       max(unbounded, error_level))
    threshold = max(own, error_level)
    band = layer.activation.band(y, threshold)
    h, full_rank, normal = _least_squares(layer, band)
    tol = options.rtol * scale
    start = h if full_rank else None  # the first LP's band is this band: its start
    if h is not None and _violation(layer, band, y, h, h_low, h_high, noise or 0.0) <= tol:
        # The least-squares point fits every row to within round-off (within the stated bound,
        # if any): it is an optimal point of eq. (4), (5) and (6) alike, since each of their
        # optimal values is >= 0 (with a bound: a point that meets it).
        report = context.report(h, Status.OPTIMAL, "lstsq", 0, 0.0, full_rank=full_rank,
                                normal=(band.two_sided, normal))
    elif options.method == "exact":
        # Not realizable or not unique (or the least-squares point misses round-off): the l_inf
        # LP gives the closest fit and decides which (`_solve_lp`).
        h, report = yield from _solve_lp(context, threshold, "linf", start)
        report.method = "exact"
    else:
        h, report = yield from _solve_lp(context, threshold, options.method, start)
    return h, report


@dataclass(frozen=True)
class _Context:
    """One layer solve's fixed inputs, and how its report is made."""

    layer: Layer
    y: np.ndarray
    h_low: np.ndarray
    h_high: np.ndarray
    options: LayerOptions
    index: int
    noise: float | None
    own_threshold: float
    """The ambiguity threshold from y alone (no error level from above)."""
    incoming: float | None
    unbounded_threshold: float
    """The starting threshold if the stated noise bound turns out to be contradicted."""

    def report(self, h: np.ndarray, status: Status, solver: str, iterations: int,
               objective: float, message: str = "", full_rank: bool | None = None,
               normal: tuple[np.ndarray, np.ndarray | None] | None = None) -> LayerReport:
        """The report of answer h; `normal` = (rows, W_rows' W_rows) formed already, if any."""
        layer = self.layer
        eps = _residual(layer, h, y=self.y)
        # Rows unambiguous at the fit found pin the pre-image (DESIGN: y_j > eps is a band).
        band = layer.activation.band(self.y, max(self.own_threshold, eps))
        n_active = int(band.two_sided.sum())
        pinned_gram = _reused_gram(band, normal)
        pinned = None  # the scaled pinned rows, copied only where something reads them
        if solver != "lstsq" or (pinned_gram is None and self.options.certify):
            pinned = _pinned_rows(layer, band)
            if pinned_gram is None:
                pinned_gram = self._pinned_gram(pinned, solver)
        worst = np.inf  # ||W_A^+||_inf, computed where the pseudo-inverse is formed anyway
        if solver == "lstsq":
            unique, estimate = bool(full_rank) and n_active >= layer.n_in, 0.0
        else:
            worst, typical = linalg.pinv_norms(pinned, pinned_gram)
            unique = bool(np.isfinite(typical))
            estimate = 2 * eps * typical
        sigma_min, bound = float("nan"), float("nan")
        if self.options.certify:
            # A Gram is formed or reused only where W_A has at least as many rows as columns.
            sigma_min = (linalg.sigma_min_of_gram(pinned_gram) if pinned_gram is not None
                         else linalg.smallest_singular_value(pinned))
            unique = unique and sigma_min > 0
            # |W_A (h - h*)| <= eps + incoming row by row; two valid bounds, keep the smaller.
            slack = eps + (eps if self.incoming is None else self.incoming)
            bound = min(np.sqrt(n_active) / sigma_min, worst) * slack if unique else np.inf
        if status == Status.OPTIMAL and not unique:
            status = Status.NOT_UNIQUE
            message = message or (f"{n_active} pinned rows for {layer.n_in} unknowns, or "
                                  f"rank-deficient: this layer's pre-image is not unique")
        return LayerReport(layer=self.index, method=self.options.method, status=status,
                           eps=eps, objective=float(objective), n_active=n_active,
                           n_inputs=layer.n_in, unique=unique, sigma_min=sigma_min,
                           error_bound=bound,
                           error_estimate=estimate if unique else float("inf"), solver=solver,
                           iterations=iterations, seconds=0.0, message=message)


    def _pinned_gram(self, pinned: np.ndarray, solver: str) -> np.ndarray | None:
        """W_A' W_A, formed once for both the pseudo-inverse norms and sigma_min; None where
        nothing needs it or W_A is too short."""
        needed = solver != "lstsq" or self.options.certify
        if not needed or pinned.shape[0] < pinned.shape[1]:
            return None
        return linalg.gram(pinned)

def _reused_gram(band: Band, normal: tuple[np.ndarray, np.ndarray | None] | None
                 ) -> np.ndarray | None:
    """The Gram least squares formed (`normal` = (rows, W_rows' W_rows)), where it is W_A' W_A:
    the same rows and every slope 1 (its rows are unscaled). Else None."""
    if (normal is not None and np.array_equal(normal[0], band.two_sided)
            and bool(np.all(band.lower_slope[band.two_sided] == 1.0))):
        return normal[1]
    return None


# The largest negative excursion of a ReLU observation estimates the noise amplitude from below
# (the largest of ~300 draws falls just short of it). At 1x, a zero row whose noise landed just
# above the estimate was pinned and inflated t 30-fold (2 of 3 measured 10 x 250 x 600
# instances, noise 1e-3); 2x covers the spread at the cost of at most a row or two.
EXCURSION_FACTOR = 2.0


def _initial_threshold(layer: Layer, y: np.ndarray, noise: float | None, floor: float) -> float:
    if noise is not None:
        # A stated bound e splits the rows exactly: with threshold e the LP's feasible set at
        # t = e is the set of h with ||act(W h + b) - y||_inf <= e (ReLU and LeakyReLU), so
        # the bound is contradicted exactly when the LP needs t > e. A larger threshold (the
        # active_tol floor) would make LeakyReLU rows with 0 < y <= threshold infeasible at
        # t = 0 and report realizable data as contradicting noise=0.
        return noise
    # What y alone proves about the noise (ReLU: its largest negative excursion), doubled.
    return max(floor, EXCURSION_FACTOR * layer.activation.noise_floor(y))


def _pinned_rows(layer: Layer, band: Band) -> np.ndarray:
    """The rows of W that pin the pre-activation, scaled to output units.

    For LeakyReLU's negative side and for sigmoid/tanh a unit of output error is
    `lower_slope` units of pre-activation error, so the rows are divided by it.
    """
    rows = band.two_sided
    return layer.operator.rows(rows) / band.lower_slope[rows, None]


def _least_squares(layer: Layer, band: Band
                   ) -> tuple[np.ndarray | None, bool, np.ndarray | None]:
    rows = band.two_sided
    if not rows.any():
        # No row pins the pre-activation: the minimum-norm solution of the empty system is
        # h = 0, a candidate the caller checks like any other. Without it an all-zero ReLU
        # observation (realizable by h = 0) went to the interior point, whose answer missed
        # noise=0 by its accuracy (eps 8e-12 where 0 is reachable).
        return np.zeros(layer.n_in), False, None
    bias = 0.0 if layer.bias is None else layer.bias[rows]
    return linalg.least_squares(layer.operator.rows(rows), band.center[rows] - bias)


def _violation(layer: Layer, band: Band, y: np.ndarray, h: np.ndarray, h_low: np.ndarray,
               h_high: np.ndarray, t: float) -> float:
    """The largest amount by which h breaks a band row at slack t, a bound, or a slack floor."""
    outside_box = max(np.max(h_low - h, initial=0.0), np.max(h - h_high, initial=0.0))
    if not layer.activation.exact_band:
        # First-order bands (sigmoid, tanh, elu) are not exact in t: compare in output space.
        return max(outside_box, _residual(layer, h, y) - t)
    u = layer.preactivation(h[None, :])[0]
    lo, hi = band.at(t)
    worst = max(np.max(lo - u, initial=0.0), np.max(u - hi, initial=0.0), outside_box,
                float(band.t_floor.max(initial=0.0)) - t)
    return max(worst, 0.0)


def _residual(layer: Layer, h: np.ndarray, y: np.ndarray) -> float:
    return float(np.max(np.abs(layer(h[None, :])[0] - y)))


def _solve_lp(context: _Context, threshold: float, norm: str,
              start: np.ndarray | None = None) -> _Solving:
    """The LP passes of one sample; `start` is the least-squares solution of the pinned rows
    at `threshold` (the first pass's band), handed to the backend so it is not formed twice."""
    layer, y, noise, options = context.layer, context.y, context.noise, context.options
    passes = 1 if (noise is not None or norm == "l1") else options.max_passes
    base_threshold = threshold
    best: solvers.LPResult | None = None
    best_eps, iterations = np.inf, 0
    for _ in range(passes):
        band = layer.activation.band(y, threshold)
        result = yield solvers.LayerProblem(layer.operator, layer.bias, band, context.h_low,
                                            context.h_high, norm, t_max=noise,
                                            pinned_solution=start)
        start = None  # a later pass re-classifies the rows: its band pins other rows
        if result.status == "infeasible" and noise is not None:
            # The LP proves the stated noise bound contradicted (solvers.solve_many): report
            # it, and still return the best fit, found as if no bound had been stated.
            unbounded = dataclasses.replace(context, noise=None,
                                            own_threshold=context.unbounded_threshold)
            h, report = yield from _solve_lp(unbounded, context.unbounded_threshold, norm)
            if report.eps <= noise + options.rtol * float(np.abs(y).max()):
                # The fit returned meets the bound after all (sigmoid and tanh bands are only
                # first order in t): a witness outranks the LP's claim.
                return h, report
            if report.status != Status.SOLVER_ERROR:  # the contradiction is the bigger news
                report.status = Status.NOISE_BOUND_VIOLATED
            report.message = result.message
            return h, report
        iterations += result.iterations
        eps = _residual(layer, result.h, y)
        if best is None or (result.status == "optimal" and eps < best_eps):
            best, best_eps, best_band = result, eps, band
        if result.status != "optimal":
            break
        # The slack found is the measured noise level: re-classify the rows at it, if that
        # can change the answer.
        new_threshold = max(base_threshold, float(result.t.max()))
        if not _reclassifying_helps(layer, y, band, result, eps, new_threshold):
            break
        threshold = new_threshold
    assert best is not None
    status = Status(best.status) if best.status in LAYER_STATUSES else Status.SOLVER_ERROR
    report = context.report(best.h, status, best.solver, iterations, best.objective,
                            best.message)
    if (options.method == "exact" and report.status == Status.OPTIMAL
            and _beyond_accuracy(context, best_band, best)):
        # Eq. (4) has no answer: the closest fit needs a slack the solver's accuracy does not
        # explain. (Within it, the fit found is the exact answer to that accuracy.)
        report.status = Status.NOT_REALIZABLE
    return best.h, report


def _beyond_accuracy(context: _Context, band: Band, result: solvers.LPResult) -> bool:
    """Whether the l_inf LP's answer proves that no h fits the band at slack 0."""
    problem = solvers.LayerProblem(context.layer.operator, context.layer.bias, band,
                                   context.h_low, context.h_high, "linf")
    return solvers.proves_slack_above(problem, result, 0.0)


def _reclassifying_helps(layer: Layer, y: np.ndarray, band: Band, result: solvers.LPResult,
                         eps: float, threshold: float) -> bool:
    """Whether re-classifying at `threshold` (the slack t found) can change the answer.

    It can if the answer breaks the exact band at t somewhere (a one-sided row whose y turned
    out to exceed t: eps > t), or if a row that would lose its pin has a binding lower end (its
    pin is what holds t up). Otherwise h is a local optimum of the exact l_inf fit: stop.
    Measured: this stops after one solve on most noisy instances, where always re-solving
    ran 3 solves on 11 of 20 110 x 250 x 600 instances.
    """
    t = float(result.t.max())
    scale = float(np.abs(y).max())
    new_pins = layer.activation.band(y, threshold).two_sided
    if np.array_equal(new_pins, band.two_sided):
        return False  # the same split: the same LP
    if eps > t * (1 + 1e-6) + 1e-12 * scale:
        return True
    losing_pin = band.two_sided & ~new_pins
    if not losing_pin.any():
        return False
    u = layer.preactivation(result.h[None, :])[0]
    lower, _ = band.at(t)
    binding = (u - lower)[losing_pin] <= 1e-4 * t + 1e-12 * scale
    return bool(binding.any())
