"""Benchmark the pattern method against layer-wise l_inf and gradient descent (issue 13).

Run by hand from the repository root (never in the tests):

    PYTHONPATH=src python benchmarks/bench_pattern.py [--instances N] [--part P] [--seed S]

Parts (each prints success rates beside times, ratios measured in this run):
- noisy:  random k x 250 x 600 ReLU nets (k = 20, 110), x = G(z*) + e, e uniform in
          [-a, a], a = 1e-3 max|G(z*)|: median relative latent error and wall time of
          `invert(method="pattern")` (l2 and linf) and of the default 'auto' (linf, then the
          l2 refinement from its answer) against `invert(method="linf")` on the same
          instances (targets: error <= 0.5x, time <= 3x).
- narrow: realizable data on non-expansive nets (random 20 x 30 x 500 and 20 x 40 x 500,
          and the shipped 20 x 60 x 784 decoder): the rate at which the Jacobian on z*'s
          region has full rank, and the recovery rates (||z - z*||_inf < 1e-6) of
          layer-wise linf and of pattern (target: pattern = full-rank rate within 1 in 100).
- mnist:  the paper's denoising (Gaussian noise of variance 0.3 on pixels in [0, 1]) on the
          shipped ReLU decoder, on G(z*) and on held-out real digits, and inpainting with
          that noise (half the pixels kept): PSNR against the clean image, the objective
          mean (A G(z) - y)^2 + prior ||z||^2 and seconds, pattern against gradient descent
          (bora2017, the same loss and prior). Targets: median PSNR >= gd's, objective <=
          gd's on >= 90 %, >= 5x faster.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import layerinv
from layerinv import measurements, pretrained

PRIOR = 0.3 / 784
"""The MAP prior weight for N(0, I) latents under Gaussian noise of variance 0.3 with the
mean-square loss: (1 / (2 * 0.3)) ||r||^2 + ||z||^2 / 2 = (784 / 0.6) (mean r^2 + PRIOR ||z||^2)."""


def _relative(z_hat: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.linalg.norm(z_hat - z, axis=-1) / np.linalg.norm(z, axis=-1)


def _timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def noisy(count: int, rng: np.random.Generator) -> None:
    print("== noisy random nets (uniform noise 1e-3 of max|x|)")
    for k in (20, 110):
        errors: dict[str, list[float]] = {"linf": [], "auto": [], "pattern l2": [],
                                          "pattern linf": []}
        seconds = dict.fromkeys(errors, 0.0)
        for _ in range(count):
            net = layerinv.random_network((k, 250, 600), "relu", seed=rng)
            z = rng.normal(size=k)
            clean = net.forward(z)
            a = 1e-3 * np.abs(clean).max()
            x = clean + rng.uniform(-a, a, size=clean.shape)
            for name, options in (("linf", {"method": "linf"}), ("auto", {"method": "auto"}),
                                  ("pattern l2", {"method": "pattern", "loss": "l2"}),
                                  ("pattern linf", {"method": "pattern", "loss": "linf"})):
                result, spent = _timed(layerinv.invert, net, x, progress=False, **options)
                errors[name].append(float(_relative(result.z, z)))
                seconds[name] += spent
        base_error, base_time = np.median(errors["linf"]), seconds["linf"]
        for name in errors:
            print(f"k={k:>3} {name:<13} median rel. error {np.median(errors[name]):.2e} "
                  f"({np.median(errors[name]) / base_error:.2f}x linf; worst instance ratio "
                  f"{np.max(np.array(errors[name]) / np.array(errors['linf'])):.2f})  "
                  f"time {seconds[name]:.2f} s ({seconds[name] / base_time:.2f}x)")


def narrow(count: int, rng: np.random.Generator) -> None:
    from layerinv import _pattern

    print("== realizable data on non-expansive nets")
    cases = [("random 20x30x500", lambda: layerinv.random_network((20, 30, 500), seed=rng)),
             ("random 20x40x500", lambda: layerinv.random_network((20, 40, 500), seed=rng)),
             ("shipped 20x60x784", lambda: pretrained.mnist_generator("relu"))]
    for name, build in cases:
        net = build()
        z = rng.normal(size=(count, net.input_dim))
        x = net.forward(z)
        full = np.mean([np.linalg.matrix_rank(_pattern.region_of(
            net, _pattern.pattern_at(net, zi)).jacobian) == net.input_dim for zi in z])
        rows = []
        for method in ("linf", "pattern"):
            result, spent = _timed(layerinv.invert, net, x, method=method, progress=False)
            recovered = np.mean(np.max(np.abs(result.z - z), axis=1) < 1e-6)
            rows.append(f"{method} {recovered:.2f} ({spent:.1f} s)")
        print(f"{name:<18} full rank at z*: {full:.2f}   recovered: " + ", ".join(rows))


def mnist(count: int, rng: np.random.Generator, starts: int | None = None,
          hops: int | None = None) -> None:
    print(f"== MNIST, shipped ReLU decoder, Gaussian noise variance 0.3, prior {PRIOR:.2e}")
    net = pretrained.mnist_generator("relu")
    # PyTorch's import and first call (about 2 s) are not gradient descent's work: warm it.
    layerinv.reconstruct(net, net.forward(np.zeros(20)), measurements.Identity(), "gd",
                         progress=False, steps=2)
    extra = {name: value for name, value in (("starts", starts), ("hops", hops))
             if value is not None}
    sd = np.sqrt(0.3)
    held_out = pretrained.mnist_digits().images[:count]
    generated = net.forward(rng.normal(size=(count, 20)))
    half = measurements.Mask.random(784, 0.5, seed=rng)
    for name, clean, meas in (("denoise G(z*)", generated, measurements.Identity()),
                              ("denoise real", held_out, measurements.Identity()),
                              ("inpaint 50% G(z*)", generated, half)):
        y = meas.apply(clean + sd * rng.normal(size=clean.shape))
        results = {}
        for method, options in (("gd", {"prior_weight": PRIOR, "seed": 1}),
                                ("pattern", {"prior": PRIOR, "seed": 1, **extra})):
            result, spent = _timed(layerinv.reconstruct, net, y, meas, method, progress=False,
                                   **options)
            signal = net.forward(result.inversion.z)
            psnr = 10 * np.log10(1.0 / np.mean((signal - clean) ** 2, axis=1))
            objective = (np.mean((meas.apply(signal) - y) ** 2, axis=1)
                         + PRIOR * np.sum(result.inversion.z ** 2, axis=1))
            results[method] = (psnr, objective, spent, result.inversion.success)
        gd, pattern = results["gd"], results["pattern"]
        lower = np.mean(pattern[1] <= gd[1] * (1 + 1e-9))
        print(f"{name:<18} PSNR median gd {np.median(gd[0]):.2f} dB, pattern "
              f"{np.median(pattern[0]):.2f} dB; objective <= gd's on {lower:.0%}; time gd "
              f"{gd[2]:.1f} s, pattern {pattern[2]:.1f} s ({gd[2] / pattern[2]:.1f}x faster); "
              f"pattern success {np.mean(pattern[3]):.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--part", choices=("all", "noisy", "narrow", "mnist"), default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--starts", type=int, default=None,
                        help="mnist: the pattern method's starts (default: its own)")
    parser.add_argument("--hops", type=int, default=None,
                        help="mnist: the pattern method's hops (default: its own, none)")
    args = parser.parse_args()
    rng = np.random.default_rng([args.seed, 0x6270])  # "bp"
    for part, run in (("noisy", noisy), ("narrow", narrow), ("mnist", mnist)):
        if args.part in ("all", part):
            if part == "mnist":
                mnist(args.instances, rng, args.starts, args.hops)
            else:
                run(args.instances, rng)


if __name__ == "__main__":
    main()
