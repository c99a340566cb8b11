"""`layerinv hardness`: decide random 3-SAT instances through the ReLU-network reduction.

Each instance is turned into a four-layer ReLU network and a target by `exact.sat_network`;
`exact.preimage` decides whether the target has a pre-image, which is whether the formula is
satisfiable. With --sweep the time is tabulated against N at the satisfiability threshold
M = round(4.26 N), where random 3-SAT is hardest.

Registered by the main CLI with `add_parser(subparsers)`; `run(args)` returns the exit status.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from tqdm.auto import tqdm

from layerinv._validation import SEED, float_arg, int_arg
from layerinv.exact import (
    DEFAULT_BOX,
    BoxWarning,
    PreimageResult,
    decode_assignment,
    preimage,
    random_3sat,
    sat_network,
    satisfies,
)

THRESHOLD = 4.26
"""Clause-to-variable ratio of the random 3-SAT satisfiability threshold."""

_ANSWERS = {True: "SAT", False: "UNSAT", None: "UNKNOWN"}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `hardness` subcommand; `run` is set as its `run` default."""
    parser = subparsers.add_parser(
        "hardness",
        help="decide random 3-SAT through the ReLU pre-image reduction (NP-hardness demo)",
        description=(
            "Build a random 3-SAT instance, turn it into a four-layer ReLU network G and a "
            "target x that has a pre-image exactly when the formula is satisfiable "
            "(layerinv.exact.sat_network), and decide it with the exact mixed-integer "
            "program (layerinv.exact.preimage). With --sweep, tabulate the time against N at "
            "M = round(4.26 N)."
        ),
    )
    parser.add_argument("--vars", type=int, default=20, metavar="N",
                        help="number of variables (default: 20)")
    parser.add_argument("--clauses", type=int_arg(0), default=None, metavar="M",
                        help="number of clauses (default: round(4.26 N), the threshold)")
    parser.add_argument("--seed", type=SEED, default=0, metavar="S",
                        help="seed of the random instance (default: 0); the sweep uses S + N")
    parser.add_argument("--time-limit", type=float_arg(0.0), default=None, metavar="T",
                        help="seconds per instance; past it the answer is UNKNOWN "
                             "(default: none; in a sweep, what is left of --budget)")
    parser.add_argument("--sweep", action="store_true",
                        help="time instances for N = --min-vars, +--step, ... up to --max-vars "
                             "at M = round(4.26 N), until --budget seconds are spent")
    parser.add_argument("--min-vars", type=int, default=4, metavar="N0",
                        help="first N of the sweep (default: 4)")
    parser.add_argument("--max-vars", type=int, default=40, metavar="N1",
                        help="last N of the sweep (default: 40)")
    parser.add_argument("--step", type=int_arg(1), default=2,
                        help="step of N in the sweep (default: 2)")
    parser.add_argument("--repeats", type=int_arg(1), default=1, metavar="R",
                        help="instances per N in the sweep (default: 1)")
    parser.add_argument("--budget", type=float_arg(0.0, strict=True), default=120.0,
                        metavar="SECONDS",
                        help="total seconds for the sweep (default: 120)")
    parser.set_defaults(run=run)
    return parser


def _decide(n: int, m: int, seed: int, time_limit: float | None
            ) -> tuple[list[list[int]], PreimageResult]:
    clauses = random_3sat(n, m, seed)
    net, x = sat_network(clauses, n)
    with warnings.catch_warnings():
        # Every pre-image of a sat_network has |z_i| = 1, so the box cuts nothing off.
        warnings.simplefilter("ignore", BoxWarning)
        result = preimage(net, x, time_limit=time_limit, box=DEFAULT_BOX)
    return clauses, result


def _check_args(args: argparse.Namespace) -> str | None:
    # Single values (NaN, negative, ...) are refused by the parser's types; these span options.
    if args.vars < 3 or (args.sweep and args.min_vars < 3):
        return "--vars and --min-vars must be at least 3 (three distinct variables per clause)"
    if args.sweep and args.max_vars < args.min_vars:
        return f"--max-vars must be >= --min-vars; got {args.max_vars} < {args.min_vars}"
    return None


def run(args: argparse.Namespace) -> int:
    """Run `layerinv hardness`; returns 0, or 2 on a bad argument. Errors raised while
    deciding are left to `layerinv.cli.main`, which prints them in one line."""
    problem = _check_args(args)
    if problem is not None:
        print(f"layerinv hardness: error: {problem}", file=sys.stderr)
        return 2
    return _sweep(args) if args.sweep else _single(args)


def _single(args: argparse.Namespace) -> int:
    n = args.vars
    m = round(THRESHOLD * n) if args.clauses is None else args.clauses
    clauses, result = _decide(n, m, args.seed, args.time_limit)
    answer = _ANSWERS[result.exists]
    print(f"instance: random 3-SAT, N={n} variables, M={m} clauses (ratio {m / n:.2f}), "
          f"seed {args.seed}")
    print(f"network:  widths [{n}, {4 * n + m}, 2, 2, 2] (four ReLU layers), target x = (0, {n})")
    print(f"answer:   {answer}  (MILP status {result.status!r}, {result.n_binaries} binaries)")
    if result.exists:
        assignment = decode_assignment(result.z)
        literals = " ".join(str(i + 1 if value else -(i + 1))
                            for i, value in enumerate(assignment))
        print(f"witness:  {literals}")
        verdict = "satisfies" if satisfies(clauses, assignment) else "DOES NOT satisfy"
        print(f"check:    the assignment {verdict} all {m} clauses "
              f"(residual ||G(z) - x||_inf = {result.residual:.1e})")
    elif result.exists is None:
        print(f"          time limit reached; lower bound on the residual {result.bound:.3g}")
    print(f"time:     {result.seconds:.3f} s")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    sizes = list(range(args.min_vars, args.max_vars + 1, args.step))
    print(f"{'N':>4} {'M':>5} {'answer':>8} {'seconds':>9} {'n_binaries':>11}")
    started = time.perf_counter()
    bar = tqdm([(n, r) for n in sizes for r in range(args.repeats)], desc="hardness sweep",
               unit="instance", leave=False)
    for n, r in bar:
        left = args.budget - (time.perf_counter() - started)
        if left <= 0:
            tqdm.write(f"(budget of {args.budget:g} s spent; stopping before N={n})")
            break
        limit = left if args.time_limit is None else min(args.time_limit, left)
        m = round(THRESHOLD * n)
        clauses, result = _decide(n, m, args.seed + n + 1000 * r, limit)
        if result.exists and not satisfies(clauses, decode_assignment(result.z)):
            print(f"layerinv hardness: error: N={n}: the witness does not decode to a "
                  f"satisfying assignment (a bug; please report it)", file=sys.stderr)
            return 1
        tqdm.write(f"{n:>4} {m:>5} {_ANSWERS[result.exists]:>8} {result.seconds:>9.3f} "
                   f"{result.n_binaries:>11}")
        sys.stdout.flush()
    return 0
