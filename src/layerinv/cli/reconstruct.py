"""The `layerinv reconstruct` command: from measurements y = A(G(z*)) (+ noise) back to z.

`add_parser(subparsers)` registers it on the main parser's sub-command action and sets `run`
to `run_reconstruct`, which takes the parsed arguments and returns the exit status.

The operator is built from the options:
- mask: `--mask FILE.npy` (boolean, or 0/1, of length n), or `--keep-fraction F` (a random
  mask from `--mask-seed`), or `--block SIZE --image-shape ROWS COLS` (one hidden square,
  corner from `--mask-seed`). The observation holds the kept entries (m values) or the full
  signal (n values; the hidden entries are ignored).
- gaussian / magnitude: `--matrix FILE.npy` (m, n), or `-m M` for Gaussian(M, n, --matrix-seed)
  (entries N(0, 1/M)), so that the same A can be rebuilt from its seed.
- identity: nothing.
Observations come from `--observation FILE.npy` ((m,) or (B, m)), or `--simulate COUNT` draws
latents z ~ N(0, I) (numpy.random.default_rng([--seed, 1])), measures G(z), adds Gaussian
noise of standard deviation `--noise-sigma`, and reports the relative signal error as well.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from typing import Any

import numpy as np

from layerinv import _validation as files  # the .npy inputs and outputs, checked
from layerinv import solvers
from layerinv._validation import SEED, float_arg, int_arg

MEASUREMENTS = ("identity", "mask", "gaussian", "magnitude")
METHODS = ("auto", "exact", "linf", "l1", "lp+gd", "gd", "pgd")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "reconstruct", help="recover z (and the signal G(z)) from measurements y = A(G(z))",
        description="Inverse problems with a generative prior: inpainting (mask), compressed "
                    "sensing (gaussian) and phase retrieval (magnitude). Identity and mask go "
                    "straight to the layer-wise LP; gaussian and magnitude use projected "
                    "gradient descent with the LP as the projection (method pgd) or gradient "
                    "descent on the latent (method gd, CSGM).")
    p.add_argument("--network", required=True, help="network file (.npz from Network.save)")
    p.add_argument("--measurement", required=True, choices=MEASUREMENTS)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--observation", help="measurements y: .npy of shape (m,) or (B, m)")
    source.add_argument("--simulate", type=int_arg(1), metavar="COUNT",
                        help="draw COUNT latents z ~ N(0, I), measure G(z) and reconstruct")
    p.add_argument("--noise-sigma", type=float_arg(0.0), default=0.0,
                   help="--simulate: Gaussian noise of this standard deviation on y")
    mask = p.add_argument_group("mask")
    mask.add_argument("--mask", help="boolean (or 0/1) .npy of length n: True = kept")
    mask.add_argument("--keep-fraction", type=float_arg(0.0, strict=True, high=1.0),
                      help="random mask keeping this fraction")
    mask.add_argument("--block", type=int_arg(1), help="hide one BLOCK x BLOCK square")
    mask.add_argument("--image-shape", type=int_arg(1), nargs=2, metavar=("ROWS", "COLS"),
                      help="image shape for --block (default: square)")
    mask.add_argument("--mask-seed", type=SEED, default=0)
    matrix = p.add_argument_group("gaussian and magnitude")
    matrix.add_argument("--matrix", help="A as a .npy of shape (m, n)")
    matrix.add_argument("-m", "--measurements", type=int, dest="m",  # checked by Gaussian
                        help="number of measurements of a Gaussian A (N(0, 1/m) entries)")
    matrix.add_argument("--matrix-seed", type=SEED, default=0, help="seed of the Gaussian A")
    method = p.add_argument_group("method")
    method.add_argument("--method", default="auto", choices=METHODS,
                        help="auto: linf for identity/mask, pgd for gaussian/magnitude")
    method.add_argument("--noise", type=float_arg(0.0), default=None,
                        help="LP methods: a bound on ||y - A G(z*)||_inf, if known")
    method.add_argument("--solver", default=None, choices=solvers.names(),
                        help="LP methods, lp+gd and pgd: the LP backend (default auto)")
    method.add_argument("--projection", default=None, choices=("linf", "l1"),
                        help="pgd: the LP used as the projection (default linf)")
    method.add_argument("--max-iter", type=int_arg(1), default=None,
                        help="pgd: most steps per start")
    method.add_argument("--tol", type=float_arg(0.0, strict=True), default=None,
                        help="pgd: relative-change stop")
    method.add_argument("--no-polish", action="store_true",
                        help="pgd: no Gauss-Newton steps after the projections")
    method.add_argument("--restarts", type=int_arg(1), default=None,
                        help="pgd and gd: starts")
    method.add_argument("--preset", default=None, help="gd: bora2017 (default) or hand2017")
    method.add_argument("--steps", type=int_arg(1), default=None, help="gd: steps")
    method.add_argument("--seed", type=SEED, default=0,
                        help="seed of the random restarts and of --simulate's latents")
    p.add_argument("--out", help="where to write z (.npy; the suffix is added if missing)")
    p.add_argument("--signal-out", help="where to write the signal G(z) (.npy)")
    p.add_argument("--quiet", action="store_true", help="print only the totals")
    p.set_defaults(run=run_reconstruct)
    return p


def run_reconstruct(args: argparse.Namespace) -> int:
    from layerinv._reconstruct import reconstruct
    from layerinv.measurements import GaussianNoise
    from layerinv.network import Network

    out, signal_out = _output_paths(args)
    net = Network.load(args.network)
    measurement = build_measurement(args, net.output_dim)
    measurement.check_signal_size(net.output_dim)
    truth = None
    if args.simulate is not None:
        # Tagged: default_rng([seed, 1]) is not default_rng(seed), the generator of the random
        # starts, so no start is the true latent (NumPy reads [s, 0] as s).
        z_true = np.random.default_rng([args.seed, 1]).standard_normal((args.simulate,
                                                                        net.input_dim))
        truth = net.forward(z_true)
        y = measurement.apply(truth)
        if args.noise_sigma > 0:
            y = GaussianNoise(args.noise_sigma, seed=args.seed + 2 * 2**32)(y)
    else:
        y = files.load_npy(args.observation, "--observation")
        y = _mask_full_signal(measurement, y, net.output_dim)
    method, options = _method_options(args, measurement)
    result = reconstruct(net, y, measurement, method, **options)
    if out is not None:
        files.save_npy(out, result.z, "--out")
    if signal_out is not None:
        files.save_npy(signal_out, result.signal, "--signal-out")
    statuses = Counter(np.atleast_1d(result.status).tolist())
    fits = np.atleast_1d(result.measurement_residual)
    samples = fits.size
    if not args.quiet:
        print(f"measurement {measurement!r}, method {result.method}, {samples} sample(s), "
              f"{result.seconds:.2f} s")
        for i, fit in enumerate(fits):
            status = np.atleast_1d(result.status)[i]
            line = f"  sample {i:>4}  {status:<10} ||y - A G(z)||_2 = {fit:.3e}"
            if truth is not None:
                line += f"  relative signal error {_relative(result.signal, truth)[i]:.3e}"
            print(line)
    summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
    print(f"{int(np.sum(result.success))} of {samples} fit the measurements ({summary})")
    if truth is not None:
        errors = _relative(result.signal, truth)
        print(f"relative signal error: median {np.median(errors):.3e}, max {np.max(errors):.3e}"
              f"; {int(np.sum(errors < 1e-3))} of {samples} below 1e-3")
    if out is not None or signal_out is not None:
        written = [str(path) for path in (out, signal_out) if path is not None]
        print(f"wrote {' and '.join(written)}")
    return 0


def _output_paths(args: argparse.Namespace) -> tuple[Any, Any]:
    """--out and --signal-out as the files really written, checked before any work."""
    inputs = {"--network": args.network, "--observation": args.observation,
              "--mask": args.mask, "--matrix": args.matrix}
    out = None if args.out is None else files.output_path(args.out, "--out", suffix=".npy",
                                                    inputs=inputs)
    signal_out = None if args.signal_out is None else files.output_path(
        args.signal_out, "--signal-out", suffix=".npy", inputs=inputs)
    files.check_distinct({"--out": out, "--signal-out": signal_out})
    return out, signal_out


def build_measurement(args: argparse.Namespace, n: int) -> Any:
    """The operator the options describe, for signals of size n."""
    from layerinv.errors import InputError
    from layerinv.measurements import Gaussian, Identity, Magnitude, Mask, Matrix

    kind = args.measurement
    if kind == "identity":
        return Identity(n)
    if kind == "mask":
        given = [name for name, value in (("--mask", args.mask),
                                          ("--keep-fraction", args.keep_fraction),
                                          ("--block", args.block)) if value is not None]
        if len(given) != 1:
            raise InputError(f"--measurement mask needs exactly one of --mask, --keep-fraction "
                             f"or --block; got {given or 'none'}")
        if args.mask is not None:
            keep = files.load_npy(args.mask, "--mask")
            if keep.dtype != np.bool_ and np.isin(keep, (0, 1)).all():
                keep = keep.astype(bool)
            return Mask(keep)
        if args.keep_fraction is not None:
            return Mask.random(n, args.keep_fraction, seed=args.mask_seed)
        shape = args.image_shape
        if shape is None:
            side = math.isqrt(n)
            if side * side != n:
                raise InputError(f"--block needs --image-shape: the signal size {n} is not a "
                                 f"square")
            shape = (side, side)
        if shape[0] * shape[1] != n:
            raise InputError(f"--image-shape {shape[0]} x {shape[1]} does not hold the "
                             f"network's {n} outputs")
        return Mask.block(shape, args.block, seed=args.mask_seed)
    if (args.matrix is None) == (args.m is None):
        raise InputError(f"--measurement {kind} needs exactly one of --matrix FILE.npy or "
                         f"-m M (a Gaussian A from --matrix-seed)")
    if args.matrix is not None:
        linear: Any = Matrix(files.load_npy(args.matrix, "--matrix"))
    else:
        linear = Gaussian(args.m, n, seed=args.matrix_seed)
    return Magnitude(linear) if kind == "magnitude" else linear


def _method_options(args: argparse.Namespace, measurement: Any) -> tuple[str, dict[str, Any]]:
    from layerinv.measurements import Identity, Mask

    method = args.method
    if method == "auto":
        method = "linf" if isinstance(measurement, Identity | Mask) else "pgd"
    if method == "pgd":
        given = {"projection": args.projection, "max_iter": args.max_iter, "tol": args.tol,
                 "restarts": args.restarts}
        options = {key: value for key, value in given.items() if value is not None}
        options["polish"] = not args.no_polish
        options["seed"] = args.seed
    elif method == "gd":
        given = {"preset": args.preset, "steps": args.steps, "restarts": args.restarts}
        options = {key: value for key, value in given.items() if value is not None}
        options["seed"] = args.seed
    elif method == "lp+gd":
        options = {"noise": args.noise, "seed": args.seed}
    else:
        options = {"noise": args.noise}
    if method != "gd" and args.solver is not None:
        options["solver"] = args.solver
    return method, options


def _mask_full_signal(measurement: Any, y: np.ndarray, n: int) -> np.ndarray:
    """A full signal given to a mask: keep the observed entries."""
    from layerinv.measurements import Mask

    if isinstance(measurement, Mask) and measurement.out_dim != n and y.ndim in (1, 2) \
            and y.shape[-1] == n:
        return measurement.apply(y)
    return y


def _relative(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    estimate, truth = np.atleast_2d(estimate), np.atleast_2d(truth)
    return np.linalg.norm(estimate - truth, axis=1) / np.maximum(
        np.linalg.norm(truth, axis=1), 1e-300)
