"""Benchmark the layer-LP backends on the very same captured layer LPs, and end to end.

Run by hand from the repository root (never in the tests):

    PYTHONPATH=src python benchmarks/bench_lp_engines.py [--instances N] [--seed S]

What it measures:
- Nets: noisy 110 x 250 x 600 and 20 x 60 x 784 ReLU random nets without bias; each instance
  draws its own net and z ~ N(0, I) from one seeded generator, and x = G(z) + e with e
  uniform in [-a, a], a = 1e-3 * max|G(z)|.
- Captured LPs: `invert(net, x, "linf", solver="ipm")` runs once per instance with
  `solvers.solve_many` wrapped to keep every layer problem the walk hands over. Each backend
  ('ipm', 'highs', 'daqp', and 'cvxopt' where importable) then solves each captured problem
  through the front door (`solvers.solve_many([problem], name)`: one BLAS thread, the
  post-check included), timed with time.perf_counter. Per layer shape (rows n, inputs m):
  median ms per LP, the ratio of medians to 'ipm' measured in this run, the share of answers
  'optimal' and the share whose objective agrees with HiGHS's to 1e-7 relative.
- End to end: `invert(net, x, "linf", solver=name)` per backend and instance: median wall
  time, ratio to 'ipm', median relative latent error ||z_hat - z|| / ||z||, and the share of
  instances with error below 1e-2 (10 times the relative noise).
Timings on a shared machine are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections import defaultdict

import numpy as np

import layerinv
from layerinv import solvers

NETS = ((110, 250, 600), (20, 60, 784))
NOISE = 1e-3
AGREEMENT = 1e-7


def backends() -> list[str]:
    names = ["ipm", "highs"]
    names += [name for name, module in (("daqp", "daqp"), ("cvxopt", "cvxopt"))
              if importlib.util.find_spec(module) is not None]
    return names


def instances(widths: tuple[int, ...], count: int, rng: np.random.Generator):
    """(net, z, x) for `count` noisy instances of one shape."""
    for _ in range(count):
        net = layerinv.random_network(widths, "relu", seed=rng)
        z = rng.normal(size=widths[0])
        clean = net.forward(z)
        amplitude = NOISE * float(np.max(np.abs(clean)))
        yield net, z, clean + rng.uniform(-amplitude, amplitude, size=clean.shape)


def captured(net, x) -> list[solvers.LayerProblem]:
    """Every layer problem one `invert(net, x, 'linf', solver='ipm')` hands to the solvers."""
    kept: list[solvers.LayerProblem] = []
    original = solvers.solve_many

    def keeping(problems, solver="auto", **options):
        problems = list(problems)
        kept.extend(problems)
        return original(problems, solver, **options)

    solvers.solve_many = keeping
    try:
        layerinv.invert(net, x, "linf", solver="ipm")
    finally:
        solvers.solve_many = original
    return kept


def time_lps(problems: list[solvers.LayerProblem], names: list[str]) -> None:
    by_shape: dict[tuple[int, int], list] = defaultdict(list)
    for problem in problems:
        by_shape[(problem.n_rows, problem.n_inputs)].append(problem)
    print(f"{'layer (n, m)':>14} {'LPs':>4} " + " ".join(
        f"{name + ' ms':>10} {'x ipm':>6} {'ok':>5} {'=HiGHS':>6}" for name in names))
    for shape, group in sorted(by_shape.items(), reverse=True):
        ms: dict[str, list[float]] = defaultdict(list)
        objectives: dict[str, list] = defaultdict(list)
        for problem in group:
            for name in names:
                started = time.perf_counter()
                result = solvers.solve_many([problem], name)[0]
                ms[name].append(1e3 * (time.perf_counter() - started))
                objectives[name].append(result.objective if result.success else None)
        reference = statistics.median(ms["ipm"])
        cells = []
        for name in names:
            median = statistics.median(ms[name])
            ok = np.mean([value is not None for value in objectives[name]])
            agree = np.mean([value is not None and high is not None
                             and abs(value - high) <= AGREEMENT * (1 + abs(high))
                             for value, high in zip(objectives[name], objectives["highs"],
                                                    strict=True)])
            cells.append(f"{median:10.2f} {median / reference:6.2f} {ok:5.0%} {agree:6.0%}")
        print(f"{shape!s:>14} {len(group):4d} " + " ".join(cells))


def time_end_to_end(cases, names: list[str]) -> None:
    seconds: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, list[float]] = defaultdict(list)
    for net, z, x in cases:
        for name in names:
            started = time.perf_counter()
            result = layerinv.invert(net, x, "linf", solver=name)
            seconds[name].append(time.perf_counter() - started)
            errors[name].append(float(np.linalg.norm(result.z - z) / np.linalg.norm(z)))
    reference = statistics.median(seconds["ipm"])
    print(f"{'solver':>8} {'median ms':>10} {'x ipm':>6} {'median error':>13} {'ok':>5}")
    for name in names:
        median = statistics.median(seconds[name])
        print(f"{name:>8} {1e3 * median:10.1f} {median / reference:6.2f} "
              f"{statistics.median(errors[name]):13.3e} "
              f"{np.mean(np.array(errors[name]) < 10 * NOISE):5.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = backends()
    print(f"layerinv {layerinv.__version__}; backends {names}; {args.instances} instances "
          f"per net, seed {args.seed}, uniform noise {NOISE:g} of max|x|")
    for widths in NETS:
        rng = np.random.default_rng([args.seed, *widths])
        cases = list(instances(widths, args.instances, rng))
        problems = [problem for net, _, x in cases for problem in captured(net, x)]
        print(f"\n{' x '.join(map(str, widths))}: {len(problems)} captured layer LPs (linf)")
        time_lps(problems, names)
        print(f"\n{' x '.join(map(str, widths))}: invert(..., 'linf') end to end")
        time_end_to_end(cases, names)


if __name__ == "__main__":
    main()
