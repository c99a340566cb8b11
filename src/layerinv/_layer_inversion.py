"""One layer's inversion: given estimates y of act(W h + b), one per sample, find each h.

The entry point `invert_layer_batch` takes a whole batch of observations of one layer. Each
sample's inversion is its own (thresholds, the least-squares shortcut, the LP and its
re-classification passes, the report and certificate, as below); what the batch shares is the
solver: the least-squares shortcut of every sample is one `Backend.pinned_least_squares` call
(`_shortcut`), and every round, the LPs of all samples still at work go to the backend in one
`solvers.solve_many` call (`_by_lp`), so a batched backend sees them together.

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
from layerinv._blas import single_threaded_blas
from layerinv.activations import Band
from layerinv.network import Layer
from layerinv.results import LAYER_STATUSES, LayerReport, Status
from layerinv.solvers.problem import PinnedFit

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

    First the least-squares shortcut for the whole batch (`_shortcut`): each sample's
    thresholds and band, built once; ONE `pinned_least_squares` call of the solver backend
    for all samples (the least-squares point of each band's pinned rows, and what its Cholesky
    factor certifies); each point checked against its band with one layer forward. The samples
    whose point fits finish there, with their report. Each of the others is inverted by LPs as
    by itself (`_by_lp`, a generator that hands out its LPs one at a time, started from the
    point found); the samples only share the solver calls: in every round, the LPs that all
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

    A report's `seconds` is the sample's own: its share of the batch's shortcut (the backend
    call split evenly, its own check and report), the time of its LP steps here, and the
    solver's `seconds` for each of its LPs (not the wall time of the batch's calls).
    """
    n = len(ys)
    answers: list[tuple[np.ndarray, LayerReport] | None] = [None] * n
    seconds = [0.0] * n
    runs: dict[int, _Solving] = {}
    waiting: dict[int, solvers.LayerProblem] = {}

    def finish(i: int, answer: tuple[np.ndarray, LayerReport]) -> None:
        answers[i] = answer
        answer[1].seconds = seconds[i]
        if done is not None:
            done(1)

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
            finish(i, answers[i])

    # The BLAS thread limit once for the whole call (the walk holds it already: then free).
    with single_threaded_blas():
        for i, (outcome, spent) in enumerate(_shortcut(layer, ys, h_low, h_high, options,
                                                       index, noise, error_levels,
                                                       incomings)):
            seconds[i] = spent
            if isinstance(outcome, tuple):
                finish(i, outcome)
            else:
                runs[i] = outcome
                step(i, None)
        while waiting:
            order, problems = list(waiting), list(waiting.values())
            waiting.clear()
            results = solvers.solve_many(problems, options.solver, n_jobs=n_jobs)
            for i, result in zip(order, results, strict=True):
                step(i, result)
    return answers  # type: ignore[return-value]  # every sample has finished


# A sample's LP inversion is a generator: it yields each LayerProblem it needs solved, is sent
# the LPResult, and returns (h, report). So the per-sample logic reads as straight code while
# the batch driver above collects one round of LPs over all samples.
_Solving = Generator[solvers.LayerProblem, solvers.LPResult, tuple[np.ndarray, LayerReport]]


@dataclass(frozen=True)
class _Start:
    """One sample's shortcut inputs: its context, its threshold and band (built once)."""

    context: _Context
    threshold: float
    band: Band


def _shortcut(layer: Layer, ys: Sequence[np.ndarray], h_low: np.ndarray, h_high: np.ndarray,
              options: LayerOptions, index: int, noise: float | None,
              error_levels: Sequence[float], incomings: Sequence[float | None]
              ) -> list[tuple[tuple[np.ndarray, LayerReport] | _Solving, float]]:
    """The least-squares shortcut of a whole batch: per sample, (its answer, or its LP run not
    yet started; the seconds it took). The backend's batch call is shared out evenly."""
    started = time.perf_counter()
    starts = [_start(layer, y, h_low, h_high, options, index, noise, level, incoming)
              for y, level, incoming in zip(ys, error_levels, incomings, strict=True)]
    fits = _pinned_fits(layer, [start.band for start in starts], options)
    share = (time.perf_counter() - started) / max(len(starts), 1)
    outcomes = []
    for start, fit in zip(starts, fits, strict=True):
        began = time.perf_counter()
        outcomes.append((_finish_or_lp(start, fit, noise, options),
                         share + time.perf_counter() - began))
    return outcomes


def _start(layer: Layer, y: np.ndarray, h_low: np.ndarray, h_high: np.ndarray,
           options: LayerOptions, index: int, noise: float | None, error_level: float,
           incoming: float | None) -> _Start:
    scale = max(float(np.abs(y).max()), 1e-300)
    own = _initial_threshold(layer, y, noise, options.active_tol * scale)
    # The threshold without the stated bound (used if the bound turns out contradicted).
    unbounded = own if noise is None else _initial_threshold(layer, y, None,
                                                              options.active_tol * scale)
    context = _Context(layer, y, h_low, h_high, options, index, noise, own, incoming,
                       max(unbounded, error_level))
    threshold = max(own, error_level)
    return _Start(context, threshold, layer.activation.band(y, threshold))


def _finish_or_lp(start: _Start, fit: PinnedFit, noise: float | None,
                  options: LayerOptions) -> tuple[np.ndarray, LayerReport] | _Solving:
    """The sample's answer where its least-squares point fits; else its LP run."""
    context = start.context
    h = fit.h
    if h is not None:
        tol = options.rtol * max(float(np.abs(context.y).max()), 1e-300)
        violation, eps = _violation_and_residual(context.layer, start.band, context.y, h,
                                                 context.h_low, context.h_high, noise or 0.0)
        if violation <= tol:
            # The least-squares point fits every row to within round-off (within the stated
            # bound, if any): it is an optimal point of eq. (4), (5) and (6) alike, since each
            # of their optimal values is >= 0 (with a bound: a point that meets it).
            return h, context.report(h, Status.OPTIMAL, "lstsq", 0, 0.0, eps=eps,
                                     fit=(start, fit))
    # The first LP's band is this band: the point is its start.
    return _by_lp(start, h if fit.full_rank else None)


def _by_lp(start: _Start, point: np.ndarray | None) -> _Solving:
    """One sample's LP inversion, from its shortcut's band and least-squares point."""
    context = start.context
    if context.options.method == "exact":
        # Not realizable or not unique (or the least-squares point misses round-off): the l_inf
        # LP gives the closest fit and decides which (`_solve_lp`).
        h, report = yield from _solve_lp(context, start.threshold, "linf", point, start.band)
        report.method = "exact"
        return h, report
    return (yield from _solve_lp(context, start.threshold, context.options.method, point,
                                 start.band))


def _pinned_fits(layer: Layer, bands: list[Band], options: LayerOptions
                 ) -> list[PinnedFit]:
    """Least squares on each band's pinned rows: one call of the backend for the batch."""
    # The backend certifies only where its bounds are the report's: every pinned row of slope
    # 1 (its rows are W's own; LeakyReLU's negative side and sigmoid/tanh are scaled).
    certify = options.certify and all(_unit_slopes(band) for band in bands)
    return solvers.get(options.solver).pinned_least_squares(layer.operator, layer.bias, bands,
                                                            certify)


def _unit_slopes(band: Band) -> bool:
    """Whether every pinned row of the band has slope 1 (W's rows are then in output units)."""
    return bool(np.all(band.lower_slope[band.two_sided] == 1.0))


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
               objective: float, message: str = "", *, eps: float | None = None,
               fit: tuple[_Start, PinnedFit] | None = None) -> LayerReport:
        """The report of answer h and its certificate.

        `eps`: h's residual where the caller has it; `fit`: the least-squares fit of the
        shortcut (its band and `PinnedFit`), whose bounds are reused where they certify the
        report's pinned rows.

        The certificate. A is the set of rows unambiguous at the fit found (the band at
        max(own threshold, eps)), each row divided by its band slope (output units), W_A the
        pinned submatrix and R its Cholesky factor. On a row of A our answer fits within eps
        and the truth within `incoming`, both on the linear piece of the band (at the output
        layer under a stated bound, since the threshold is that bound; below it, assumed), so
        ||W_A (h - h*)||_inf <= s := eps + incoming, ||W_A (h - h*)||_2 <= sqrt(|A|) s and
        |(h - h*)_i| <= ||row i of W_A^+||_2 sqrt(|A|) s, row i of W_A^+ having the norm of
        row i of R^-1 (`_linalg.inverse_factor_bounds`): error_bound = sqrt(|A|) s
        max_i ||row i of R^-1||_2, never above the eigen-solve's sqrt(|A|) s / sigma_min it
        replaced (the largest row norm is at most ||R^-1||_2 = 1 / sigma_min). R is the
        least-squares shortcut's own factor where the report's rows are its rows, all of slope
        1 (ReLU; `PinnedFit`), else formed here from the scaled rows.
        `sigma_min` is the proven lower bound of `inverse_factor_bounds` (0.30-0.99 of the
        true value, median 0.59, on 378 test inversions); `unique` needs it > 0.
        `error_estimate` = 2 eps max_i ||row i of R^-1||_2, the typical size.

        Decision: LP answers no longer take ||W_A^+||_inf s, the tightest bound
        (|(h - h*)_i| <= ||row i of W_A^+||_1 s, and ||row||_1 <= sqrt(|A|) ||row||_2). It
        needs W_A^+ itself, n x m: as the m x n solve it was, 5.5 ms per (600, 250) layer
        (+10.7 % on a noisy 110 x 250 x 600 linf inversion), as two triangular products
        with R^-1 still 2.2 ms, against 1.0-1.3 ms for R^-1 alone. Without it the bound is
        1.29x the old one per LP layer (median; 0.58-2.0x) and 1.47x on z, where it is ~70x
        (median) above the true error anyway; least-squares answers get 0.54x the old bound
        (0.41-0.80x). Measured on the 1,080 instances of tests/test_certificate_bounds.py.

        What it proves, and in which arithmetic: the bound holds for the h returned with
        eps and `incoming` taken as exact (their own rounding, ~(m + 2) u |W||h|, is of the
        size of the data's own rounding and is not added); the Gram, Cholesky and inverse
        are computed in float64 and carry `_linalg.rounding_margin` (first order in u).
        For sigmoid, tanh and ELU the slope scaling is first order (a linearisation, not a
        proof), as their bands are.
        """
        layer = self.layer
        if eps is None:
            eps = _residual(layer, h, y=self.y)
        # Rows unambiguous at the fit found pin the pre-image (DESIGN: y_j > eps is a band).
        threshold = max(self.own_threshold, eps)
        reused = fit is not None and fit[0].threshold == threshold
        band = fit[0].band if reused else layer.activation.band(self.y, threshold)
        n_active = int(band.two_sided.sum())
        certify = self.options.certify
        sigma_min, row_norm = float("nan"), float("inf")
        if solver == "lstsq":
            assert fit is not None
            unique, estimate = fit[1].full_rank and n_active >= layer.n_in, 0.0
            if certify:
                if reused and not np.isnan(fit[1].sigma_min) and _unit_slopes(band):
                    sigma_min, row_norm = fit[1].sigma_min, fit[1].inverse_row_norm
                else:
                    sigma_min, row_norm = _pinned_bounds(layer, band, n_active)
        else:
            unique, typical, sigma_min, row_norm = self._lp_bounds(band, n_active)
            estimate = 2 * eps * typical
        bound = float("nan")
        if not certify:
            sigma_min = float("nan")
        else:
            unique = unique and sigma_min > 0
            # |W_A (h - h*)| <= eps + incoming row by row.
            slack = eps + (eps if self.incoming is None else self.incoming)
            bound = np.sqrt(n_active) * row_norm * slack if unique else np.inf
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

    def _lp_bounds(self, band: Band, n_active: int) -> tuple[bool, float, float, float]:
        """An LP answer's (unique, typical row norm, sigma_min bound, row-norm bound) from the
        factor of its scaled pinned rows.

        `unique` is as before the certificate (a Cholesky, retried with regularisation,
        succeeds); only the unregularised factor certifies anything."""
        if n_active < self.layer.n_in:
            return False, float("inf"), 0.0, float("inf")
        pinned = _pinned_rows(self.layer, band)
        factor = linalg.factor_of_gram(linalg.gram(pinned))
        if factor is None:
            # Regularised (the Gram formed again: the failed factorisation overwrote it): an
            # estimate only, no certificate.
            factor = linalg.cholesky(linalg.gram(pinned))
            norms = None if factor is None else linalg.inverse_factor_norms(np.triu(factor),
                                                                            overwrite=True)
            if norms is None:
                return False, float("inf"), 0.0, float("inf")
            return True, norms.inverse_row_norm, 0.0, float("inf")
        norms = linalg.inverse_factor_norms(factor, overwrite=True)
        if norms is None:
            return False, float("inf"), 0.0, float("inf")
        sigma_min, row_norm, _ = linalg.margin_bounds(norms, n_active)
        return True, norms.inverse_row_norm, sigma_min, row_norm


def _pinned_bounds(layer: Layer, band: Band, n_active: int) -> tuple[float, float]:
    """(sigma_min bound, row-norm bound) of the band's scaled pinned rows; (0, inf) where
    they are too few or their unregularised Cholesky fails."""
    factor = linalg.gram_factor(_pinned_rows(layer, band))
    if factor is None:
        return 0.0, float("inf")
    return linalg.inverse_factor_bounds(factor, n_active, overwrite=True)


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
    pinned = layer.operator.rows(rows)
    # (Rows of slope 1, ReLU's, are W's own: not divided, no second n x m copy.)
    return pinned if _unit_slopes(band) else pinned / band.lower_slope[rows, None]


def _violation_and_residual(layer: Layer, band: Band, y: np.ndarray, h: np.ndarray,
                            h_low: np.ndarray, h_high: np.ndarray, t: float
                            ) -> tuple[float, float]:
    """(the largest amount by which h breaks a band row at slack t, a bound, or a slack
    floor; h's residual ||act(W h + b) - y||_inf), from one layer forward."""
    u = layer.preactivation(h[None, :])[0]
    eps = float(np.abs(layer.activation.forward(u) - y).max())
    # (Array methods, not np.max: its wrapper costs ~3 us a call. Both sides are non-empty.)
    outside_box = max(float((h_low - h).max()), float((h - h_high).max()), 0.0)
    if not layer.activation.exact_band:
        # First-order bands (sigmoid, tanh, elu) are not exact in t: compare in output space.
        return max(outside_box, eps - t), eps
    # At t = 0 (no stated bound) the band's ends are its arrays themselves, bitwise.
    lo, hi = (band.lower, band.upper) if t == 0.0 else band.at(t)
    worst = max(float((lo - u).max()), float((u - hi).max()), outside_box,
                float(band.t_floor.max()) - t)
    return max(worst, 0.0), eps


def _residual(layer: Layer, h: np.ndarray, y: np.ndarray) -> float:
    return float(np.max(np.abs(layer(h[None, :])[0] - y)))


def _solve_lp(context: _Context, threshold: float, norm: str,
              start: np.ndarray | None = None, first_band: Band | None = None) -> _Solving:
    """The LP passes of one sample; `start` is the least-squares solution of the pinned rows
    at `threshold` (the first pass's band, `first_band` where the caller has built it),
    handed to the backend so it is not formed twice."""
    layer, y, noise, options = context.layer, context.y, context.noise, context.options
    passes = 1 if (noise is not None or norm == "l1") else options.max_passes
    base_threshold = threshold
    best: solvers.LPResult | None = None
    best_eps, iterations = np.inf, 0
    for _ in range(passes):
        band = layer.activation.band(y, threshold) if first_band is None else first_band
        first_band = None
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
                            best.message, eps=best_eps)
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
