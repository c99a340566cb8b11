"""Benchmark the layer-wise LP against gradient descent on the latent, side by side.

Run by hand from the repository root:

    PYTHONPATH=src python benchmarks/bench_gradient.py [--instances N] [--seed S] [--quick]
        [--torch-threads T] [--no-early-stop]

What it measures (Lei, Jalal, Dhillon, Dimakis, "Inverting Deep Generative Models, One Layer
at a Time", NeurIPS 2019, the success-versus-k experiment):

- Nets: k x 250 x 600 ReLU random nets without bias (N(0, 1/n_out) weights), k in
  {10, 30, 50, 70, 90, 110}; each instance draws its own net, z ~ N(0, I) and noise from a
  generator seeded by (seed, k, index).
- Observations: x = G(z) + e, e uniform in [-1e-9, 1e-9] per entry, as in the paper, so that
  the LP is exercised (on exactly realizable data `linf` can finish by least squares).
- Methods, on the same instances:
  linf     layerinv.invert(net, x, "linf") (structured interior point, HiGHS fallback);
  gd       layerinv.baselines.gradient_descent(net, x, preset="bora2017"): Adam, lr 0.01,
           1000 steps, 10 restarts batched in one tensor, float64, no early stopping (the CSGM
           settings; seed = instance index);
  gd-stop  the same with target_fit=1e-7 (a sample stops once its RMS residual is below
           1e-7 * max|x|): the fastest honest GD, since the fixed 1000 steps are wasted time on
           instances it solves (skipped with --no-early-stop);
  lp+gd    the linf answer refined by layerinv._gradient.refine (one restart from the LP's z,
           Adam lr 0.01, up to 1000 steps, stops at the same target); its time includes the LP.
- Success: relative latent error ||z_hat - z|| / ||z|| < 1e-3, the paper's criterion.
- Time: wall time (time.perf_counter) of one call per instance (the `seconds` of the result);
  medians over instances, and the ratio of each median to linf's.
- PyTorch runs with --torch-threads intra-op threads (default 1: the tensors are (10, 600) at
  most, and extra OpenMP workers only cost synchronisation, or much more on a shared machine).
  numpy/BLAS (the LP) is used as installed.

The paper reports GD (Adam on the latent) at 1.6 to 2.1 s per instance, with success falling to
0 by k = 80, while the LP stays at success 1.0 up to k = 100.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

import layerinv
from layerinv._gradient import REFINE_TARGET, refine
from layerinv.baselines import gradient_descent

K_VALUES = (10, 30, 50, 70, 90, 110)
K_VALUES_QUICK = (10, 70)
HIDDEN, OUTPUT = 250, 600
NOISE = 1e-9
SUCCESS = 1e-3
PAPER = ("paper (Lei et al. 2019): GD 1.6-2.1 s per instance, success 0 by k = 80; "
         "LP success 1.0 up to k = 100")


def make_instance(k: int, seed: int, index: int
                  ) -> tuple[layerinv.Network, np.ndarray, np.ndarray]:
    net_rng, z_rng, noise_rng = (np.random.default_rng([seed, k, index, part])
                                 for part in range(3))
    net = layerinv.random_network([k, HIDDEN, OUTPUT], "relu", seed=net_rng)
    z = z_rng.standard_normal(k)
    x = net.forward(z) + noise_rng.uniform(-NOISE, NOISE, size=OUTPUT)
    return net, z, x


def relative_error(z_hat: np.ndarray, z: np.ndarray) -> float:
    return float(np.linalg.norm(z_hat - z) / np.linalg.norm(z))


def run_instance(k: int, seed: int, index: int, early_stop: bool
                 ) -> dict[str, tuple[float, float]]:
    """Per method: (relative error, seconds)."""
    net, z, x = make_instance(k, seed, index)
    out: dict[str, tuple[float, float]] = {}
    started = time.perf_counter()
    lp = layerinv.invert(net, x, "linf", progress=False)
    out["linf"] = (relative_error(lp.z, z), time.perf_counter() - started)
    gd = gradient_descent(net, x, preset="bora2017", seed=index, progress=False)
    out["gd"] = (relative_error(gd.z, z), gd.seconds)
    if early_stop:
        stop = gradient_descent(net, x, preset="bora2017", seed=index,
                                target_fit=REFINE_TARGET, progress=False)
        out["gd-stop"] = (relative_error(stop.z, z), stop.seconds)
    started = time.perf_counter()
    refined = refine(net, x, lp, progress=False)
    out["lp+gd"] = (relative_error(refined.z, z),
                    out["linf"][1] + (time.perf_counter() - started))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20,
                        help="instances per k (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--quick", action="store_true",
                        help=f"k in {K_VALUES_QUICK} and 3 instances")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch.set_num_threads (default 1)")
    parser.add_argument("--no-early-stop", action="store_true",
                        help="skip the gd-stop column")
    args = parser.parse_args()
    k_values = K_VALUES_QUICK if args.quick else K_VALUES
    instances = 3 if args.quick else args.instances
    early_stop = not args.no_early_stop
    torch.set_num_threads(args.torch_threads)
    methods = ["linf", "gd", *(["gd-stop"] if early_stop else []), "lp+gd"]

    print(f"layerinv {layerinv.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} thread(s)), numpy {np.__version__}, "
          f"python {platform.python_version()}, {platform.machine()}")
    print(f"nets k x {HIDDEN} x {OUTPUT} ReLU, {instances} instances per k, noise uniform "
          f"+-{NOISE:g}, success = relative z error < {SUCCESS:g}, seed {args.seed}")
    header = f"{'k':>4} " + " ".join(f"{m + ' succ':>12} {m + ' s':>10}" for m in methods)
    header += "  " + " ".join(f"{m + '/linf':>11}" for m in methods[1:])
    print(header)
    started = time.perf_counter()
    for k in k_values:
        rows = [run_instance(k, args.seed, i, early_stop) for i in range(instances)]
        rates = {m: np.mean([r[m][0] < SUCCESS for r in rows]) for m in methods}
        medians = {m: statistics.median(r[m][1] for r in rows) for m in methods}
        line = f"{k:>4} " + " ".join(f"{rates[m]:>12.2f} {medians[m]:>10.3f}" for m in methods)
        line += "  " + " ".join(f"{medians[m] / medians['linf']:>11.1f}" for m in methods[1:])
        print(line, flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")
    print(PAPER)


if __name__ == "__main__":
    main()
