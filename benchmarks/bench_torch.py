"""Benchmark the batched PyTorch backend ('torch') against the CPU engines, in one run.

Run by hand from the repository root (never in the tests):

    PYTHONPATH=src python benchmarks/bench_torch.py [--device auto|cpu|cuda]
        [--batch 100 1000] [--reference 100] [--widths 20 250 600] [--seed S]

What it measures, for each batch size B (one ReLU random net without bias of `--widths`,
B latents z ~ N(0, I), x = G(z) + e with e uniform in [-a, a], a = 1e-3 max|G(z)| per sample;
realizable: x = G(z)):
- Layer LPs: the output layer's first round of noisy l_inf LPs (one per sample: the
  (600, 250) problems of 20 x 250 x 600), captured from the walk. 'torch' solves all B in
  one `solvers.solve_many` call; 'ipm' and 'daqp' (if importable) solve the first
  `--reference` of them one call each (their way). LPs per second, the share 'optimal', and
  the largest |objective difference| to 'ipm' relative to 1 + |objective|.
- Noisy l_inf end to end: `invert(net, x, "linf", solver=...)` on the whole batch with
  'torch', and with the CPU path ('auto') on the first `--reference` samples. Samples per
  second, the share 'optimal', max |z_torch - z_cpu| / max |z_cpu| over those samples.
- Certified exact end to end (realizable): `invert(net, x, "exact")` with certify=True, the
  CPU walk ('auto'; the exact path solves no LP here): samples per second.
- Certified pinned least squares, the exact path's kernel: every layer's
  `pinned_least_squares(..., certify=True)` over the batch, batched on the device against
  the default (`_linalg` sample by sample) on the first `--reference`; fits per second of
  whole samples (all layers), the largest relative difference of h and of the bounds.
The issue's GPU targets (one H200): >= 20,000 certified exact inversions per second of
20 x 250 x 600, >= 2,000 noisy l_inf per second, results equal to the CPU path to 1e-8.
Ratios are measured in this run; the machine's load moves absolute times.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from dataclasses import dataclass, field

import numpy as np

import layerinv
from layerinv import solvers
from layerinv.results import Status
from layerinv.solvers import _torch
from layerinv.solvers.problem import Backend, LayerProblem, LPResult

NOISE = 1e-3


@dataclass(frozen=True)
class Recorder(Backend):
    """A backend that keeps every call's problems and lets `inner` solve them."""

    inner: Backend
    calls: list = field(default_factory=list)

    def solve(self, problem: LayerProblem) -> LPResult:
        return self.solve_many([problem])[0]

    def solve_many(self, problems):
        self.calls.append(list(problems))
        return self.inner.solve_many(problems)


def batch_data(widths: list[int], count: int, seed: int):
    """(net, z, clean x, noisy x) for a batch of `count` samples of one net."""
    rng = np.random.default_rng([seed, *widths, count])
    net = layerinv.random_network(widths, "relu", seed=rng)
    z = rng.normal(size=(count, widths[0]))
    clean = net.forward(z)
    amplitude = NOISE * np.abs(clean).max(axis=1, keepdims=True)
    return net, z, clean, clean + rng.uniform(-1.0, 1.0, size=clean.shape) * amplitude


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def share_optimal(results) -> float:
    return float(np.mean([r.status == Status.OPTIMAL for r in results]))


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:10.1f}/s"


def measure_lps(name: str, net, noisy, reference: int) -> None:
    """The output layer's first round of noisy l_inf LPs: torch on all, CPU on a subset."""
    recorder = Recorder(solvers.get(name))
    solvers.register("bench-recorder", recorder)
    try:
        layerinv.invert(net, noisy, "linf", solver="bench-recorder", progress=False)
    finally:
        solvers._BACKENDS.pop("bench-recorder")
    problems = recorder.calls[0]
    count = len(problems)
    print(f"  layer LPs: {count} problems of shape (n, m) = "
          f"({problems[0].n_rows}, {problems[0].n_inputs}), noisy l_inf")
    torch_results, torch_seconds = timed(solvers.solve_many, problems, name)
    subset = problems[:reference]
    ipm_results, ipm_seconds = timed(lambda: [solvers.solve(p, "ipm") for p in subset])
    rows = [("torch", count, torch_seconds, torch_results),
            ("ipm", len(subset), ipm_seconds, ipm_results)]
    if importlib.util.find_spec("daqp") is not None:
        daqp_results, daqp_seconds = timed(lambda: [solvers.solve(p, "daqp") for p in subset])
        rows.append(("daqp", len(subset), daqp_seconds, daqp_results))
    ipm_rate = len(subset) / ipm_seconds
    for label, n, seconds, results in rows:
        head = results[:len(subset)]
        gap = max(abs(a.objective - b.objective) / (1 + abs(b.objective))
                  for a, b in zip(head, ipm_results, strict=True))
        print(f"    {label:6s} {rate(n, seconds)}  x{n / seconds / ipm_rate:6.2f} ipm  "
              f"optimal {share_optimal(results):6.1%}  max |obj - ipm| {gap:.1e}")


def measure_noisy(name: str, net, noisy, reference: int) -> None:
    count = len(noisy)
    mine, seconds = timed(layerinv.invert, net, noisy, "linf", solver=name, progress=False)
    cpu, cpu_seconds = timed(layerinv.invert, net, noisy[:reference], "linf", progress=False)
    scale = np.abs(cpu.z).max(axis=1, keepdims=True)
    difference = float(np.max(np.abs(mine.z[:reference] - cpu.z) / scale))
    same = float(np.mean([a == b for a, b in zip(mine.status, cpu.status, strict=False)]))
    print(f"  noisy l_inf end to end: torch {rate(count, seconds)} "
          f"(optimal {np.mean([s == 'optimal' for s in mine.status]):.1%}), CPU path "
          f"{rate(len(cpu.z), cpu_seconds)} (optimal "
          f"{np.mean([s == 'optimal' for s in cpu.status]):.1%}); "
          f"x{(count / seconds) / (len(cpu.z) / cpu_seconds):.2f}; "
          f"max |z_torch - z_cpu| / max|z_cpu| {difference:.1e}, same status {same:.0%}")


def measure_exact(net, z, clean, reference: int, device: str) -> None:
    count = len(clean)
    result, seconds = timed(layerinv.invert, net, clean, "exact", progress=False)
    certified = float(np.mean(result.certified))
    print(f"  certified exact end to end (CPU walk): {rate(count, seconds)} "
          f"(certified {certified:.1%})")
    # The exact path's kernel: every layer's pinned least squares with its certificate, on
    # the bands of the true activations (realizable data: what the exact walk sees).
    backend, default = _torch.TorchBackend(device=device), solvers.get("ipm")
    outputs = [z]
    for layer in net.layers:
        outputs.append(layer(outputs[-1]))
    bands = []
    for layer, y in zip(net.layers, outputs[1:], strict=True):
        scale = np.abs(y).max(axis=1)
        bands.append([layer.activation.band(row, 1e-6 * s) for row, s in
                      zip(y, scale, strict=True)])
    started = time.perf_counter()
    fits = [backend.pinned_least_squares(layer.operator, layer.bias, b, True)
            for layer, b in zip(net.layers, bands, strict=True)]
    batched_seconds = time.perf_counter() - started
    started = time.perf_counter()
    reference_fits = [default.pinned_least_squares(layer.operator, layer.bias,
                                                   b[:reference], True)
                      for layer, b in zip(net.layers, bands, strict=True)]
    default_seconds = time.perf_counter() - started
    worst, full = 0.0, []
    for mine, theirs in zip(fits, reference_fits, strict=True):
        full += [fit.full_rank for fit in mine]
        for a, b in zip(mine, theirs, strict=False):
            if b.h is not None and a.h is not None:
                worst = max(worst, float(np.abs(a.h - b.h).max() / np.abs(b.h).max()),
                            abs(a.sigma_min - b.sigma_min) / b.sigma_min,
                            abs(a.inverse_row_norm - b.inverse_row_norm) / b.inverse_row_norm)
            elif (a.h is None) != (b.h is None):
                worst = np.inf
    print(f"  certified pinned least squares (all {len(net.layers)} layers): torch "
          f"{rate(count, batched_seconds)}, default {rate(reference, default_seconds)}; "
          f"x{(count / batched_seconds) / (reference / default_seconds):.2f}; full rank "
          f"{np.mean(full):.1%}; max relative difference {worst:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, nargs="+", default=[100])
    parser.add_argument("--reference", type=int, default=20,
                        help="samples solved by the CPU engines (a prefix of each batch)")
    parser.add_argument("--widths", type=int, nargs="+", default=[20, 250, 600])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch = _torch.import_torch()
    device = _torch.resolve_device(args.device)
    name = "torch" if args.device == "auto" else "bench-torch"
    if name != "torch":
        solvers.register(name, _torch.TorchBackend(device=args.device))
    print(f"layerinv {layerinv.__version__}, torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", net {' x '.join(map(str, args.widths))} ReLU, noise {NOISE:g} max|x|")
    warm_net, _, _, warm_noisy = batch_data(args.widths, 4, args.seed + 1)
    layerinv.invert(warm_net, warm_noisy, "linf", solver=name, progress=False)  # warm up
    for count in args.batch:
        reference = min(args.reference, count)
        net, z, clean, noisy = batch_data(args.widths, count, args.seed)
        print(f"batch {count} (CPU references on the first {reference}):")
        measure_lps(name, net, noisy, reference)
        measure_noisy(name, net, noisy, reference)
        measure_exact(net, z, clean, reference, args.device)
    print("targets on one H200: certified exact >= 20,000/s, noisy l_inf >= 2,000/s, equal "
          "to the CPU path to 1e-8")


if __name__ == "__main__":
    main()
