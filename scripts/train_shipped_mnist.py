"""Train the MNIST VAEs whose weights ship in src/layerinv/data/ (the exact command used).

    python scripts/train_shipped_mnist.py

runs, from the repository root,

    layerinv train-mnist --data ../shared/data/mnist_10k.npz --out src/layerinv/data \
        --kind both --heldout 1000 --ship 200 --seed 0

(defaults: 100 epochs each, batch 250, Adam lr 2e-3, beta 1). ../shared/data/mnist_10k.npz holds
10,000 real MNIST digits (see src/layerinv/data/README.md for provenance and licence; sha256 in
the JSON files written next to the weights). Extra arguments are passed on and, given after
COMMAND's, win over its: `--kind conv` trains the convolutional VAE alone (the relu and
leaky_relu files are not touched; the held-out digits file is rewritten with the same digits),
`--data PATH` reads the digits elsewhere (from a git worktree, ../shared is not beside it).
The shipped conv files were made with

    OMP_NUM_THREADS=1 python scripts/train_shipped_mnist.py --kind conv \
        --data /work/shared/data/mnist_10k.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerinv.cli.mnist import add_parsers

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["train-mnist", "--data", str(ROOT.parent / "shared" / "data" / "mnist_10k.npz"),
           "--out", str(ROOT / "src" / "layerinv" / "data"), "--kind", "both",
           "--heldout", "1000", "--ship", "200", "--seed", "0"]


def main(extra: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="layerinv")
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(COMMAND + extra)
    print("layerinv " + " ".join(COMMAND + extra), flush=True)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
