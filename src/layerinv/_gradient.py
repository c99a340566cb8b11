"""Gradient descent on the latent: the baseline that the layer-wise LP is compared against.

Minimise, per observation x and over z,

    loss(z) = mean_j (A(G(z)) - x)_j^2 + prior_weight * ||z||_2^2

(Bora, Jalal, Price and Dimakis, "Compressed Sensing using Generative Models", ICML 2017;
Hand and Voroninski, "Global Guarantees for Enforcing Deep Generative Priors by Empirical
Risk", COLT 2018). A is the identity unless a `measurement` is given. With reduction="mean"
(the default) the data term is the mean over the entries of one observation, the `m_loss2` of
the CSGM code (src/mnist_estimators.py), so a prior weight taken from its scripts means the
same here; reduction="sum" sums the squares instead, which keeps the scale of a plain gradient
step independent of the output size. The prior term is the CSGM `zp_loss`, a sum over z.

Everything runs in PyTorch on one tensor of shape (B * R, k): B observations times R random
restarts. Each row is optimised independently (the gradient of the sum of the per-row losses
is the per-row gradient), so a batch gives the same answers as separate calls (up to the
rounding of batched matrix products: the tests find agreement to 1e-9 relative). Given a list
of B networks (one per observation, one architecture; the same object repeated for one
shared generator), the forward is a torch.bmm over their stacked weights, every sample's rows
in a matrix product of its own, and each sample's answer is bitwise the one it gets alone:
that is how `layerinv reproduce` runs the trials of a grid cell as one batch.

Design
------
- Optimisers are written out row-wise rather than taken from torch.optim, so that each row can
  stop (and be frozen: no further update, no moment update) on its own and the sign flip can
  reset one row's state. The formulas are those of torch.optim.Adam (betas 0.9, 0.999, eps
  1e-8, no weight decay; beta^t is kept as a running product per row, not a power) and
  torch.optim.SGD (momentum, no dampening, no Nesterov); the tests check both trajectories
  against torch.optim.
- Precision: a `layerinv.Network` runs in float64 (its weights are float64; residuals of 1e-9
  and latent errors of 1e-9 are reachable). A user's torch module runs in the dtype of its own
  parameters (float32 for most trained models), on the device of its parameters. `dtype` or
  `device` override either; a module that must change is copied, never modified.
- Initial points: restart r of sample b is row r of a (R, k) standard normal draw from
  numpy.random.default_rng([seed_b, RESTART_STREAM]) (never the stream of default_rng(seed_b),
  which a user may have drawn z* from), so it does not depend on the device, the dtype or the other
  samples of the batch. `seed` is an int (the same seed for every sample: sample b of a batch
  then equals a single call on x[b] with that seed), a sequence of B ints (one per sample),
  a numpy Generator (B child generators are spawned from it) or None (fresh entropy). Starting
  points in `z0` replace the first restarts.
- The returned z of a sample is the lowest-loss iterate seen by any of its restarts (the CSGM
  code keeps each restart's last iterate; the lowest-loss one is never worse). This also makes
  `refine` safe: its first iterate is the LP's answer, which is returned if no step improves on
  it.
- Sign flip (Huang, Hand, Heckel and Voroninski, "A Provably Convergent Scheme for Compressive
  Sensing under Random Generative Priors", 2018, Algorithm 1): before each step, loss(-z) is
  evaluated too, and z is replaced by -z where that is lower. The optimiser state of a flipped
  row (Adam moments and step count, momentum buffer) is reset: the old moments point the wrong
  way.
- Early stopping, per row, checked before each step on the loss of the current iterate:
  a sample whose best restart has loss <= target_loss stops (all its restarts: the target is
  met); a row whose loss changed by at most rel_tol * max(previous, current) over the last step
  stops (it has stalled); a row whose loss is not finite stops (diverged). Stopped rows are
  left out of the forward pass from then on.

Status of a sample (the stop reason of the restart whose iterate is returned):
'converged' (loss <= target_loss), 'stalled' (relative change below rel_tol), 'diverged'
(the restart's loss became NaN or Inf; its best finite iterate is returned) or 'max_steps'.
`success` is about the fit, not the stop: ||A(G(z)) - x||_inf <= success_tol * ||x||_inf per
sample (default 1e-4; on the paper's k x 250 x 600 nets a relative residual of 1e-4 goes with a
relative latent error of about 1e-3, the paper's success threshold).
"""

from __future__ import annotations

import copy
import inspect
import numbers
import time
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from layerinv._blas import one_torch_thread
from layerinv._validation import (
    as_float_array,
    check_choice,
    check_finite,
    check_positive,
    sample_rngs,
)
from layerinv.convolution import Conv2dOperator
from layerinv.errors import InputError
from layerinv.network import Network
from layerinv.results import Inversion, Status

OPTIMIZERS = ("adam", "sgd")
REDUCTIONS = ("mean", "sum")
GD_STATUSES = (Status.CONVERGED, Status.STALLED, Status.DIVERGED, Status.MAX_STEPS)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
DEFAULT_PRESET = "bora2017"
REFINE_TARGET = 1e-7
"""`refine` stops a sample once its root-mean-square residual is below this times max|x|."""
SUCCESS_TOL = 1e-4
"""Default fit criterion: success = ||A(G(z)) - x||_inf <= SUCCESS_TOL * ||x||_inf."""

PRESETS: dict[str, dict[str, Any]] = {
    "bora2017": {
        "optimizer": "adam",
        "lr": 0.01,
        "momentum": 0.9,
        "steps": 1000,
        "restarts": 10,
        "prior_weight": 0.0,
        "sign_flip": False,
        "reduction": "mean",
        "target_loss": None,
        "rel_tol": None,
        "source": (
            "Bora, Jalal, Price and Dimakis, 'Compressed Sensing using Generative Models', "
            "ICML 2017, code github.com/AshishBora/csgm: quick_scripts/mnist_genspan.sh "
            "(--optimizer-type adam --learning-rate 0.01 --max-update-iter 1000 "
            "--num-random-restarts 10) with the loss of src/mnist_estimators.py (mean squared "
            "measurement error + zprior_weight * ||z||^2, best restart kept by loss). The "
            "prior weight is 0, as in the CSGM projection scripts (mnist_projection.sh): the "
            "gen-span script's 0.1 is for noisy compressed sensing and would bias an exact "
            "inversion. Like the CSGM code, no early stopping."
        ),
    },
    "hand2017": {
        "optimizer": "sgd",
        "lr": 1.0,
        "momentum": 0.0,
        "steps": 1000,
        "restarts": 1,
        "prior_weight": 0.0,
        "sign_flip": True,
        "reduction": "sum",
        "target_loss": None,
        "rel_tol": None,
        "source": (
            "Hand and Voroninski, 'Global Guarantees for Enforcing Deep Generative Priors by "
            "Empirical Risk', COLT 2018 (arXiv 2017): plain gradient steps on "
            "||G(z) - x||^2 from one random start, with the sign flip of Huang, Hand, Heckel "
            "and Voroninski, 'A Provably Convergent Scheme for Compressive Sensing under Random "
            "Generative Priors' (2018, Algorithm 1): before each step, go to -z if its loss is "
            "lower. The step size 1.0 on the summed squares is our choice: for random "
            "N(0, 1/n) ReLU nets of depth d the Hessian at z* is about 2^(1-d) I, so 1.0 is "
            "half a Newton step for d = 2; scale it by 2^(d-2) for deeper nets."
        ),
    },
}
_OPTION_NAMES = ("optimizer", "lr", "momentum", "steps", "restarts", "prior_weight",
                 "sign_flip", "reduction", "target_loss", "rel_tol")


def _gradient_descent(generator: Network | nn.Module | Sequence[Network], x: object, *,
                      preset: str = DEFAULT_PRESET,
                     optimizer: str | None = None, lr: float | None = None,
                     momentum: float | None = None, steps: int | None = None,
                     restarts: int | None = None, prior_weight: float | None = None,
                     sign_flip: bool | None = None, reduction: str | None = None,
                     target_loss: float | Sequence[float] | np.ndarray | None = None,
                     rel_tol: float | None = None, target_fit: float | None = None,
                     measurement: Callable[[torch.Tensor], torch.Tensor] | object | None = None,
                     observed: object = None, z0: object = None, latent_dim: int | None = None,
                     success_tol: float = SUCCESS_TOL, device: str | torch.device | None = None,
                     dtype: torch.dtype | None = None,
                     seed: int | Sequence[int] | np.random.Generator | None = 0,
                     progress: bool | None = None) -> Inversion:
    """Find z with A(G(z)) close to x by gradient descent on z, with batched random restarts.

    Parameters
    ----------
    generator : layerinv.Network, torch.nn.Module or a sequence of B layerinv.Networks
        A module must map a latent batch (B, k) to (B, ...) and treat rows independently (it
        is called in eval mode, restored afterwards; no gradient reaches its parameters).
        A sequence holds one network per observation, all of one architecture (widths,
        activations, biases present or not): observation b is inverted through networks[b],
        every restart of every sample in one batched forward (torch.bmm over the stacked
        weights), so sample b's answer is that of a call with networks[b] and x[b] alone.
        Only without a measurement.
    x : array or tensor, shape out or (B, *out)
        Observations; `out` is the shape of G's output for one latent (of A(G(z)) when a
        measurement is given). A single observation gives unbatched fields in the result.
    preset : {'bora2017', 'hand2017'}
        Defaults for every option left None (see PRESETS, each with its source).
    optimizer : {'adam', 'sgd'}
        'sgd' is heavy-ball momentum (`momentum`; 0 gives plain gradient steps).
    lr : float > 0
    momentum : float in [0, 1)
        Used by 'sgd' only.
    steps : int >= 1
        Most gradient steps per restart.
    restarts : int >= 1
        Starting points per sample; all samples x restarts run in one (B * R, k) tensor and the
        best restart per sample (lowest loss) is kept.
    prior_weight : float >= 0
        lambda in the added term lambda * ||z||^2.
    sign_flip : bool
        Before each step, replace z by -z where that lowers the loss (Huang et al. 2018).
    reduction : {'mean', 'sum'}
        Mean or sum over the entries of one observation of the squared residual.
    target_loss : float >= 0 or array (B,), optional
        A sample stops once one of its restarts has loss <= target_loss.
    rel_tol : float > 0, optional
        A restart stops once |loss_prev - loss| <= rel_tol * max(loss_prev, loss).
    target_fit : float >= 0, optional
        A scale-free target_loss: sample b stops once its loss is that of a residual whose root
        mean square is target_fit * max|x_b|, i.e. target_loss_b = (target_fit * max|x_b|)^2,
        times the number of entries of x_b with reduction='sum'. Not with target_loss.
    measurement : callable or 2-D array, optional
        A, differentiable on torch tensors (N, *G_out) -> (N, *out); a matrix (m, n) is applied
        to the flattened output. x is then in the measurement space, and so is the residual.
    observed : boolean array, shape of x, optional
        The entries of x that are observed (inpainting); the others are left out of the loss
        (the mean is over observed entries), of the residual, of max|x| and of target_fit.
        Equivalent to inverting G with the unobserved output rows dropped, without building
        one such network per sample.
    z0 : array, optional
        Starting points: (k,) or (B, k) for the first restart of each sample, or (R0, k) /
        (B, R0, k) for the first R0 <= restarts. The other restarts are drawn N(0, I): the
        first restarts - R0 of the draws a run without z0 would make, so a run with z0 and
        restarts + R0 contains every chain of the run without z0 and `restarts`.
    latent_dim : int, optional
        k, for a module; found otherwise from z0 or from the module's first nn.Linear.
    success_tol : float > 0
        success = ||A(G(z)) - x||_inf <= success_tol * ||x||_inf.
    device : str or torch.device, optional
        Default: 'cpu' for a Network, the device of a module's parameters. 'cuda' when no GPU
        is present is an InputError.
    dtype : torch.dtype, optional
        Default: float64 for a Network, the dtype of a module's parameters.
    seed : int, sequence of B ints, numpy Generator or None
        Seeds the random restarts per sample (see the module docstring).
    progress : bool, optional
        A tqdm bar over the steps; None shows it only if the run lasts more than two seconds.

    Returns
    -------
    Inversion
        z (float64 numpy), success, status (GD_STATUSES), layers (empty per sample), residual
        ||A(G(z)) - x||_inf, seconds (wall time of the whole call), method 'gd' and history:
        per sample, the loss of the returned restart after 0, 1, 2, ... steps.
    """
    started = time.perf_counter()
    opts = _resolve_options(preset, optimizer=optimizer, lr=lr, momentum=momentum, steps=steps,
                            restarts=restarts, prior_weight=prior_weight, sign_flip=sign_flip,
                            reduction=reduction, target_loss=target_loss, rel_tol=rel_tol)
    success_tol = check_positive(success_tol, "success_tol")
    if progress is not None and not isinstance(progress, bool):
        raise InputError(f"progress must be True, False or None; got {progress!r}")
    dev = _check_device(device)
    stacked = _is_network_sequence(generator)
    if stacked:
        if measurement is not None:
            raise InputError("a sequence of networks takes no measurement: give one network "
                             "with a measurement, or networks without one")
        model, k, dev, dtype = _stacked_generator(generator, dev, dtype)
    else:
        model, k, dev, dtype = _prepare_generator(generator, z0, latent_dim, dev, dtype)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        forward = _make_forward(model, measurement, dev, dtype)
        obs_shape = ((model.output_dim,) if stacked else
                     _probe(forward, k, dev, dtype, measurement is not None))
        batch, single = _check_observations(x, obs_shape, measurement is not None)
        n_samples = batch.shape[0]
        if stacked and (single or n_samples != model.count):
            raise InputError(f"x must hold one observation per network, shape "
                             f"({model.count}, {obs_shape[0]}); got shape {np.shape(x)}")
        weights = _check_observed(observed, batch)
        starts = _initial_points(z0, k, n_samples, single, opts["restarts"], seed)
        target = _check_target(opts["target_loss"], n_samples)
        if target_fit is not None:
            target = _fit_target(target_fit, target, batch, opts["reduction"], weights)
        result = _run(forward, batch, starts, target, opts, dev, dtype, progress, weights,
                      full_rows=stacked)
    finally:
        for module, training in modes:
            module.training = training
    z, _final_loss, status, residual, history = result
    flat = np.abs(batch.reshape(n_samples, -1))
    scale = np.max(flat if weights is None else flat * weights, axis=1)
    success = residual <= success_tol * scale
    seconds = time.perf_counter() - started
    return Inversion.from_batch(z, success, status, [[] for _ in range(n_samples)], residual,
                                seconds, "gd", history, single=single)


@wraps(_gradient_descent)
def gradient_descent(*args: Any, **kwargs: Any) -> Inversion:
    check_options(kwargs)
    # One PyTorch thread: see _blas.one_torch_thread for the measurement behind it.
    with one_torch_thread():
        return _gradient_descent(*args, **kwargs)


def option_names() -> tuple[str, ...]:
    """The keyword options of `gradient_descent` (what `invert(..., 'gd', **options)` takes)."""
    names = inspect.signature(_gradient_descent).parameters
    return tuple(name for name in names if name not in ("generator", "x"))


def check_options(options: dict[str, Any], *, refusing: tuple[str, ...] = ()) -> None:
    """An InputError naming the first unknown option and the valid ones (not a TypeError)."""
    valid = [name for name in option_names() if name not in refusing]
    for name in options:
        if name not in valid and name not in refusing:
            raise InputError(f"unknown gradient-descent option {name!r}; valid options: "
                             f"{', '.join(valid)}")


def invert_gd(net: Network, x: object, **options: Any) -> Inversion:
    """`invert(net, x, method="gd", **options)`: gradient_descent on a layerinv Network."""
    if not isinstance(net, Network):
        raise InputError(f"net must be a layerinv.Network; got {type(net).__name__}")
    return gradient_descent(net, x, **options)


def refine(generator: Network | nn.Module, x: object, start: Inversion | object,
           **options: Any) -> Inversion:
    """Gradient steps from a given answer, by default the LP's: the 'lp+gd' method.

    `start` is an Inversion (its z is the starting point; its seconds are added and its layer
    reports kept) or starting latents of shape (k,) / (B, k). Options are those of
    `gradient_descent`; the defaults differ: restarts is the preset's plus one, the start
    being one chain among the preset's random restarts (the very chains `gd` runs with the
    same seed, so the answer's loss is never above gd's with the same restarts and budget,
    up to round-off), and target_fit=REFINE_TARGET unless a target_loss or target_fit is
    given (a sample stops once the root mean square of its residual is below REFINE_TARGET *
    max|x|), so an LP answer that already fits costs one forward pass. The start is iterate 0
    and the lowest-loss iterate is returned, so the result never fits worse than the start. Useful
    where a layer is not expansive enough for the LP to pin a unique answer.
    """
    if "z0" in options:
        raise InputError("refine takes its starting point from `start`, not from z0")
    check_options(options, refusing=("z0",))
    if isinstance(start, Inversion):
        z_start, lp_seconds, layers = start.z, start.seconds, start.layers
    else:
        z_start, lp_seconds, layers = start, 0.0, None
    if options.get("restarts") is None:
        preset = check_choice(options.get("preset", DEFAULT_PRESET), tuple(PRESETS), "preset")
        options["restarts"] = PRESETS[preset]["restarts"] + 1
    if options.get("target_loss") is None and options.get("target_fit") is None:
        options["target_fit"] = REFINE_TARGET
    result = gradient_descent(generator, x, z0=z_start, **options)
    result.method = "lp+gd"
    result.seconds += lp_seconds
    if layers is not None:
        result.layers = layers
    return result


# ----------------------------------------------------------------------------- reporting
def sample_seconds(result: Inversion) -> np.ndarray:
    """Seconds per sample of a gradient result, shape (B,): `Inversion.sample_seconds`, each
    sample's equal share of the call's wall time (plus its own LP layer times for 'lp+gd')."""
    return result.sample_seconds()


def summary(result: Inversion, x: object, success_tol: float = SUCCESS_TOL) -> str:
    """A text table of a gradient result: per sample, stop reason, fit, seconds (shared out)."""
    statuses = [result.status] if result.single else list(result.status)
    successes = np.atleast_1d(result.success)
    residuals = np.atleast_1d(result.residual)
    scale = _scale(x, len(statuses))
    seconds = sample_seconds(result)
    share = ("its LP layer time + an equal share of the rest" if result.method == "lp+gd"
             else f"the call's wall time / {len(statuses)}")
    how = ("the LP per sample, then the gradient steps of every sample in one tensor"
           if result.method == "lp+gd" else "every sample and restart in one tensor")
    lines = [f"method={result.method}  samples={len(statuses)}  seconds={result.seconds:.3f} "
             f"({how})",
             f"{'sample':>6}  {'stop reason':<11} {'residual':>10} {'rel. resid.':>11}  "
             f"{'fit':<3}  seconds ({share})"]
    for i, status in enumerate(statuses):
        fit = "yes" if successes[i] else "no"
        lines.append(f"{i:>6}  {status:<11} {residuals[i]:>10.2e} "
                     f"{residuals[i] / scale[i]:>11.2e}  {fit:<3}  {seconds[i]:.4f}")
    return "\n".join([*lines, f"fit: ||G(z) - x||_inf <= {success_tol:g} max|x|"])


def summary_line(result: Inversion, x: object, success_tol: float = SUCCESS_TOL) -> str:
    """One line: how many samples fit, why they stopped and the median relative residual."""
    statuses = np.atleast_1d(np.asarray(result.status, dtype=object))
    fits = int(np.sum(result.success))
    reasons = ", ".join(f"{name} {int(np.sum(statuses == name))}" for name in GD_STATUSES
                        if np.any(statuses == name))
    relative = np.atleast_1d(result.residual) / _scale(x, len(statuses))
    return (f"{fits} of {len(statuses)} samples fit (||G(z) - x||_inf <= {success_tol:g} "
            f"max|x|; median relative residual {np.median(relative):.1e}); stop reasons: "
            f"{reasons}")


def _scale(x: object, n_samples: int) -> np.ndarray:
    """max|x| per sample (1 where x is all zeros, so a relative residual stays finite)."""
    flat = _as_numpy(x, "x").reshape(n_samples, -1)
    scale = np.max(np.abs(flat), axis=1)
    return np.where(scale > 0, scale, 1.0)


# ----------------------------------------------------------------------------- options
def _resolve_options(preset: str, **given: Any) -> dict[str, Any]:
    preset = check_choice(preset, tuple(PRESETS), "preset")
    opts = {name: PRESETS[preset][name] for name in _OPTION_NAMES}
    opts.update({name: value for name, value in given.items() if value is not None})
    opts["optimizer"] = check_choice(opts["optimizer"], OPTIMIZERS, "optimizer")
    opts["reduction"] = check_choice(opts["reduction"], REDUCTIONS, "reduction")
    opts["lr"] = check_positive(opts["lr"], "lr")
    opts["momentum"] = check_positive(opts["momentum"], "momentum", allow_zero=True)
    if opts["momentum"] >= 1.0:
        raise InputError(f"momentum must be in [0, 1); got {opts['momentum']!r}")
    opts["prior_weight"] = check_positive(opts["prior_weight"], "prior_weight", allow_zero=True)
    for name in ("steps", "restarts"):
        value = opts[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(f"{name} must be an int >= 1; got {value!r}")
        opts[name] = int(value)
    if not isinstance(opts["sign_flip"], bool | np.bool_):
        raise InputError(f"sign_flip must be True or False; got {opts['sign_flip']!r}")
    if opts["rel_tol"] is not None:
        opts["rel_tol"] = check_positive(opts["rel_tol"], "rel_tol")
    return opts


def _check_target(target: object, n_samples: int) -> np.ndarray | None:
    if target is None:
        return None
    if np.ndim(target) == 0:
        return np.full(n_samples, check_positive(target, "target_loss", allow_zero=True))
    array = as_float_array(target, "target_loss")
    if array.shape != (n_samples,):
        raise InputError(f"target_loss must be a number or have one entry per sample, shape "
                         f"({n_samples},); got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise InputError("target_loss must hold finite numbers >= 0")
    return array


def _fit_target(target_fit: object, target: np.ndarray | None, batch: np.ndarray,
                reduction: str, weights: np.ndarray | None = None) -> np.ndarray:
    if target is not None:
        raise InputError("give target_loss or target_fit, not both")
    fit = check_positive(target_fit, "target_fit", allow_zero=True)
    flat = np.abs(batch.reshape(batch.shape[0], -1))
    if weights is not None:
        flat = flat * weights
    per_entry = (fit * np.max(flat, axis=1)) ** 2
    entries = flat.shape[1] if weights is None else weights.sum(axis=1)
    return per_entry * (entries if reduction == "sum" else 1.0)


def _check_observed(observed: object, batch: np.ndarray) -> np.ndarray | None:
    """The observed entries as a float 0/1 array (B, n) flattened per sample, or None."""
    if observed is None:
        return None
    mask = np.asarray(observed)
    if mask.dtype != np.bool_:
        raise InputError(f"observed must be a boolean array; got dtype {mask.dtype}")
    if mask.shape == batch.shape[1:]:
        mask = np.broadcast_to(mask, batch.shape)
    if mask.shape != batch.shape:
        raise InputError(f"observed must have the shape of x, {batch.shape} (or of one "
                         f"observation); got shape {mask.shape}")
    flat = mask.reshape(batch.shape[0], -1)
    if not flat.any(axis=1).all():
        raise InputError("observed must mark at least one entry of every sample as observed")
    return flat.astype(np.float64)


def _check_device(device: str | torch.device | None) -> torch.device | None:
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device must be 'cpu', 'cuda' or a torch.device; got {device!r} "
                         f"({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for but CUDA is not available "
                         f"(torch {torch.__version__}); use device='cpu'")
    return dev


def _module_tensor(module: nn.Module) -> torch.Tensor | None:
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor
    return None


def _prepare_generator(generator: object, z0: object, latent_dim: int | None,
                       dev: torch.device | None, dtype: torch.dtype | None
                       ) -> tuple[nn.Module, int, torch.device, torch.dtype]:
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype must be a floating torch.dtype such as torch.float64; "
                         f"got {dtype!r}")
    if isinstance(generator, Network):
        dev = dev or torch.device("cpu")
        dtype = dtype or torch.float64
        return _network_module(generator, dev, dtype), generator.input_dim, dev, dtype
    if not isinstance(generator, nn.Module):
        raise InputError(f"generator must be a layerinv.Network or a torch.nn.Module mapping "
                         f"(B, k) to (B, ...); got {type(generator).__name__}")
    reference = _module_tensor(generator)
    own_dev = reference.device if reference is not None else torch.device("cpu")
    own_dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    dev = dev or own_dev
    dtype = dtype or own_dtype
    module = generator
    if reference is not None and (_device_key(own_dev) != _device_key(dev)
                                  or own_dtype != dtype):
        module = copy.deepcopy(generator).to(device=dev, dtype=dtype)
    return module, _latent_dim(generator, z0, latent_dim), dev, dtype


def _device_key(dev: torch.device) -> tuple[str, int]:
    index = dev.index
    if dev.type == "cuda" and index is None:
        index = torch.cuda.current_device()
    return dev.type, index or 0


def _network_module(net: Network, dev: torch.device, dtype: torch.dtype) -> nn.Module:
    """net.to_torch() of `dtype`: built from the float64 weights, so float64 is exact, and
    convolutions stay convolutions (no dense matrix per layer)."""
    return net.to_torch(dtype=dtype).to(device=dev)


def _is_network_sequence(generator: object) -> bool:
    return (isinstance(generator, Sequence) and not isinstance(generator, str)
            and len(generator) > 0 and all(isinstance(g, Network) for g in generator))


class _StackedNetworks(nn.Module):
    """N layerinv Networks of one architecture as one module, for batched gradient descent.

    Rows come sample-major: the first r rows belong to network 0, the next r to network 1
    (any r, the same for every network). Each layer is one torch.bmm over weights stacked to
    (N, n_in, n_out), so row results of network b are computed from network b's slice alone,
    a matrix product of a shape that depends on r only: they do not depend on the other
    networks (checked bitwise by the tests). One matrix product over all rows would be faster
    for one shared network, but MKL picks its kernel by the row count (one row, a few rows
    and a few hundred rows each round differently), so a row's numbers would depend on how
    many rows ran with it. Where every network is the same object, its weights are stored
    once and expanded (no copy). A convolution layer runs as torch's convolution instead,
    network by network (`_StackedConvolution`).
    """

    def __init__(self, networks: Sequence[Network], dev: torch.device, dtype: torch.dtype):
        super().__init__()
        first = networks[0]
        for b, net in enumerate(networks):
            same = (net.widths == first.widths and all(
                a.activation == f.activation and (a.bias is None) == (f.bias is None)
                for a, f in zip(net.layers, first.layers, strict=True)))
            if not same:
                raise InputError(f"networks must share one architecture (widths, activations, "
                                 f"biases); network {b} is {net!r}, network 0 is {first!r}")
        from layerinv._torch_io import _activation_module

        self.count = len(networks)
        self.output_dim = first.output_dim
        distinct = list(networks) if any(net is not first for net in networks) else [first]
        self.weights = []
        self.biases = []
        self.activations = nn.ModuleList()
        for index, layer in enumerate(first.layers):
            operators = [net.layers[index].operator for net in distinct]
            if all(isinstance(op, Conv2dOperator) for op in operators):
                self.weights.append(_StackedConvolution(operators, self.count, dev, dtype))
            else:
                # (N, n_in, n_out) contiguous: h (N, r, n_in) @ W^T without a transposed
                # view. An export: torch.bmm multiplies dense matrices, so each operator
                # gives its own.
                stacked = np.stack([op.to_dense().T for op in operators])
                self.weights.append(torch.as_tensor(stacked, device=dev, dtype=dtype).expand(
                    self.count, -1, -1))
            self.biases.append(None if layer.bias is None else torch.as_tensor(
                np.stack([net.layers[index].bias for net in distinct])[:, None, :],
                device=dev, dtype=dtype))
            act = _activation_module(layer.activation, index)
            self.activations.append(nn.Identity() if act is None else act)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z.reshape(self.count, -1, z.shape[-1])
        for weight, bias, act in zip(self.weights, self.biases, self.activations, strict=True):
            h = weight(h) if isinstance(weight, _StackedConvolution) else torch.bmm(h, weight)
            if bias is not None:
                h = h + bias
            h = act(h)
        return h.reshape(z.shape[0], -1)


class _StackedConvolution:
    """One convolution layer of N networks, applied to rows (N, r, n_in) as torch's
    convolution of each network's r rows by its own kernel.

    The dense matrix in torch.bmm would cost n_out x n_in per row (the shipped conv
    decoder's middle layer: 3136 x 1568): gradient descent took 23 s an instance there in
    batches of 2, measured, against about 1 s this way. One call per network keeps a row's
    numbers a function of r alone, as the dense layers' bmm does (a single call over all N r
    rows could pick its kernel by the row count).
    """

    def __init__(self, operators: Sequence[Conv2dOperator], count: int, dev: torch.device,
                 dtype: torch.dtype):
        first = operators[0]
        self.count = count
        self.input_shape = first.input_shape
        self.kernels = [torch.tensor(op.kernel, device=dev, dtype=dtype) for op in operators]
        self.options: dict[str, Any] = {"stride": first.stride, "padding": first.padding,
                                        "dilation": first.dilation}
        if first.transposed:
            self.options["output_padding"] = first.output_padding
        self.function = (nn.functional.conv_transpose2d if first.transposed
                         else nn.functional.conv2d)
        for op in operators[1:]:
            if (op.input_shape, op.kernel.shape, op.transposed) != (
                    first.input_shape, first.kernel.shape, first.transposed) or any(
                    getattr(op, name) != value for name, value in self.options.items()):
                raise InputError(f"networks must share one architecture: convolution {op!r} "
                                 f"differs from network 0's {first!r}")

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        rows = h.shape[1]
        out = [self.function(h[b].reshape(rows, *self.input_shape),
                             self.kernels[b if len(self.kernels) > 1 else 0], **self.options)
               .reshape(rows, -1) for b in range(self.count)]
        return torch.stack(out)


def _stacked_generator(networks: Sequence[Network], dev: torch.device | None,
                       dtype: torch.dtype | None
                       ) -> tuple[_StackedNetworks, int, torch.device, torch.dtype]:
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype must be a floating torch.dtype such as torch.float64; "
                         f"got {dtype!r}")
    dev = dev or torch.device("cpu")
    dtype = dtype or torch.float64
    return _StackedNetworks(networks, dev, dtype), networks[0].input_dim, dev, dtype


def _latent_dim(module: nn.Module, z0: object, latent_dim: int | None) -> int:
    if latent_dim is not None:
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, numbers.Integral) \
                or latent_dim < 1:
            raise InputError(f"latent_dim must be an int >= 1; got {latent_dim!r}")
        return int(latent_dim)
    if z0 is not None:
        shape = np.shape(z0)
        if len(shape) >= 1 and shape[-1] >= 1:
            return int(shape[-1])
    for child in module.modules():
        if isinstance(child, nn.Linear):
            return int(child.in_features)
    raise InputError(f"cannot tell the latent size of {type(module).__name__} (it has no "
                     f"nn.Linear to read it from): pass latent_dim=k")


def _make_forward(model: nn.Module, measurement: object, dev: torch.device,
                  dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    if measurement is None:
        return model
    if callable(measurement) and not isinstance(measurement, np.ndarray | torch.Tensor):
        return lambda z: measurement(model(z))
    if isinstance(measurement, torch.Tensor):
        matrix = measurement.detach().to(device=dev, dtype=dtype)
    else:
        array = as_float_array(measurement, "measurement")
        matrix = torch.as_tensor(array, device=dev, dtype=dtype)
    if matrix.ndim != 2:
        raise InputError(f"measurement must be a callable or a 2-D matrix (m, n); got an "
                         f"array of shape {tuple(matrix.shape)}")
    check_finite(matrix.cpu().to(torch.float64).numpy(), "measurement")
    return lambda z: model(z).reshape(z.shape[0], -1) @ matrix.T


def _probe(forward: Callable[[torch.Tensor], torch.Tensor], k: int, dev: torch.device,
           dtype: torch.dtype, measured: bool) -> tuple[int, ...]:
    """The shape of one observation, from a forward pass on a latent batch of two zeros."""
    what = "the generator followed by the measurement" if measured else "the generator"
    try:
        with torch.no_grad():
            out = forward(torch.zeros(2, k, device=dev, dtype=dtype))
    except Exception as exc:
        raise InputError(f"{what} failed on a latent batch of shape (2, {k}): "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"{what} must map a latent batch (B, {k}) to a tensor (B, ...); "
                         f"for B = 2 it gave {got}")
    return tuple(int(s) for s in out.shape[1:])


def _as_numpy(value: object, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().to(torch.float64).numpy()
    return as_float_array(value, name)


def _check_observations(x: object, obs_shape: tuple[int, ...], measured: bool
                        ) -> tuple[np.ndarray, bool]:
    array = _as_numpy(x, "x")
    if array.shape == obs_shape:
        array, single = array[None], True
    elif array.ndim == len(obs_shape) + 1 and array.shape[1:] == obs_shape:
        single = False
    else:
        what = "A(G(z))" if measured else "G(z)"
        raise InputError(f"x has shape {array.shape} but {what} has shape {obs_shape} per "
                         f"sample: x must have shape {obs_shape} (one observation) or "
                         f"(batch, {', '.join(map(str, obs_shape))})")
    if array.shape[0] == 0:
        raise InputError(f"x must hold at least one sample; got shape {array.shape}")
    check_finite(array, "x")
    return array, single


# Restarts draw from default_rng([seed, RESTART_STREAM]), never from default_rng(seed): a user
# who drew z* with default_rng(0) and ran gradient descent with seed 0 got restart 0 = z*.
RESTART_STREAM = 0x6764  # "gd"


def _initial_points(z0: object, k: int, n_samples: int, single: bool, restarts: int,
                    seed: object) -> np.ndarray:
    """Starting points, shape (B, R, k): N(0, I) per sample from its own seed, z0 first."""
    rngs = sample_rngs(seed, n_samples, RESTART_STREAM)
    starts = np.stack([rng.standard_normal((restarts, k)) for rng in rngs])
    if z0 is None:
        return starts
    given = _as_numpy(z0, "z0")
    ndim = given.ndim + (1 if single else 0)  # as if batched
    if single:
        given = given[None]
    if ndim == 2:
        given = given[:, None, :]
    if given.ndim != 3 or given.shape[0] != n_samples or given.shape[2] != k:
        expected = (f"({k},) or (R0, {k})" if single
                    else f"({n_samples}, {k}) or ({n_samples}, R0, {k})")
        raise InputError(f"z0 must have shape {expected}; got shape {_as_numpy(z0, 'z0').shape}")
    if given.shape[1] > restarts:
        raise InputError(f"z0 holds {given.shape[1]} starting points per sample but restarts is "
                         f"{restarts}; raise restarts")
    check_finite(given, "z0")
    # The given points first, then the draws in their own order (not overwriting the first
    # draws): the draws of a run without z0 stay the same chains.
    return np.concatenate([given, starts[:, : restarts - given.shape[1]]], axis=1)


# ----------------------------------------------------------------------------- the loop
def _run(forward: Callable[[torch.Tensor], torch.Tensor], batch: np.ndarray,
         starts: np.ndarray, target: np.ndarray | None, opts: dict[str, Any],
         dev: torch.device, dtype: torch.dtype, progress: bool | None,
         weights: np.ndarray | None = None, full_rows: bool = False
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """The loop. `weights` (B, n): 1 for observed entries, 0 for the others. `full_rows`:
    the forward takes every row at once (stacked networks), so stopped rows are evaluated
    too and left unchanged, instead of being left out of the forward pass."""
    n_samples, n_restarts, k = starts.shape
    rows = n_samples * n_restarts
    steps = opts["steps"]
    z = torch.as_tensor(starts.reshape(rows, k), device=dev, dtype=dtype).clone()
    x_rows = torch.as_tensor(batch, device=dev, dtype=dtype).repeat_interleave(n_restarts, 0)
    w_rows = (None if weights is None else torch.as_tensor(
        weights, device=dev, dtype=dtype).repeat_interleave(n_restarts, 0))
    counts = None if w_rows is None else w_rows.sum(1)
    sample_of = torch.arange(rows, device=dev) // n_restarts
    target_rows = (None if target is None else
                   torch.as_tensor(target, device=dev, dtype=dtype)[sample_of])
    mean = opts["reduction"] == "mean"
    prior = opts["prior_weight"]

    def loss_of(zr: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """Per-row loss at zr, the rows idx (None: every row, in order; no gather)."""
        xr = x_rows if idx is None else x_rows[idx]
        diff = (forward(zr) - xr).reshape(zr.shape[0], -1)
        if w_rows is not None:
            diff = diff * (w_rows if idx is None else w_rows[idx])
        # diff * diff: the same numbers as diff.square(), with a cheaper backward pass.
        data = (diff * diff).mean(1) if mean and w_rows is None else (diff * diff).sum(1)
        if mean and w_rows is not None:
            data = data / (counts if idx is None else counts[idx])
        return data + prior * zr.square().sum(1) if prior else data

    state = _OptimizerState(opts, z)
    active = torch.ones(rows, dtype=torch.bool, device=dev)
    # Why each row stopped, as an index into GD_STATUSES; rows still running say 'max_steps'.
    reason = torch.full((rows,), GD_STATUSES.index(Status.MAX_STEPS), dtype=torch.int8, device=dev)
    prev_loss = torch.full((rows,), float("inf"), device=dev, dtype=dtype)
    best_loss = torch.full((rows,), float("inf"), device=dev, dtype=dtype)
    best_z = z.clone()
    history = torch.zeros((steps + 1, rows), device=dev, dtype=dtype)
    evaluations = torch.zeros(rows, dtype=torch.long, device=dev)
    all_rows = torch.arange(rows, device=dev)

    bar = tqdm(total=steps, desc="gradient descent", unit="step", leave=False,
               disable=progress is False, delay=0.0 if progress else 2.0)
    try:
        for step in range(steps + 1):
            idx = all_rows if bool(active.all()) else all_rows[active]
            if idx.numel() == 0:
                break
            last = step == steps
            zr = z[idx]
            # Every row in order: no gather of x (z and -z in one pass would need one).
            every = all_rows if opts["sign_flip"] and not full_rows else None
            if full_rows and idx.numel() < rows:
                loss, grad, flipped = _evaluate(loss_of, z, every, opts["sign_flip"],
                                                need_grad=not last, together=False)
                keep = active.clone()
                loss = loss[keep]
                grad = None if grad is None else grad[keep]
                flipped = None if flipped is None else flipped[keep]
            else:
                loss, grad, flipped = _evaluate(
                    loss_of, zr, every if idx.numel() == rows else idx, opts["sign_flip"],
                    need_grad=not last, together=not full_rows)
            if flipped is not None and bool(flipped.any()):
                zr = torch.where(flipped[:, None], -zr, zr)
                z[idx] = zr
                state.reset(idx[flipped])
            history[step, idx] = loss
            evaluations[idx] += 1
            better = loss < best_loss[idx]
            best_loss[idx] = torch.where(better, loss, best_loss[idx])
            best_z[idx] = torch.where(better[:, None], zr, best_z[idx])
            stop = _stops(loss, prev_loss[idx], idx, opts["rel_tol"], reason)
            if last:
                break
            prev_loss[idx] = loss
            if target_rows is not None:
                _stop_reached_targets(best_loss, target_rows, sample_of, active, reason,
                                      n_samples, n_restarts)
                stop |= ~active[idx]
            if bool(stop.any()):
                active[idx[stop]] = False
                keep = ~stop
                idx, zr, grad = idx[keep], zr[keep], grad[keep]
            if idx.numel():
                z[idx] = state.step(idx, zr, grad)
            bar.update(1)
    finally:
        bar.close()

    best_loss_s = best_loss.reshape(n_samples, n_restarts)
    best_r = torch.argmin(torch.nan_to_num(best_loss_s, nan=float("inf")), dim=1)
    chosen = torch.arange(n_samples, device=dev) * n_restarts + best_r
    z_best = best_z[chosen]
    with torch.no_grad():
        out = forward(z_best)
        misfit = (out - torch.as_tensor(batch, device=dev, dtype=dtype)).reshape(
            n_samples, -1).abs()
        if weights is not None:
            misfit = misfit * torch.as_tensor(weights, device=dev, dtype=dtype)
        residual = misfit.amax(1)
    final_loss = best_loss[chosen].cpu().to(torch.float64).numpy()
    reasons = reason[chosen].cpu().numpy()
    status = np.array([GD_STATUSES[r] for r in reasons], dtype=object)
    if target is not None:
        status[final_loss <= target] = Status.CONVERGED
    hist = history[:, chosen].cpu().to(torch.float64).numpy()
    counts = evaluations[chosen].cpu().numpy()
    histories = [hist[:count, b].copy() for b, count in enumerate(counts)]
    return (z_best.detach().cpu().to(torch.float64).numpy(), final_loss, status,
            residual.cpu().to(torch.float64).numpy(), histories)


def _evaluate(loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], zr: torch.Tensor,
              idx: torch.Tensor | None, sign_flip: bool, need_grad: bool, together: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Loss (and gradient) per row at zr (rows idx), or at -zr where that is lower (sign
    flip). `together`: z and -z in one forward pass (not for stacked networks, whose forward
    takes its rows in a fixed layout)."""
    n = zr.shape[0]
    if sign_flip and not together:
        plus, grad_plus = _loss_and_grad(loss_of, zr, idx, need_grad)
        minus, grad_minus = _loss_and_grad(loss_of, -zr, idx, need_grad)
        loss = torch.cat([plus, minus])
        grad = None if not need_grad else torch.cat([grad_plus, grad_minus])
    elif sign_flip:
        loss, grad = _loss_and_grad(loss_of, torch.cat([zr, -zr]), torch.cat([idx, idx]),
                                    need_grad)
    else:
        loss, grad = _loss_and_grad(loss_of, zr, idx, need_grad)
    if not sign_flip:
        return loss, grad, None
    flipped = loss[n:] < loss[:n]
    loss = torch.where(flipped, loss[n:], loss[:n])
    if grad is not None:
        grad = torch.where(flipped[:, None], grad[n:], grad[:n])
    return loss, grad, flipped


def _loss_and_grad(loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   point: torch.Tensor, idx: torch.Tensor | None, need_grad: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    with torch.enable_grad():
        point = point.detach().requires_grad_(need_grad)
        loss = loss_of(point, idx)
        grad = torch.autograd.grad(loss.sum(), point)[0] if need_grad else None
    return loss.detach(), grad


def _stops(loss: torch.Tensor, prev: torch.Tensor, idx: torch.Tensor, rel_tol: float | None,
           reason: torch.Tensor) -> torch.Tensor:
    """Rows that stop before stepping: non-finite loss (diverged) or stalled."""
    diverged = ~torch.isfinite(loss)
    reason[idx[diverged]] = GD_STATUSES.index(Status.DIVERGED)
    stop = diverged
    if rel_tol is not None:
        scale = torch.maximum(prev, loss)
        stalled = ~diverged & torch.isfinite(prev) & ((prev - loss).abs() <= rel_tol * scale)
        reason[idx[stalled]] = GD_STATUSES.index(Status.STALLED)
        stop = stop | stalled
    return stop


def _stop_reached_targets(best_loss: torch.Tensor, target_rows: torch.Tensor,
                          sample_of: torch.Tensor, active: torch.Tensor, reason: torch.Tensor,
                          n_samples: int, n_restarts: int) -> None:
    """Stop every restart of a sample once one of its restarts is at or below the target."""
    reached_rows = best_loss <= target_rows
    reached = reached_rows.reshape(n_samples, n_restarts).any(1)[sample_of]
    newly = reached & active
    if bool(newly.any()):
        active[newly] = False
        reason[newly] = GD_STATUSES.index(Status.CONVERGED)


class _OptimizerState:
    """Adam or heavy-ball SGD with per-row state (torch.optim formulas), rows updated by index."""

    def __init__(self, opts: dict[str, Any], z: torch.Tensor):
        self.adam = opts["optimizer"] == "adam"
        self.lr = opts["lr"]
        self.momentum = opts["momentum"]
        self.m = torch.zeros_like(z)
        self.v = torch.zeros_like(z) if self.adam else None
        # beta^t as running products, not `beta ** t`: a vectorised pow and the scalar one
        # used for a tensor's last few elements differ in the last bit, so a row's answer
        # would depend on where in the batch it sits (products round the same everywhere).
        self.power1 = torch.ones(z.shape[0], device=z.device, dtype=z.dtype)
        self.power2 = torch.ones(z.shape[0], device=z.device, dtype=z.dtype)

    def reset(self, rows: torch.Tensor) -> None:
        self.m[rows] = 0.0
        if self.v is not None:
            self.v[rows] = 0.0
        self.power1[rows] = 1.0
        self.power2[rows] = 1.0

    def step(self, idx: torch.Tensor, zr: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The next iterate of rows idx (at zr, with gradient grad); updates their state."""
        if self.adam:
            beta1, beta2 = ADAM_BETAS
            m = beta1 * self.m[idx] + (1.0 - beta1) * grad
            v = beta2 * self.v[idx] + (1.0 - beta2) * grad.square()
            self.m[idx], self.v[idx] = m, v
            power1 = self.power1[idx] * beta1
            power2 = self.power2[idx] * beta2
            self.power1[idx], self.power2[idx] = power1, power2
            bias1 = (1.0 - power1)[:, None]
            bias2 = (1.0 - power2)[:, None]
            return zr - (self.lr / bias1) * m / (v.sqrt() / bias2.sqrt() + ADAM_EPS)
        if self.momentum:
            m = self.momentum * self.m[idx] + grad
            self.m[idx] = m
            return zr - self.lr * m
        return zr - self.lr * grad
