"""Benchmark the layer-LP backends on the very same captured layer LPs, and end to end.

Run by hand from the repository root (never in the tests):

    PYTHONPATH=src python benchmarks/bench_lp_engines.py [--instances N] [--seed S]

What it measures:
- Nets: noisy 110 x 250 x 600 and 20 x 60 x 784 ReLU random nets without bias; each instance
  draws its own net and z ~ N(0, I) from one seeded generator, and x = G(z) + e with e
  uniform in [-a, a], a = 1e-3 * max|G(z)|.
- Captured LPs: `invert(net, x, "linf", solver="ipm")` runs once per instance with
  `solvers.solve_many` wrapped to keep every layer problem the walk hands over. Each backend
  ('ipm', 'auto', 'highs', 'daqp', and 'cvxopt' where importable) then solves each captured problem
  through the front door (`solvers.solve_many([problem], name)`: one BLAS thread, the
  post-check included), timed with time.perf_counter. Per layer shape (rows n, inputs m):
  median ms per LP, the ratio of medians to 'ipm' measured in this run, the share of answers
  'optimal' and the share whose objective agrees with HiGHS's to 1e-7 relative.
- End to end: `invert(net, x, "linf", solver=name)` per backend and instance: median wall
  time, ratio to 'ipm', median relative latent error ||z_hat - z|| / ||z||, and the share of
  instances with error below 1e-2 (10 times the relative noise).

With --grid, the measurements behind solver='auto' (`solvers.daqp_pays`) instead: for each
net of GRID_NETS, norm (linf, l1), uniform noise level (0, 1e-4 ... 1e-1 of max|x|) and with
and without the noise bound stated (`noise=` the amplitude), the layer LPs one
`invert(net, x, norm, noise=..., solver="ipm")` per instance hands over, solved by 'ipm',
'daqp' and 'auto' through the front door (a stated bound: the free l_inf LP, then for l1 the
bounded one): median ms per LP, DAQP's and auto's ratio to ipm, and their share 'optimal'.
An l1 LP of more than L1_SAMPLED_COLUMNS columns is timed with 'daqp' once per cell (it
takes seconds there). With --random: random layer LPs of each activation and size (`layer_lp`),
the same ratios (identity, LeakyReLU, sigmoid and tanh layers have no one-sided rows).
Timings on a shared machine are noisy: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import statistics
import time
from collections import defaultdict

import numpy as np

import layerinv
from layerinv import solvers

NETS = ((110, 250, 600), (20, 60, 784))
NOISE = 1e-3
AGREEMENT = 1e-7
GRID_NETS = ((20, 30, 500), (20, 60, 784), (20, 250, 600), (110, 250, 600))
GRID_NOISE = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
GRID_SOLVERS = ("ipm", "daqp", "auto")
L1_SAMPLED_COLUMNS = 400
RANDOM_ACTIVATIONS = ("relu", "identity", "leaky_relu(0.2)", "sigmoid", "tanh")
RANDOM_SIZES = ((20, 60), (40, 100), (60, 150), (80, 200), (100, 250), (150, 300),
                (250, 600), (60, 784))


def backends() -> list[str]:
    names = ["ipm", "auto", "highs"]
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


def captured(net, x, method: str = "linf", noise: float | None = None
             ) -> list[solvers.LayerProblem]:
    """Every layer problem one `invert(net, x, method, noise=noise, solver='ipm')` hands to
    the solvers."""
    kept: list[solvers.LayerProblem] = []
    original = solvers.solve_many

    def keeping(problems, solver="auto", **options):
        problems = list(problems)
        kept.extend(problems)
        return original(problems, solver, **options)

    solvers.solve_many = keeping
    try:
        layerinv.invert(net, x, method, noise=noise, solver="ipm", progress=False)
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


# --------------------------------------------------------------------------- --grid
def time_front_door(problem: solvers.LayerProblem, name: str) -> tuple[float, bool]:
    """(ms, optimal) of one front-door solve."""
    started = time.perf_counter()
    result = solvers.solve_many([problem], name)[0]
    return 1e3 * (time.perf_counter() - started), result.success


def grid(count: int, seed: int) -> None:
    """The captured LPs of every (net, norm, noise level, bound) cell, by layer shape."""
    print(f"{count} instances per cell; median ms per LP; x ipm: ratio of medians to 'ipm' "
          f"in this run; ok: share 'optimal'")
    print(f"{'net':>14} {'norm':>5} {'noise':>6} {'bound':>5} {'layer (n, m)':>12} {'LPs':>4} "
          + " ".join(f"{name + ' ms':>9}" for name in GRID_SOLVERS)
          + " daqp x ipm  auto x ipm  ok daqp/auto")
    for widths, norm, level, bound in itertools.product(GRID_NETS, ("linf", "l1"), GRID_NOISE,
                                                        (False, True)):
        rng = np.random.default_rng([seed, *widths, int(level * 1e5), bound])
        by_shape: dict[tuple[int, int], list] = defaultdict(list)
        for _ in range(count):
            net = layerinv.random_network(widths, "relu", seed=rng)
            clean = net.forward(rng.normal(size=widths[0]))
            amplitude = level * float(np.max(np.abs(clean)))
            x = clean + rng.uniform(-amplitude, amplitude, size=clean.shape)
            for problem in captured(net, x, norm, amplitude if bound else None):
                by_shape[(problem.n_rows, problem.n_inputs)].append(problem)
        cell = f"{' x '.join(map(str, widths)):>14} {norm:>5} {level:6.0e} {bound!s:>5}"
        if not by_shape:
            print(f"{cell} {'-':>12} {0:4d}   (least squares fits: no LP)")
        for shape, group in sorted(by_shape.items(), reverse=True):
            ms: dict[str, list[float]] = defaultdict(list)
            ok: dict[str, list[bool]] = defaultdict(list)
            for problem in group:
                for name in GRID_SOLVERS:
                    if (name == "daqp" and norm == "l1" and ms[name]
                            and sum(shape) > L1_SAMPLED_COLUMNS):
                        continue  # seconds an LP: once per cell is enough
                    spent, success = time_front_door(problem, name)
                    ms[name].append(spent)
                    ok[name].append(success)
            median = {name: statistics.median(ms[name]) for name in GRID_SOLVERS}
            print(f"{cell} {shape!s:>12} {len(group):4d} "
                  + " ".join(f"{median[name]:9.2f}" for name in GRID_SOLVERS)
                  + f" {median['daqp'] / median['ipm']:10.2f} "
                  f"{median['auto'] / median['ipm']:11.2f} "
                  f"{np.mean(ok['daqp']):5.0%}/{np.mean(ok['auto']):.0%}", flush=True)


def layer_lp(seed: int, activation: str, norm: str, m: int, n: int,
             noise: float) -> solvers.LayerProblem:
    """A random layer LP: y = act(W h) + uniform noise (1e-3 of max|y|), W ~ N(0, 1/n); h >= 0
    (a hidden layer) for even seeds, free (a latent layer) for odd ones; the threshold is
    the noise amplitude (a stated bound's)."""
    rng = np.random.default_rng(seed)
    act = layerinv.get_activation(activation)
    weight = rng.normal(0, 1 / np.sqrt(n), size=(n, m))
    free = seed % 2 == 1
    h = rng.normal(size=m) if free else np.maximum(rng.normal(size=m), 0)
    y = act.forward(weight @ h)
    amplitude = noise * float(np.max(np.abs(y)))
    y = y + rng.uniform(-amplitude, amplitude, size=n)
    low = np.full(m, -np.inf) if free else np.zeros(m)
    return solvers.LayerProblem(weight, None, act.band(y, threshold=amplitude), low,
                                np.full(m, np.inf), norm)


def random_lps(count: int, seed: int) -> None:
    print(f"{count} random layer LPs per row (noise {NOISE:g} of max|y|); median ms per LP")
    print(f"{'activation':>16} {'norm':>5} {'layer (n, m)':>12} "
          + " ".join(f"{name + ' ms':>9}" for name in GRID_SOLVERS)
          + " daqp x ipm  auto x ipm  ok daqp/auto")
    for activation, norm, (m, n) in itertools.product(RANDOM_ACTIVATIONS, ("linf", "l1"),
                                                      RANDOM_SIZES):
        if norm == "l1" and n + m > L1_SAMPLED_COLUMNS:
            continue  # DAQP takes seconds an LP there (see --grid)
        ms: dict[str, list[float]] = defaultdict(list)
        ok: dict[str, list[bool]] = defaultdict(list)
        for index in range(count):
            problem = layer_lp(seed * 1000 + index, activation, norm, m, n, NOISE)
            for name in GRID_SOLVERS:
                spent, success = time_front_door(problem, name)
                ms[name].append(spent)
                ok[name].append(success)
        median = {name: statistics.median(ms[name]) for name in GRID_SOLVERS}
        print(f"{activation:>16} {norm:>5} {(n, m)!s:>12} "
              + " ".join(f"{median[name]:9.2f}" for name in GRID_SOLVERS)
              + f" {median['daqp'] / median['ipm']:10.2f} "
              f"{median['auto'] / median['ipm']:11.2f} "
              f"{np.mean(ok['daqp']):5.0%}/{np.mean(ok['auto']):.0%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=None,
                        help="instances per net (default 20), per --grid cell (2) or "
                             "per --random row (5)")
    parser.add_argument("--seed", type=int, default=0)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--grid", action="store_true",
                      help="the captured-LP grid behind solver='auto' (shapes, norms, noise)")
    mode.add_argument("--random", action="store_true",
                      help="random layer LPs of every activation behind solver='auto'")
    args = parser.parse_args()
    if args.grid:
        grid(args.instances or 2, args.seed)
        return
    if args.random:
        random_lps(args.instances or 5, args.seed)
        return
    args.instances = args.instances or 20
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
