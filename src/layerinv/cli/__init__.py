"""The `layerinv` command (also `python -m layerinv`)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
import traceback
from collections.abc import Sequence
from typing import NoReturn

import numpy as np

from layerinv import solvers
from layerinv._layer_inversion import METHODS
from layerinv._validation import (
    SEED,
    check_distinct,
    float_arg,
    int_arg,
    load_npy,
    output_path,
    save_npy,
    write_output,
)
from layerinv._version import __version__
from layerinv._walk import ALL_METHODS, invert
from layerinv.activations import (
    NAMES_HELP,
    Activation,
    get_activation,
    parameter_name,
    split_name,
)
from layerinv.cli.hardness import add_parser as add_hardness_parser
from layerinv.cli.mnist import add_parsers as add_mnist_parsers
from layerinv.cli.reconstruct import add_parser as add_reconstruct_parser
from layerinv.cli.reproduce import add_parsers as add_reproduce_parsers
from layerinv.errors import InputError, LayerinvError, is_usage_error
from layerinv.network import Network, random_network

EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (argparse prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} "
                              f"(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="layerinv",
        description="Invert deep generative networks one layer at a time with linear "
                    "programming (Lei, Jalal, Dhillon, Dimakis, NeurIPS 2019).",
    )
    parser.add_argument("--version", action="version", version=f"layerinv {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an error, print the full traceback (also after a command)")
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
    _add_debug_everywhere(parser)
    return parser


def _add_debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """`--debug` is also accepted after the command (`layerinv invert ... --debug`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                # SUPPRESS: an absent flag does not overwrite the top-level value.
                sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help=argparse.SUPPRESS)
                _add_debug_everywhere(sub)


def _add_invert(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("invert", help="invert a network for observations in a .npy file",
                            description="Find z with G(z) close to each observation.")
    p.add_argument("--network", required=True, help="network file (.npz from Network.save)")
    p.add_argument("--observation", required=True, help=".npy of shape (n,) or (B, n)")
    p.add_argument("--method", default="linf", choices=ALL_METHODS)
    p.add_argument("--noise", type=float_arg(0.0), default=None,
                   help="a bound on ||x - G(z*)||_inf, if known (LP methods)")
    p.add_argument("--preset", default=None,
                   help="gradient methods: bora2017 (default) or hand2017")
    p.add_argument("--steps", type=int_arg(1), default=None, help="gradient methods: steps")
    p.add_argument("--restarts", type=int_arg(1), default=None,
                   help="gradient methods: restarts")
    p.add_argument("--seed", type=SEED, default=0, help="gradient methods: seed")
    p.add_argument("--solver", default="auto", choices=solvers.names())
    p.add_argument("--out", required=True,
                   help="where to write z (.npy; the suffix is added if missing)")
    p.add_argument("--quiet", action="store_true", help="print only the totals")
    p.set_defaults(run=_run_invert)


def _add_random_network(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("random-network", help="write a random expansive network (.npz)",
                            description="Weights i.i.d. N(0, 1/n_out), as in the paper.")
    p.add_argument("--widths", type=int_arg(1), nargs="+", required=True,
                   help="k n_1 ... n_d")
    p.add_argument("--activation", default="relu", help=NAMES_HELP)
    p.add_argument("--slope", type=float_arg(0.0, strict=True), default=None,
                   help=f"leaky_relu slope where the name gives none (default "
                        f"{CLI_LEAKY_SLOPE:g})")
    p.add_argument("--output-activation", default=None, help="last layer's (default: same)")
    p.add_argument("--bias", action="store_true", help="draw biases N(0, 1/n_out) too")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", required=True, help="the network file (.npz) to write")
    p.set_defaults(run=_run_random_network)


def _add_sample(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sample", help="draw z ~ N(0, I) and write G(z) (+ noise)",
                            description="Make test observations for a network.")
    p.add_argument("--network", required=True)
    p.add_argument("--count", type=int_arg(1), default=1)
    p.add_argument("--noise", type=float_arg(0.0), default=0.0,
                   help="uniform noise of this l_inf size relative to max|G(z)|")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--out", required=True, help="observations (.npy)")
    p.add_argument("--latent-out", default=None, help="the true z (.npy)")
    p.set_defaults(run=_run_sample)


def _add_demo(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("demo", help="invert a random 20 x 250 x 600 net with every method")
    p.add_argument("--instances", type=int_arg(1), default=20)
    p.add_argument("--noise", type=float_arg(0.0), default=1e-3,
                   help="relative uniform noise of the noisy run")
    p.add_argument("--seed", type=SEED, default=0)
    p.set_defaults(run=_run_demo)


def _run_invert(args: argparse.Namespace) -> int:
    out = output_path(args.out, "--out", suffix=".npy",
                      inputs={"--observation": args.observation, "--network": args.network})
    args.out = str(out)  # the file really written (numpy.save adds .npy), printed below
    net = Network.load(args.network)
    x = load_npy(args.observation, "--observation")
    gd_options = {}
    if args.method in ("gd", "lp+gd"):
        given = {"preset": args.preset, "steps": args.steps, "restarts": args.restarts}
        gd_options = {key: value for key, value in given.items() if value is not None}
        gd_options["seed"] = args.seed
    result = invert(net, x, args.method, noise=args.noise, solver=args.solver, **gd_options)
    save_npy(out, result.z, "--out")
    if args.method in ("gd", "lp+gd"):
        # Gradient results: stop reasons, fit and a shared-out time (see gradient.summary).
        from layerinv._gradient import summary, summary_line

        if not args.quiet:
            print(summary(result, x))
        print(f"{summary_line(result, x)}; z written to {args.out}")
        return 0
    if not args.quiet:
        print(result.summary())
    ok = int(np.sum(result.success))
    print(f"{ok} of {np.size(result.success)} samples optimal; z written to {args.out}")
    return 0


CLI_LEAKY_SLOPE = 0.1
"""random-network's leaky_relu slope where neither --activation nor --slope gives one."""


def _cli_activation(name: str, slope: float | None, option: str) -> Activation:
    """`option` NAME with --slope, which only a slope-taking activation (leaky_relu) reads;
    a bare leaky_relu gets the documented CLI_LEAKY_SLOPE."""
    if parameter_name(name) != "slope":
        return get_activation(name)
    _, written = split_name(name)
    if written is not None and slope is not None and written != slope:
        raise InputError(f"{option} {name!r} names the slope {written!r} but --slope "
                         f"{slope!r} was given too; give one")
    if slope is None and written is None:
        slope = CLI_LEAKY_SLOPE
    return get_activation(name, slope)


def _run_random_network(args: argparse.Namespace) -> int:
    out = output_path(args.out, "--out")
    act = _cli_activation(args.activation, args.slope, "--activation")
    out_act = None if args.output_activation is None else _cli_activation(
        args.output_activation, args.slope, "--output-activation")
    net = random_network(args.widths, act, output_activation=out_act, bias=args.bias,
                         seed=args.seed)
    write_output(out, "--out", net.save)
    print(f"wrote {net!r} to {out}")
    return 0


def _run_sample(args: argparse.Namespace) -> int:
    inputs = {"--network": args.network}
    out = output_path(args.out, "--out", suffix=".npy", inputs=inputs)
    latent_out = None if args.latent_out is None else output_path(
        args.latent_out, "--latent-out", suffix=".npy", inputs=inputs)
    check_distinct({"--out": out, "--latent-out": latent_out})
    net = Network.load(args.network)
    rng = np.random.default_rng(args.seed)
    z = rng.normal(size=(args.count, net.input_dim))
    x = net.forward(z)
    if args.noise > 0:
        x = x + rng.uniform(-1, 1, x.shape) * args.noise * np.abs(x).max(axis=1, keepdims=True)
    save_npy(out, x, "--out")
    if latent_out is not None:
        save_npy(latent_out, z, "--latent-out")
    print(f"wrote {args.count} observations of shape {x.shape[1:]} to {out}")
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
    """Run the command line; returns the exit status.

    0 done; 2 a usage error (a bad argument, an InputError or any LayerinvError marked
    `usage`); 1 a runtime failure (another LayerinvError, an OSError such as a full disk or a
    read-only location, an SQLite error, MemoryError, or an unexpected exception); 130
    interrupted (Ctrl-C). Each error is one line on stderr, the full traceback only with
    --debug.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        _report(args, "interrupted (Ctrl-C)")
        return EXIT_INTERRUPTED
    except Exception as exc:
        code, message = _classify(exc)
        _report(args, f"error: {message}")
        return code


def _classify(exc: Exception) -> tuple[int, str]:
    """The exit status of an exception escaping a command, and its one-line message."""
    text = _one_line(str(exc))
    if isinstance(exc, LayerinvError):
        return (EXIT_USAGE if is_usage_error(exc) else EXIT_FAILURE), text
    if isinstance(exc, BrokenPipeError):
        _silence_stdout()
        return EXIT_FAILURE, f"the output pipe was closed ({text})"
    if isinstance(exc, OSError):
        return EXIT_FAILURE, text or type(exc).__name__
    if isinstance(exc, sqlite3.Error):
        return EXIT_FAILURE, f"the results database failed: {type(exc).__name__}: {text}"
    if isinstance(exc, MemoryError):
        return EXIT_FAILURE, f"out of memory{': ' + text if text else ''}; try a smaller batch"
    return EXIT_FAILURE, (f"unexpected {type(exc).__name__}: {text} (a bug in layerinv; "
                          f"run again with --debug for the traceback and please report it)")


def _report(args: argparse.Namespace, message: str) -> None:
    if getattr(args, "debug", False):
        traceback.print_exc()
    command = " ".join(part for part in (args.command, getattr(args, "action", None)) if part)
    print(f"layerinv {command}: {message}", file=sys.stderr)


def _one_line(text: str) -> str:
    """A message on one line: messages of NumPy, SQLite and PyTorch may hold newlines."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _silence_stdout() -> None:
    """After a closed pipe (`layerinv ... | head`), stop Python's final flush from failing too."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
