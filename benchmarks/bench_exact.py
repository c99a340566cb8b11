"""Benchmark the exact method's lean path and its certificate against a bare replay of its own
least-squares kernels, and print the certificate's tightness.

Run by hand from the repository root (never in the tests):

    PYTHONPATH=src python benchmarks/bench_exact.py [--nets N] [--batch B] [--reps R]
                                                    [--seed S] [--quick]

What it measures:
- Instances: N random ReLU nets 110 x 250 x 600 without bias (seeded), B latents z ~ N(0, I)
  each, x = G(z): realizable, so the exact method finishes every layer by least squares.
- Columns, per sample, medians over every sample and repetition. For each net and repetition
  the columns run in a shuffled order (seeded), each after a forward pass of the net, so that
  every column finds the net's weights in cache alike (the first column after a new net ran
  ~20 % slower) and a busy machine slows them alike:
  - `bare`: the least-squares kernels the exact path runs, replayed with nothing else: for
    each layer (the last first) and sample, the pinned rows (y > 1e-6 max|y| of the true
    activations), `operator.rows` (the copy), dsyrk, dpotrf, W_A' y_A and dpotrs;
  - `bare+dtrtri`: the same and dtrtri of the factor (the certificate's own kernel);
  - `exact` and `exact+cert` one at a time: `invert(net, x_b, "exact", certify=False / True)`
    for each sample; the same in a batch: one `invert(net, X, ...)` per net, divided by B.
  Ratios to the bare replay are measured in this run: `exact / bare` (target <= 1.3) and
  `exact+cert / bare+dtrtri` (target <= 2). Beside each time: the share of samples whose
  status is 'optimal' with ||z - z*|| / ||z*|| <= 1e-9, and with the certificate the share
  certified with ||z - z*||_inf <= error_bound.
- Tightness of the certificate: `tests/test_certificate_bounds.py`'s audit over its 1,080
  noisy instances (uniform noise, the bound stated; 6 seeds a net with --quick): median and
  worst of true error / bound, and of the bound over the formula it replaced, per layer
  (least-squares and LP answers apart) and on z.
One BLAS thread throughout (layerinv's own setting). Timings on a shared machine are noisy:
compare ratios within one run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.linalg import blas, lapack

import layerinv
from layerinv._blas import single_threaded_blas

WIDTHS = (110, 250, 600)
ACTIVE_TOL = 1e-6
TARGET_BARE = 1.3
TARGET_CERTIFIED = 2.0


def make_nets(count: int, batch: int, seed: int):
    """(net, Z, X, hidden) per net: B latents and their realizable observations."""
    rng = np.random.default_rng(seed)
    nets = []
    for _ in range(count):
        net = layerinv.random_network(WIDTHS, "relu", seed=rng)
        z = rng.standard_normal((batch, WIDTHS[0]))
        x, hidden = net.forward(z, return_hidden=True)
        nets.append((net, z, x, hidden))
    return nets


def bare_replay(net, hidden, certify: bool) -> None:
    """The exact path's least-squares kernels for every layer and sample, nothing else (the
    dpotrf flags its own: in place, the lower triangle zeroed)."""
    for index in range(len(net.layers) - 1, -1, -1):
        operator = net.layers[index].operator
        for y in hidden[index + 1]:
            rows = y > ACTIVE_TOL * np.abs(y).max()
            weight = operator.rows(rows)
            normal = blas.dsyrk(1.0, weight.T, trans=0, lower=0)
            factor, _ = lapack.dpotrf(normal, lower=0, clean=1, overwrite_a=1)  # the path's
            lapack.dpotrs(factor, weight.T @ y[rows], lower=0)
            if certify:
                lapack.dtrtri(factor, lower=0, unitdiag=0)


def judged(result, z) -> tuple[list[bool], list[bool]]:
    """Per sample: optimal and recovered to 1e-9; certified with the bound holding."""
    zs, statuses = np.atleast_2d(result.z), np.atleast_1d(result.status)
    certified = np.atleast_1d(result.certified)
    bounds = np.atleast_1d(result.error_bound)
    error = np.linalg.norm(zs - z, axis=1) / np.linalg.norm(z, axis=1)
    worst = np.abs(zs - z).max(axis=1)
    return ([bool(s == "optimal" and e <= 1e-9) for s, e in zip(statuses, error, strict=True)],
            [bool(c and w <= b) for c, w, b in zip(certified, worst, bounds, strict=True)])


def timings(nets, reps: int) -> dict[str, dict[str, list]]:
    """Per column: seconds per sample, and the per-sample judgements (`judged`)."""
    columns = ("bare", "bare+dtrtri", "exact", "exact+cert", "exact batch",
               "exact+cert batch")
    out = {name: {"seconds": [], "ok": [], "certified": []} for name in columns}
    order = np.random.default_rng(0)
    with single_threaded_blas():
        for _ in range(reps):
            for net, z, x, hidden in nets:
                batch = len(x)
                for name in order.permutation(columns):
                    record = out[name]
                    net.forward(z)  # the weights in cache, as for every column
                    if name.startswith("bare"):
                        started = time.perf_counter()
                        bare_replay(net, hidden, certify=name == "bare+dtrtri")
                        record["seconds"].append((time.perf_counter() - started) / batch)
                        continue
                    certify = "cert" in name
                    if name.endswith("batch"):
                        started = time.perf_counter()
                        result = layerinv.invert(net, x, "exact", certify=certify,
                                                 progress=False)
                        record["seconds"].append((time.perf_counter() - started) / batch)
                        ok, good = judged(result, z)
                    else:
                        ok, good = [], []
                        for x_b, z_b in zip(x, z, strict=True):
                            started = time.perf_counter()
                            result = layerinv.invert(net, x_b, "exact", certify=certify,
                                                     progress=False)
                            record["seconds"].append(time.perf_counter() - started)
                            one_ok, one_good = judged(result, z_b[None, :])
                            ok += one_ok
                            good += one_good
                    record["ok"] += ok
                    record["certified"] += good
    return out


def print_timings(out, nets, reps: int) -> None:
    median = {name: statistics.median(record["seconds"]) for name, record in out.items()}
    print(f"## Exact inversion, realizable {' x '.join(map(str, WIDTHS))} ReLU, "
          f"{len(nets)} nets x {len(nets[0][2])} samples, {reps} repetitions "
          f"(ms per sample, medians)\n")
    print("| column | ms | vs bare replay | optimal, z to 1e-9 | certified, bound holds |")
    print("|---|---:|---:|---:|---:|")
    for name, record in out.items():
        base = "bare+dtrtri" if "cert" in name else "bare"
        ratio = "" if name.startswith("bare") else f"{median[name] / median[base]:.2f}x"
        ok = f"{np.mean(record['ok']):.0%}" if record["ok"] else ""
        good = f"{np.mean(record['certified']):.0%}" if "cert" in name else ""
        print(f"| {name} | {median[name] * 1e3:.3f} | {ratio} | {ok} | {good} |")
    print()
    for name, base, target in (("exact", "bare", TARGET_BARE),
                               ("exact batch", "bare", TARGET_BARE),
                               ("exact+cert", "bare+dtrtri", TARGET_CERTIFIED),
                               ("exact+cert batch", "bare+dtrtri", TARGET_CERTIFIED)):
        ratio = median[name] / median[base]
        print(f"- {name} / {base}: {ratio:.2f}x (target <= {target}x): "
              f"{'MET' if ratio <= target else 'MISSED'}")
    print()


def print_tightness(quick: bool) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import test_certificate_bounds as bounds  # the property test's audit (pytest installed)

    seeds = 6 if quick else bounds.SEEDS
    runs = [bounds.audit(net, z, x, method, stated)
            for _, net, z, x, method, stated in bounds.noisy_instances(seeds=seeds)]
    print(f"## Certificate tightness: {len(runs)} noisy instances "
          f"(tests/test_certificate_bounds.py), bound stated\n")
    print("| group | count | error/bound median | worst | bound/old median | min | max |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, group in bounds.tightness(runs).items():
        print(f"| {name} | {group['count']} | {group['error/bound median']:.3g} | "
              f"{group['error/bound worst']:.3g} | {group['bound/old median']:.3g} | "
              f"{group['bound/old min']:.3g} | {group['bound/old max']:.3g} |")
    broken = sum(a.true_error > a.bound for run in runs for a in run if np.isfinite(a.bound))
    print(f"\nLayers above their bound: {broken} (must be 0).\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", type=int, default=5)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 nets x 5, 2 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.nets, args.batch, args.reps = 2, 5, 2
    print(f"# bench_exact (layerinv {layerinv.__version__}, numpy {np.__version__}, "
          f"{platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()})\n")
    nets = make_nets(args.nets, args.batch, args.seed)
    print_timings(timings(nets, args.reps), nets, args.reps)
    print_tightness(args.quick)


if __name__ == "__main__":
    main()
