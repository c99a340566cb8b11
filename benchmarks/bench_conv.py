"""Benchmark inversion of convolutional generators (issue 14).

Run by hand from the repository root (never in the tests):

    PYTHONPATH=src python benchmarks/bench_conv.py [--instances N] [--part P] [--seed S]

Parts (success rates beside times; ratios against gradient descent measured in this run):
- random:  random DCGAN-style nets (`random_dcgan`: z 16 -> 64x4x4 -> 32x8x8 -> 16x16x16,
           ReLU, BatchNorm folded; and with a contracting tanh 3x32x32 output on top), one
           net and z* ~ N(0, I) per instance, x = G(z*): the rate at which the Jacobian on
           z*'s region has full rank, and recovery (||z - z*|| <= 1e-6 ||z*||) and seconds of
           'pattern', the default 'auto' and gradient descent (bora2017). Target: >= 95 % of
           the full-rank instances recovered.
- shipped: the shipped convolutional MNIST decoder (`mnist_generator("conv")`): realizable
           recovery, random-pixel inpainting (half the pixels kept) exact recovery, and the
           paper's denoising (Gaussian noise of variance 0.3, MAP prior) PSNR, pattern against
           gradient descent (same loss and prior). Targets: realizable >= 95 %, inpainting
           exact >= 90 %, denoising PSNR >= gd's at >= 10x less time.
- grid:    the `conv` experiment's denoising cells (`layerinv reproduce conv`'s instances, z*
           Gaussian and encoded real digits, --instances trials each) run as the experiment
           runs them (gradient descent and pattern in its batches), with the report's verdict
           line per source: median PSNR, objective no higher, the median-seconds ratio.
- dcgan64: the classic 64 x 64 x 3 DCGAN (z = 100, random weights, BatchNorm folded):
           seconds and peak memory of the default `invert` on realizable data (target: under
           a minute, under 2 GB, 2 cores).
"""

from __future__ import annotations

import argparse
import resource

import numpy as np
from bench_pattern import PRIOR, _relative, _timed  # benchmarks/: the script's directory

import layerinv
from layerinv import measurements, pretrained
from layerinv._pattern import _rank, pattern_at, region_of
from layerinv.network import random_dcgan

RECOVERED = 1e-6


def _full_rank(net: layerinv.Network, z: np.ndarray) -> bool:
    return _rank(region_of(net, pattern_at(net, z)).jacobian)[1]


def random_nets(count: int, rng: np.random.Generator) -> None:
    print("== random DCGAN-style nets, realizable")
    for label, output in (("relu 16x16x16", None), ("tanh 3x32x32", 3)):
        methods = {"pattern": {"method": "pattern"}, "auto": {},
                   "gd": {"method": "gd", "seed": 1}}
        recovered = {m: [] for m in methods}
        seconds = {m: [] for m in methods}
        ranks = []
        for _ in range(count):
            net = random_dcgan(seed=rng, output_channels=output)
            z = rng.normal(size=16)
            x = net.forward(z)
            ranks.append(_full_rank(net, z))
            for method, options in methods.items():
                result, spent = _timed(layerinv.invert, net, x, progress=False, **options)
                recovered[method].append(_relative(result.z, z) <= RECOVERED)
                seconds[method].append(spent)
        full = np.array(ranks)
        print(f"{label}: Jacobian full rank on {full.mean():.0%} of {count}")
        gd_time = np.median(seconds["gd"])
        for method in methods:
            hit, spent = np.array(recovered[method]), np.array(seconds[method])
            print(f"  {method:<8} recovered {hit.mean():.0%} (of the full-rank "
                  f"{hit[full].mean():.0%}); seconds median {np.median(spent):.2f}, "
                  f"max {spent.max():.2f}; gd / this {gd_time / np.median(spent):.1f}x")


def shipped(count: int, rng: np.random.Generator) -> None:
    net = pretrained.mnist_generator("conv")
    print(f"== shipped conv MNIST decoder {net.widths}")
    # PyTorch's import and first call are not gradient descent's work: warm it.
    layerinv.invert(net, net.forward(np.zeros(20)), "gd", progress=False, steps=2)
    z = rng.normal(size=(count, 20))
    clean = net.forward(z)
    for name, meas in (("realizable", measurements.Identity()),
                       ("inpaint 50% random pixels", measurements.Mask.random(784, 0.5,
                                                                               seed=rng))):
        y = meas.apply(clean)
        line = []
        for method, options in (("pattern", {"seed": 1}), ("gd", {"seed": 1})):
            result, spent = _timed(layerinv.reconstruct, net, y, meas, method, progress=False,
                                   **options)
            exact = _relative(result.inversion.z, z) <= RECOVERED
            line.append(f"{method} exact {exact.mean():.0%} in {spent:.1f} s")
        print(f"{name:<26} " + "; ".join(line))
    y = clean + np.sqrt(0.3) * rng.normal(size=clean.shape)
    results = {}
    for method, options in (("gd", {"prior_weight": PRIOR, "seed": 1}),
                            ("pattern", {"prior": PRIOR, "seed": 1})):
        result, spent = _timed(layerinv.reconstruct, net, y, measurements.Identity(), method,
                               progress=False, **options)
        signal = net.forward(result.inversion.z)
        psnr = 10 * np.log10(1.0 / np.mean((signal - clean) ** 2, axis=1))
        objective = (np.mean((signal - y) ** 2, axis=1)
                     + PRIOR * np.sum(result.inversion.z ** 2, axis=1))
        results[method] = (psnr, objective, spent)
    gd, pattern = results["gd"], results["pattern"]
    lower = np.mean(pattern[1] <= gd[1] * (1 + 1e-9))
    print(f"denoise var 0.3 G(z*)       PSNR median gd {np.median(gd[0]):.2f} dB, pattern "
          f"{np.median(pattern[0]):.2f} dB; objective <= gd's on {lower:.0%}; time gd "
          f"{gd[2]:.1f} s, pattern {pattern[2]:.1f} s ({gd[2] / pattern[2]:.1f}x faster)")


def grid(count: int) -> None:
    from layerinv.reproduction.experiments import conv
    from layerinv.reproduction.run import make_units

    print(f"== conv experiment, denoising cells, {count} trials per source")
    cells = [p for p in conv.grid(False, count)
             if p["task"] == "denoise" and p["method"] in ("pattern", "gd")]
    shared = conv.shared(False)
    rows = []
    for _, members in make_units([(conv.NAME, p) for p in cells], {conv.NAME: conv}):
        rows += [{**a, **b} for a, b in zip(members, conv.run_batch(members, shared),
                                            strict=True)]
    for source in ("gaussian", "digit"):
        mine = [r for r in rows if r["source"] == source and r["method"] == "pattern"]
        gd = [r for r in rows if r["source"] == source and r["method"] == "gd"]
        print(conv._denoise_clause(mine, gd, source))
        print(f"  median seconds per trial: gd {np.median([r['seconds'] for r in gd]):.2f}, "
              f"pattern {np.median([r['seconds'] for r in mine]):.3f}")


def dcgan64(count: int, rng: np.random.Generator) -> None:
    print("== classic 64 x 64 x 3 DCGAN (z 100), realizable, default invert")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(count):
        net, built = _timed(random_dcgan, 100, (512, 256, 128, 64), 4, output_channels=3,
                            seed=rng)
        z = rng.normal(size=100)
        result, spent = _timed(layerinv.invert, net, net.forward(z), progress=False)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  built in {built:.1f} s; invert {spent:.1f} s, status {result.status}, "
              f"relative error {_relative(result.z, z):.1e}; peak RSS {peak:.0f} MB "
              f"({before:.0f} MB before the first net)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--part", choices=("all", "random", "shipped", "grid", "dcgan64"),
                        default="all")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    if args.part in ("all", "random"):
        random_nets(args.instances, rng)
    if args.part in ("all", "shipped"):
        shipped(args.instances, rng)
    if args.part in ("all", "grid"):
        grid(args.instances)
    if args.part in ("all", "dcgan64"):
        dcgan64(min(args.instances, 3), rng)


if __name__ == "__main__":
    main()
