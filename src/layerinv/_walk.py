"""The backward walk: invert a whole network one layer at a time, all samples together (Lei
et al. 2019)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from layerinv import solvers
from layerinv._blas import single_threaded_blas
from layerinv._layer_inversion import METHODS, LayerOptions, invert_layer_batch
from layerinv._pattern import (
    PATTERN_OPTIONS,
    REFINED_STATUSES,
    check_pattern_network,
    invert_pattern,
    needs_refining,
    solve_jointly,
    takes_pattern,
)
from layerinv._validation import check_batch, check_choice, check_positive
from layerinv.errors import InputError
from layerinv.network import Network
from layerinv.results import GRADIENT_METHODS, STATUSES, Inversion, LayerReport, Status

# The walk keeps its fit when ||G(z) - x||_inf <= FIT_FACTOR * eps + FIT_FLOOR * max|x|, eps
# the output layer's fit. The floor is solver accuracy: interior-point answers are accurate to
# about 1e-9 of the data, and the layers below amplify it (realizable 20 x 250 x 400 data with
# a non-unique last layer: eps 9.6e-11 there, ||G(z) - x|| 1.3e-9). Measured on noisy data
# (uniform, 1e-4 and 1e-2 of max|x|; linf, l1, exact), every layer unique: at most 3.5 eps on
# 20 x 250 x 600 and 110 x 250 x 600 random nets, 8.2 eps on the shipped 20 x 60 x 784
# decoder, 10.4 eps once in 44 on that decoder with 30 % of its pixels. Where a non-unique
# layer hands down a point outside the range below (the decoder with 10 % of its pixels:
# 14-78 active outputs for 60 hidden units), 1e3-1e13 eps: ||G(z) - x|| about max|x|.
FIT_FACTOR = 10.0
FIT_FLOOR = 1e-6


PATTERN_METHODS = ("pattern", "auto")
ALL_METHODS = ("auto", *METHODS, "pattern", *GRADIENT_METHODS)


def invert(net: Network, x: object, method: str = "auto", *, noise: float | None = None,
           solver: str = "auto", active_tol: float = 1e-6, rtol: float = 1e-9,
           max_passes: int = 3, certify: bool = True, joint: bool = True,
           n_jobs: int | None = None, progress: bool | None = None,
           **options: Any) -> Inversion:
    """Invert G: find z with G(z) close to x, layer by layer and on activation regions.

    Parameters
    ----------
    net : Network
    x : array, shape (n,) or (B, n)
        Observations of the network's output.
    method : {'auto', 'exact', 'linf', 'l1', 'pattern', 'gd', 'lp+gd'}
        'exact', 'linf', 'l1': eq. (4), (5) or (6) of Lei et al. (2019), applied from the last
        layer back to z, the whole network solved jointly where a layer's pre-image is not
        unique (`joint`). 'pattern': the whole network fitted on activation regions
        (`_pattern.py`: Gauss-Newton from seeded starts and the l_inf answer, then a
        certified local search), for trained, non-expansive decoders and heavy noise.
        'auto' (the default): 'linf', then 'pattern' (l2) on the samples where noise is
        stated or found (the output layer's fit above rtol max|x|) or 'linf' is not
        optimal; 'pattern' alone where a layer has fewer outputs than inputs (a contracting
        layer, e.g. a convolutional generator's output: the walk cannot be unique there);
        'linf' alone where a hidden activation is smooth (the pattern method needs kinks).
        'gd' is gradient descent on the latent (`layerinv.baselines.gradient_descent`,
        preset 'bora2017' unless told otherwise); 'lp+gd' runs it with the l_inf answer as
        one more start.
    noise : float, optional
        A bound on ||x - G(z*)||_inf stated by the user. It is the active threshold of the
        last layer and bounds its slack. 'noise_bound_violated' is claimed only when the
        observation contradicts it: the smallest l_inf slack exceeds it by more than the
        solver's accuracy and the best fit does not meet it. Otherwise the last layer's fit
        meets it to the solver's accuracy (interior point about 1e-9 max|x|, HiGHS 1e-7).
        Hidden layers have no stated bound: their eps is found.
    solver : str
        A name in `layerinv.solvers.names()`: 'auto' (the structured interior point with HiGHS
        as its fallback), 'ipm', 'highs', 'cvxopt' or a registered backend.
    active_tol : float
        Relative threshold (times max|y|) under which an output counts as at the ReLU kink.
    rtol : float
        Relative tolerance under which a least-squares point counts as fitting exactly.
    max_passes : int
        Most LP solves per layer for l_inf without a noise bound (re-classification passes).
    certify : bool
        Compute each layer's certificate (a proven lower bound on the smallest singular
        value of the pinned rows and the error bound, both from the inverse of their Cholesky
        factor; about 0.7 ms for a 250-column layer). False skips it, and then `certified` is
        False.
    n_jobs : int, optional
        Worker processes sharing each layer's LPs (None: 1, -1: every core), passed to
        `solvers.solve_many`: a layer's round with less than about 2 s of LP work stays in
        this process (`solvers.PARALLEL_MIN_SECONDS`). BLAS runs on one thread per solve
        (_blas.py says why).
    joint : bool
        Layer-wise methods: where a layer's pre-image is not unique ('not_unique', or a fit
        lost below it), solve the whole network jointly on activation regions from the
        walk's answer (`_pattern.solve_jointly`), so that 'not_unique' is reported only
        where the whole network does not determine z. False: the paper's pipeline alone.
    progress : bool, optional
        A progress bar; None shows one only if the run lasts more than two seconds.
    **options
        'gd' and 'lp+gd': the options of `layerinv.baselines.gradient_descent` (preset,
        optimizer, lr, steps, restarts, seed, ...). 'pattern' and 'auto': loss ('l2',
        'linf', 'l1'; 'auto' refines with 'l2'), prior (the weight of prior ||z||^2, as
        gradient descent's prior_weight), starts (seeded random starts, default 8), seed,
        max_regions; 'pattern' also lp_start (False: the l_inf answer is not a start).
    """
    if not isinstance(net, Network):
        raise InputError(f"net must be a layerinv.Network; got {type(net).__name__}")
    method = check_choice(method, ALL_METHODS, "method")
    lp_options = {"noise": noise, "solver": solver, "active_tol": active_tol, "rtol": rtol,
                  "max_passes": max_passes, "certify": certify, "joint": joint,
                  "n_jobs": n_jobs}
    if method in GRADIENT_METHODS:
        return _invert_by_gradient(net, x, method, progress, options, **lp_options)
    if method in PATTERN_METHODS:
        return _invert_on_patterns(net, x, method, progress, options, lp_options)
    if options:
        raise InputError(f"options {sorted(options)} apply only to methods 'gd', 'lp+gd' "
                         f"(gradient descent's) or 'pattern', 'auto'; got method={method!r}")
    solver = check_choice(solver, solvers.names(), "solver")
    if noise is not None:
        noise = check_positive(noise, "noise", allow_zero=True)
    active_tol = check_positive(active_tol, "active_tol", allow_zero=True)
    rtol = check_positive(rtol, "rtol", allow_zero=True)
    if not isinstance(max_passes, int) or max_passes < 1:
        raise InputError(f"max_passes must be an int >= 1; got {max_passes!r}")
    solvers.check_n_jobs(n_jobs)
    batch, single = check_batch(x, net.output_dim, "x")
    if len(batch) > 1:
        solvers.check_workers(n_jobs)  # whether or not the data turns out to need an LP
    options = LayerOptions(method=method, solver=solver, active_tol=active_tol, rtol=rtol,
                           max_passes=max_passes, certify=bool(certify))

    started = time.perf_counter()
    with single_threaded_blas():
        if progress is False:  # no bar at all (a disabled tqdm still costs ~40 us to make)
            z, all_reports = _walk(net, batch, options, noise, n_jobs, None)
        else:
            # The bar counts layer inversions, one per sample and layer, as each sample
            # finishes one (a sample solved by least squares at once, one that needs LPs after
            # its last round).
            with tqdm(total=len(batch) * len(net.layers), desc=f"invert ({method})",
                      unit="sample-layer", leave=False, delay=0.0 if progress else 2.0) as bar:
                z, all_reports = _walk(net, batch, options, noise, n_jobs, bar.update)
    seconds = time.perf_counter() - started

    residual = np.max(np.abs(net.forward(z) - batch), axis=1)
    statuses = [_status(reports, r, FIT_FLOOR * float(np.abs(x_b).max()))
                for reports, r, x_b in zip(all_reports, residual, batch, strict=True)]
    regions = None
    if joint:
        limits = [FIT_FACTOR * reports[-1].eps + FIT_FLOOR * float(np.abs(x_b).max())
                  for reports, x_b in zip(all_reports, batch, strict=True)]
        z, statuses, regions = solve_jointly(net, batch, z, statuses, method, noise, rtol,
                                             limits)
        if regions is not None:
            residual = np.max(np.abs(net.forward(z) - batch), axis=1)
            seconds = time.perf_counter() - started
    success = np.array(statuses, dtype=object) == Status.OPTIMAL
    return Inversion.from_batch(z, success, statuses, all_reports, residual, seconds, method,
                                single=single, regions=regions)


def _invert_on_patterns(net: Network, x: object, method: str, progress: bool | None,
                        options: dict[str, Any], lp_options: dict[str, Any]) -> Inversion:
    """'pattern': `invert_pattern` from seeded starts (and the l_inf answer with
    lp_start=True); 'auto': the l_inf answer, refined by `invert_pattern` (l2 unless told)
    where `needs_refining` says so, that answer one of its starts."""
    allowed = (*PATTERN_OPTIONS, "lp_start") if method == "pattern" else PATTERN_OPTIONS
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"options {unknown} do not apply to method={method!r}; it takes "
                         f"{list(allowed)}")
    noise, rtol = lp_options["noise"], lp_options["rtol"]
    if method == "auto" and takes_pattern(net) and contracts(net):
        # No layer-wise walk: a layer with fewer outputs than inputs never has a unique
        # pre-image, and the walk's answer below it is a poor start (a random DCGAN-style
        # 16 -> ... -> 16 x 16 x 16 net with a tanh 3 x 16 x 16 output: the l_inf walk took
        # 50-90 s and lost the fit; the pattern method from seeded starts 0.3-0.7 s, exact).
        return invert_pattern(net, x, noise=noise, rtol=rtol, progress=progress, **options)
    if method == "pattern":
        if not options.pop("lp_start", False):
            # Seeded starts only: under heavy noise the l_inf answer is a poor start (the
            # shipped decoder at variance 0.3: PSNR 8 dB) and cost more than the search.
            return invert_pattern(net, x, noise=noise, rtol=rtol, progress=progress,
                                  **options)
        check_pattern_network(net, options.get("loss", "l2"))  # the InputError, before any LP
    started = time.perf_counter()
    batch, single = check_batch(x, net.output_dim, "x")
    # The pattern solve covers what the joint solve would (every sample not 'optimal'); the
    # certificate of an answer 'pattern' replaces anyway is not computed.
    lp = invert(net, batch, "linf", progress=progress,
                **{**lp_options, "joint": False,
                   "certify": lp_options["certify"] and method == "auto"})
    if method == "pattern":
        chosen = np.ones(len(batch), dtype=bool)
    elif takes_pattern(net):
        chosen = needs_refining(lp, batch, noise, rtol)
    else:
        chosen = np.zeros(len(batch), dtype=bool)
    z, statuses = np.array(lp.z, copy=True), list(lp.status)
    regions: list = [None] * len(batch) if lp.regions is None else list(lp.regions)
    # A layer-wise answer every layer certified unique starts in the right basin: 'auto'
    # refines it from there (no random starts unless told, the best Gauss-Newton answer
    # polished alone), the others get the seeded starts too (measured, noisy
    # 110 x 250 x 600: 8 random starts cost 6.7x the l_inf time for the same error).
    unique = np.array([status == Status.OPTIMAL for status in statuses])
    for group, certified_unique in ((chosen & unique, True), (chosen & ~unique, False)):
        if not group.any():
            continue
        index = np.flatnonzero(group)
        group_options = dict(options)
        if method == "auto" and certified_unique:
            group_options.setdefault("starts", 0)
            group_options.setdefault("hops", 0)
            group_options["polish"] = 1
        refined = invert_pattern(net, batch[index], noise=noise, rtol=rtol,
                                 start=z[index], progress=progress, **group_options)
        for position, i in enumerate(index):
            z[i], statuses[i] = refined.z[position], refined.status[position]
            regions[i] = refined.regions[position]
    residual = np.max(np.abs(net.forward(z) - batch), axis=1)
    success = [status in REFINED_STATUSES for status in statuses]
    return Inversion.from_batch(z, success, statuses, lp.layers, residual,
                                time.perf_counter() - started, method, single=single,
                                regions=regions if any(r is not None for r in regions)
                                else None)


def contracts(net: Network) -> bool:
    """Whether some layer has fewer outputs than inputs (its pre-image is never unique)."""
    return any(layer.n_out < layer.n_in for layer in net.layers)


def _invert_by_gradient(net: Network, x: object, method: str, progress: bool | None,
                        gd_options: dict[str, Any], **lp_options: Any) -> Inversion:
    # Imported here: the gradient module needs PyTorch, which the LP methods do not.
    from layerinv._gradient import check_options, invert_gd, refine

    check_options(gd_options)  # an unknown option is an InputError before any work
    if method == "gd":
        return invert_gd(net, x, progress=progress, **gd_options)
    start = invert(net, x, "linf", progress=progress, **lp_options)
    return refine(net, x, start, progress=progress, **gd_options)


def _input_bounds(net: Network) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bounds on each layer's input: z is free; a hidden input lies in the previous act's range."""
    bounds = [(np.full(net.input_dim, -np.inf), np.full(net.input_dim, np.inf))]
    for previous in net.layers[:-1]:
        act = previous.activation
        bounds.append((np.full(previous.n_out, act.output_low),
                       np.full(previous.n_out, act.output_high)))
    return bounds


def _walk(net: Network, batch: np.ndarray, options: LayerOptions, noise: float | None,
          n_jobs: int | None, done: Callable[[int], object] | None
          ) -> tuple[np.ndarray, list[list[LayerReport]]]:
    """The backward walk over the whole batch: the last layer down to the first, each layer's
    observations of every sample inverted together (`invert_layer_batch`)."""
    bounds = _input_bounds(net)
    ys = list(batch)
    reports: list[list[LayerReport]] = [[] for _ in ys]
    error_levels = [0.0] * len(ys)
    # Bounds on each observation's error: the stated noise, then each layer's error bound.
    incomings: list[float | None] = [noise] * len(ys)
    for index in range(len(net.layers) - 1, -1, -1):
        h_low, h_high = bounds[index]
        layer_noise = noise if index == len(net.layers) - 1 else None
        answers = invert_layer_batch(net.layers[index], ys, h_low, h_high, options, index,
                                     layer_noise, error_levels, incomings, n_jobs=n_jobs,
                                     done=done)
        for i, (h, report) in enumerate(answers):
            ys[i] = h
            incomings[i] = report.error_bound if np.isfinite(report.error_bound) else None
            # The typical error of the estimate handed down sets the next layer's ambiguity
            # threshold (the worst-case bound is 25-50x larger on these nets and pins nothing).
            error_levels[i] = report.error_estimate if np.isfinite(report.error_estimate) \
                else report.eps
            reports[i].append(report)
    return np.array(ys), [sample[::-1] for sample in reports]


def _status(reports: list[LayerReport], residual: float, floor: float) -> Status:
    """The worst layer status, or 'fit_lost' where z does not keep the output layer's fit."""
    worst = min((r.status for r in reports), key=STATUSES.index)
    if worst != Status.SOLVER_ERROR and residual > FIT_FACTOR * reports[-1].eps + floor:
        return Status.FIT_LOST
    return worst
