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


ALL_METHODS = (*METHODS, *GRADIENT_METHODS)


def invert(net: Network, x: object, method: str = "linf", *, noise: float | None = None,
           solver: str = "auto", active_tol: float = 1e-6, rtol: float = 1e-9,
           max_passes: int = 3, certify: bool = True, n_jobs: int | None = None,
           progress: bool | None = None, **gd_options: Any) -> Inversion:
    """Invert G layer by layer: find z with G(z) close to x.

    Parameters
    ----------
    net : Network
    x : array, shape (n,) or (B, n)
        Observations of the network's output.
    method : {'exact', 'linf', 'l1', 'gd', 'lp+gd'}
        Eq. (4), (5) or (6) of Lei et al. (2019), applied from the last layer back to z;
        'gd' is gradient descent on the latent (`layerinv.baselines.gradient_descent`, preset
        'bora2017' unless told otherwise); 'lp+gd' refines the l_inf answer by gradient steps.
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
    progress : bool, optional
        A progress bar; None shows one only if the run lasts more than two seconds.
    **gd_options
        For 'gd' and 'lp+gd' only: the options of `layerinv.baselines.gradient_descent`
        (preset, optimizer, lr, steps, restarts, seed, ...).
    """
    if not isinstance(net, Network):
        raise InputError(f"net must be a layerinv.Network; got {type(net).__name__}")
    method = check_choice(method, ALL_METHODS, "method")
    if method in GRADIENT_METHODS:
        return _invert_by_gradient(net, x, method, progress, gd_options,
                                   noise=noise, solver=solver, active_tol=active_tol,
                                   rtol=rtol, max_passes=max_passes, certify=certify,
                                   n_jobs=n_jobs)
    if gd_options:
        raise InputError(f"options {sorted(gd_options)} apply only to method='gd' or "
                         f"'lp+gd'; got method={method!r}")
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
    statuses = np.array([_status(reports, r, FIT_FLOOR * float(np.abs(x_b).max()))
                         for reports, r, x_b in zip(all_reports, residual, batch, strict=True)],
                        dtype=object)
    success = statuses == Status.OPTIMAL
    return Inversion.from_batch(z, success, statuses, all_reports, residual, seconds, method,
                                single=single)


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
