"""The `layerinv` command (also `python -m layerinv`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import __version__
from ._validation import load_npy
from .cli_hardness import add_parser as add_hardness_parser
from .cli_mnist import add_parsers as add_mnist_parsers
from .cli_reconstruct import add_parser as add_reconstruct_parser
from .cli_reproduce import add_parsers as add_reproduce_parsers
from .errors import LayerinvError
from .invert import ALL_METHODS, invert
from .layer import METHODS
from .lp import SOLVERS
from .network import Network, random_network


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerinv",
        description="Invert deep generative networks one layer at a time with linear "
                    "programming (Lei, Jalal, Dhillon, Dimakis, NeurIPS 2019).",
    )
    parser.add_argument("--version", action="version", version=f"layerinv {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _add_invert(commands)
    _add_random_network(commands)
    _add_sample(commands)
    _add_demo(commands)
    add_hardness_parser(commands)
    add_mnist_parsers(commands)
    add_reconstruct_parser(commands)
    add_reproduce_parsers(commands)
    return parser


def _add_invert(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("invert", help="invert a network for observations in a .npy file",
                            description="Find z with G(z) close to each observation.")
    p.add_argument("--network", required=True, help="network file (.npz from Network.save)")
    p.add_argument("--observation", required=True, help=".npy of shape (n,) or (B, n)")
    p.add_argument("--method", default="linf", choices=ALL_METHODS)
    p.add_argument("--noise", type=float, default=None,
                   help="a bound on ||x - G(z*)||_inf, if known (LP methods)")
    p.add_argument("--preset", default=None,
                   help="gradient methods: bora2017 (default) or hand2017")
    p.add_argument("--steps", type=int, default=None, help="gradient methods: steps")
    p.add_argument("--restarts", type=int, default=None, help="gradient methods: restarts")
    p.add_argument("--seed", type=int, default=0, help="gradient methods: seed")
    p.add_argument("--solver", default="auto", choices=SOLVERS)
    p.add_argument("--out", required=True, help="where to write z (.npy)")
    p.add_argument("--quiet", action="store_true", help="print only the totals")
    p.set_defaults(run=_run_invert)


def _add_random_network(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("random-network", help="write a random expansive network (.npz)",
                            description="Weights i.i.d. N(0, 1/n_out), as in the paper.")
    p.add_argument("--widths", type=int, nargs="+", required=True, help="k n_1 ... n_d")
    p.add_argument("--activation", default="relu",
                   help="relu, leaky_relu, identity, sigmoid or tanh")
    p.add_argument("--slope", type=float, default=0.1, help="leaky_relu slope")
    p.add_argument("--output-activation", default=None, help="last layer's (default: same)")
    p.add_argument("--bias", action="store_true", help="draw biases N(0, 1/n_out) too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(run=_run_random_network)


def _add_sample(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sample", help="draw z ~ N(0, I) and write G(z) (+ noise)",
                            description="Make test observations for a network.")
    p.add_argument("--network", required=True)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--noise", type=float, default=0.0,
                   help="uniform noise of this l_inf size relative to max|G(z)|")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="observations (.npy)")
    p.add_argument("--latent-out", default=None, help="the true z (.npy)")
    p.set_defaults(run=_run_sample)


def _add_demo(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("demo", help="invert a random 20 x 250 x 600 net with every method")
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--noise", type=float, default=1e-3,
                   help="relative uniform noise of the noisy run")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_run_demo)


def _run_invert(args: argparse.Namespace) -> int:
    net = Network.load(args.network)
    x = load_npy(args.observation, "--observation")
    gd_options = {}
    if args.method in ("gd", "lp+gd"):
        given = {"preset": args.preset, "steps": args.steps, "restarts": args.restarts}
        gd_options = {key: value for key, value in given.items() if value is not None}
        gd_options["seed"] = args.seed
    result = invert(net, x, args.method, noise=args.noise, solver=args.solver, **gd_options)
    np.save(args.out, result.z)
    if args.method in ("gd", "lp+gd"):
        # Gradient results: stop reasons, fit and a shared-out time (see gradient.summary).
        from .gradient import summary, summary_line

        if not args.quiet:
            print(summary(result, x))
        print(f"{summary_line(result, x)}; z written to {args.out}")
        return 0
    if not args.quiet:
        print(result.summary())
    ok = int(np.sum(result.success))
    print(f"{ok} of {np.size(result.success)} samples optimal; z written to {args.out}")
    return 0


def _run_random_network(args: argparse.Namespace) -> int:
    from .activations import get_activation

    act = get_activation(args.activation, args.slope)
    out_act = None if args.output_activation is None else get_activation(
        args.output_activation, args.slope)
    net = random_network(args.widths, act, output_activation=out_act, bias=args.bias,
                         seed=args.seed)
    net.save(args.out)
    print(f"wrote {net!r} to {args.out}")
    return 0


def _run_sample(args: argparse.Namespace) -> int:
    net = Network.load(args.network)
    rng = np.random.default_rng(args.seed)
    z = rng.normal(size=(args.count, net.input_dim))
    x = net.forward(z)
    if args.noise > 0:
        x = x + rng.uniform(-1, 1, x.shape) * args.noise * np.abs(x).max(axis=1, keepdims=True)
    np.save(args.out, x)
    if args.latent_out:
        np.save(args.latent_out, z)
    print(f"wrote {args.count} observations of shape {x.shape[1:]} to {args.out}")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    widths = [20, 250, 600]
    print(f"Inverting {args.instances} random {' x '.join(map(str, widths))} ReLU nets "
          f"(Lei et al. 2019), realizable and with relative uniform noise {args.noise:g}.\n")
    print(f"{'observation':<12} {'method':<7} {'optimal':>8} {'median rel. error':>18} "
          f"{'max rel. error':>15} {'median ms':>10}")
    for label, noise in (("realizable", 0.0), ("noisy", args.noise)):
        instances = _demo_instances(widths, args.instances, noise, args.seed)
        for method in METHODS:
            errors, seconds, optimal = [], [], 0
            for net, z, x in instances:
                started = time.perf_counter()
                result = invert(net, x, method, progress=False)
                seconds.append(time.perf_counter() - started)
                errors.append(np.linalg.norm(result.z - z) / np.linalg.norm(z))
                optimal += bool(result.success)
            print(f"{label:<12} {method:<7} {optimal:>5}/{args.instances:<2} "
                  f"{np.median(errors):>18.2e} {np.max(errors):>15.2e} "
                  f"{1e3 * np.median(seconds):>10.2f}")
    return 0


def _demo_instances(widths: list[int], count: int, noise: float,
                    seed: int) -> list[tuple[Network, np.ndarray, np.ndarray]]:
    """Seeded (net, z, x) triples; x = G(z) + uniform noise of l_inf size noise * max|G(z)|."""
    rng = np.random.default_rng(seed)
    instances = []
    for i in range(count):
        net = random_network(widths, seed=seed * 100_003 + i)
        z = rng.normal(size=widths[0])
        x = net.forward(z)
        instances.append((net, z, x + rng.uniform(-1, 1, x.shape) * noise * np.abs(x).max()))
    return instances


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except LayerinvError as exc:
        print(f"layerinv {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
