"""The `layerinv train-mnist` and `layerinv mnist denoise|inpaint` commands.

`add_parsers(subparsers)` registers both on the main parser's sub-command action; each sets
`run` to a function taking the parsed arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import Any

from layerinv._validation import SEED, check_distinct, float_arg, int_arg, output_path, write_output
from layerinv.errors import InputError
from layerinv.pretrained import KINDS, PAPER_KINDS
from layerinv.reproduction.experiments.mnist import METHODS

TRAIN_GROUPS = {"both": PAPER_KINDS, "all": KINDS}
"""`train-mnist --kind`'s names for several kinds: 'both' kept its meaning when 'conv' came."""


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    _add_train(subparsers)
    _add_mnist(subparsers)


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-mnist", help="train the MNIST VAEs whose decoders layerinv ships (PyTorch)",
        description="Train a VAE with the paper's decoder (20 x 60 x 784, ReLU, no bias, ReLU "
                    "output), the LeakyReLU decoder 20 x 200 x 500 x 784 and/or the "
                    "convolutional decoder ('conv': Linear, two transposed convolutions, "
                    "BatchNorm folded, ReLU output) on MNIST digits, keeping some out of "
                    "training, and write decoder, encoder, training record and held-out "
                    "digits to --out.")
    p.add_argument("--data", required=True,
                   help="digits: .npz (images/labels or Keras's x_train...), IDX file or "
                        "directory")
    p.add_argument("--out", required=True, help="directory to write the .npz/.json files to")
    p.add_argument("--kind", default="both", choices=(*KINDS, *TRAIN_GROUPS),
                   help="which decoder to train: 'both' is the paper's two (relu and "
                        "leaky_relu), 'all' adds conv (default: both)")
    p.add_argument("--epochs", type=int_arg(1), default=None,
                   help="epochs (default: 100 for relu, leaky_relu and conv)")
    p.add_argument("--heldout", type=int_arg(1), default=1000,
                   help="digits kept out of training")
    p.add_argument("--ship", type=int_arg(0), default=200,
                   help="held-out digits written to mnist_heldout_digits.npz")
    p.add_argument("--limit", type=int_arg(2), default=None, help="use only the first N digits")
    p.add_argument("--batch-size", type=int_arg(1), default=250)
    p.add_argument("--lr", type=float_arg(0.0, strict=True), default=2e-3)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_train_mnist)


def _add_mnist(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mnist", help="denoise or inpaint MNIST digits with the shipped generator",
        description="Lei et al. (2019)'s MNIST experiment, offline: l_inf and l_1 LPs "
                    "against gradient descent, LP + gradient descent and the encoder.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for name, help_text in (("denoise", "x = G(z*) + Gaussian noise"),
                            ("inpaint", "a random-pixel or block mask, with or without noise")):
        a = actions.add_parser(name, help=help_text, description=help_text)
        a.add_argument("--generator", default="relu", choices=KINDS)
        a.add_argument("--instances", type=int_arg(1), default=100)
        a.add_argument("--source", default="gaussian", choices=("gaussian", "digit"),
                       help="z* ~ N(0, I), or the encoder mean of a held-out real digit")
        default_var = 0.3 if name == "denoise" else 0.0
        a.add_argument("--variance", type=float_arg(0.0), default=default_var,
                       help=f"per-pixel Gaussian noise variance (default {default_var:g})")
        if name == "inpaint":
            a.add_argument("--mask", default="random", choices=("random", "block"))
            a.add_argument("--keep", type=float_arg(0.0, strict=True, high=1.0), default=0.9,
                           help="share of pixels kept by a random mask")
            a.add_argument("--block", type=int_arg(1), default=10, help="side of a block mask")
        a.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
        a.add_argument("--seed", type=SEED, default=0)
        a.add_argument("--figure", default=None, help="write the paper's grid to this PNG")
        a.add_argument("--rows", default=None,
                       help="write the per-instance rows to this .csv or .json")
        a.add_argument("--no-progress", action="store_true", help="no progress bar")
        a.set_defaults(run=run_mnist)


def run_train_mnist(args: argparse.Namespace) -> int:
    from layerinv.reproduction.train import train_mnist  # PyTorch is imported here only

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise InputError(f"--out: {args.out!r} is a file; expected a folder to write the "
                         f"decoders into")

    kinds = TRAIN_GROUPS.get(args.kind, (args.kind,))
    summary = train_mnist(args.data, args.out, kinds=kinds, heldout=args.heldout,
                          ship=args.ship, limit=args.limit, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          progress=False if args.no_progress else None)
    for kind, quality in summary["quality"].items():
        print(f"{kind}: held-out reconstruction MSE {quality['mse_mean']:.4f} "
              f"(median PSNR {quality['psnr_median']:.1f} dB over {quality['digits']} digits)")
    print(f"wrote {len(summary['files'])} files to {args.out}")
    return 0


def run_mnist(args: argparse.Namespace) -> int:
    from layerinv.reproduction.experiments import mnist

    # Checked before the run: both are written only at its end. Missing folders are created.
    figure = None if args.figure is None else output_path(args.figure, "--figure",
                                                          create_folder=True)
    rows_path = None if args.rows is None else output_path(args.rows, "--rows",
                                                           create_folder=True)
    check_distinct({"--figure": figure, "--rows": rows_path})

    common: dict[str, Any] = {"n": args.instances, "source": args.source,
                              "variance": args.variance, "methods": args.methods,
                              "seed": args.seed, "figure": args.figure,
                              "progress": False if args.no_progress else None}
    if args.action == "denoise":
        rows = mnist.denoise(args.generator, **common)
    else:
        rows = mnist.inpaint(args.generator, mask=args.mask, keep=args.keep, block=args.block,
                             **common)
    print(mnist.format_summary(mnist.summarise(rows)))
    if rows_path is not None:
        _write_rows(rows, rows_path)
        print(f"rows written to {rows_path}")
    if args.figure:
        print(f"figure written to {args.figure}")
    return 0


def _write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        text = json.dumps(rows, indent=1) + "\n"
    else:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue()
    write_output(path, "--rows", lambda handle: handle.write(text.encode()))
