"""The backward walk: invert a whole network one layer at a time (Lei et al. 2019)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from layerinv import solvers
from layerinv._blas import single_threaded_blas
from layerinv._layer_inversion import METHODS, LayerOptions, invert_layer
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
        Compute each layer's certificate (smallest singular value of the pinned rows and the
        error bound it implies; about 1.7 ms for a 250-column layer). False skips it, and then
        `certified` is False.
    n_jobs : int, optional
        Worker processes solving samples at once (None: 1, -1: every core); a batch with less
        than about 4 s of work stays in this process (see `_invert_in_processes`). BLAS runs
        on one thread per solve (_blas.py says why).
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
    if n_jobs is not None and (not isinstance(n_jobs, int) or n_jobs == 0):
        raise InputError(f"n_jobs must be None, -1 or a positive int; got {n_jobs!r}")
    batch, single = check_batch(x, net.output_dim, "x")
    options = LayerOptions(method=method, solver=solver, active_tol=active_tol, rtol=rtol,
                           max_passes=max_passes, certify=bool(certify))

    started = time.perf_counter()
    bounds = _input_bounds(net)
    bar = tqdm(total=len(batch), desc=f"invert ({method})", unit="sample", leave=False,
               disable=progress is False, delay=0.0 if progress else 2.0)

    def one(x_b: np.ndarray) -> tuple[np.ndarray, list[LayerReport]]:
        answer = _invert_one(net, x_b, options, noise, bounds)
        bar.update()
        return answer

    from layerinv._processes import resolve_workers

    jobs = 1 if n_jobs is None else min(resolve_workers(n_jobs), len(batch))
    with single_threaded_blas(), bar:
        answers = [one(batch[0])]
        if jobs == 1 or len(batch) == 1:
            answers += [one(x_b) for x_b in batch[1:]]
        else:
            answers += _invert_in_processes(net, batch, options, noise, bounds, jobs, bar,
                                            per_sample=time.perf_counter() - started)
    z = np.array([answer[0] for answer in answers])
    all_reports = [answer[1] for answer in answers]
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


def _invert_in_processes(net: Network, batch: np.ndarray, options: LayerOptions,
                         noise: float | None, bounds: list, jobs: int, bar: tqdm,
                         per_sample: float) -> list[tuple[np.ndarray, list[LayerReport]]]:
    """Samples 1.. of the batch in worker processes, the network sent once to each.

    Processes, not threads: SciPy's BLAS and LAPACK wrappers hold the GIL, and two threads ran
    dsyrk, dpotrf and dsyevr at 0.56-0.82x the speed of one. `per_sample` (the measured time of
    sample 0) sizes the chunks, and a batch with less than about 1.5 s of work stays in this
    process. Measured on 2 cores, certified exact on 20 x 250 x 600: 1000 samples (3 s of
    work) 317/s on one process and 309/s on two; 4000 samples 307/s and 383/s: the workers'
    start (importing NumPy and SciPy afresh) costs about 2 s, hence the 4 s threshold.
    Scripts that call this must guard their entry point (`if __name__ == "__main__":`), as
    every forkserver/spawn pool requires.
    """
    from layerinv._processes import map_local

    shared = (net, batch, options, noise, bounds)
    answers: dict[int, tuple[np.ndarray, list[LayerReport]]] = {}
    for index, answer in map_local(_invert_indexed, range(1, len(batch)), shared, jobs,
                                   cost=lambda _: per_sample, min_parallel_seconds=4.0):
        answers[index] = answer
        bar.update()
    return [answers[i] for i in range(1, len(batch))]


def _invert_indexed(index: int, shared: tuple) -> tuple[np.ndarray, list[LayerReport]]:
    net, batch, options, noise, bounds = shared
    with single_threaded_blas():
        return _invert_one(net, batch[index], options, noise, bounds)


def _input_bounds(net: Network) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bounds on each layer's input: z is free; a hidden input lies in the previous act's range."""
    bounds = [(np.full(net.input_dim, -np.inf), np.full(net.input_dim, np.inf))]
    for previous in net.layers[:-1]:
        act = previous.activation
        bounds.append((np.full(previous.n_out, act.output_low),
                       np.full(previous.n_out, act.output_high)))
    return bounds


def _invert_one(net: Network, x: np.ndarray, options: LayerOptions, noise: float | None,
                bounds: list[tuple[np.ndarray, np.ndarray]]
                ) -> tuple[np.ndarray, list[LayerReport]]:
    reports: list[LayerReport] = []
    y = x
    error_level = 0.0
    incoming = noise  # bound on the observation's error: the stated noise, then each layer's
    for index in range(len(net.layers) - 1, -1, -1):
        h_low, h_high = bounds[index]
        layer_noise = noise if index == len(net.layers) - 1 else None
        y, report = invert_layer(net.layers[index], y, h_low, h_high, options, index,
                                 layer_noise, error_level, incoming)
        incoming = report.error_bound if np.isfinite(report.error_bound) else None
        # The typical error of the estimate handed down sets the next layer's ambiguity
        # threshold (the worst-case bound is 25-50x larger on these nets and pins nothing).
        error_level = report.error_estimate if np.isfinite(report.error_estimate) \
            else report.eps
        reports.append(report)
    return y, reports[::-1]


def _status(reports: list[LayerReport], residual: float, floor: float) -> Status:
    """The worst layer status, or 'fit_lost' where z does not keep the output layer's fit."""
    worst = min((r.status for r in reports), key=STATUSES.index)
    if worst != Status.SOLVER_ERROR and residual > FIT_FACTOR * reports[-1].eps + floor:
        return Status.FIT_LOST
    return worst
