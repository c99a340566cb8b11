"""Regenerate the tables (and their figures) in docs/: every table there names this command.

    python scripts/docs_tables.py sensing              # docs/sensing.md, about 20 min on 2 cores
    python scripts/docs_tables.py mnist-generators     # docs/mnist.md, the shipped decoders
    python scripts/docs_tables.py mnist-relu           # docs/mnist.md, 'relu' results
    python scripts/docs_tables.py mnist-leaky          # docs/mnist.md, 'leaky_relu' results
    python scripts/docs_tables.py mnist-sweep          # docs/mnist.md, the noise sweep
    python scripts/docs_tables.py all
    python scripts/docs_tables.py --list               # names, files and settings

A table sits between the lines `<!-- table: NAME (python scripts/docs_tables.py NAME) -->`
and `<!-- /table -->`; this script replaces what is between them and nothing else. Prose
that quotes a table's numbers is the writer's to check against the new table, which is
printed too. Every table is seeded: a rerun gives the same numbers except the seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIGURES = DOCS / "figures"

SENSING = {"networks": ("mnist", "random"), "ms": (10, 20, 30, 50, 100, 200, 400),
           "instances": 20, "seed": 0}
"""The sensing table's grid: `sensing.run(**SENSING)`."""
MNIST_SEED = 0
MNIST_INSTANCES = 100
RELU_TASKS = (  # (task, source, variance), in the table's order
    ("denoise", "gaussian", 0.3), ("denoise", "digit", 0.3),
    ("inpaint-random", "gaussian", 0.0), ("inpaint-random", "gaussian", 0.3),
    ("inpaint-block", "gaussian", 0.0), ("inpaint-block", "gaussian", 0.3),
    ("inpaint-random", "digit", 0.3), ("inpaint-block", "digit", 0.3))
LEAKY_TASKS = (("denoise", "gaussian", 0.3), ("inpaint-random", "gaussian", 0.0))
SWEEP_STDS = (0.01, 0.03, 0.1, 0.2, 0.3, float(np.sqrt(0.3)))
SWEEP_INSTANCES = 20
RECOVERY_INSTANCES = 100


# ----------------------------------------------------------------------------- the tables
def sensing_table() -> str:
    from layerinv.reproduction.experiments import sensing

    rows = sensing.run(SENSING["networks"], ms=SENSING["ms"], instances=SENSING["instances"],
                       seed=SENSING["seed"], progress=True)
    sensing.plot(rows, FIGURES / "sensing.png")
    return sensing.format_markdown(sensing.summarise(rows))


def _mnist_results(kind: str, tasks: tuple[tuple[str, str, float], ...]) -> str:
    from layerinv.reproduction.experiments import mnist

    rows = []
    for task, source, variance in tasks:
        run = mnist.grid_run(kind, task, source=source, variance=variance, n=MNIST_INSTANCES,
                             seed=MNIST_SEED)
        name = f"mnist_{kind}_{task.replace('-', '_')}_{source}_var{variance:g}.png"
        mnist.figure_grid(run, FIGURES / name, title=mnist._title(run.rows[0]))
        rows += run.rows
    return mnist.format_summary(mnist.summarise(rows))


def mnist_relu_table() -> str:
    return _mnist_results("relu", RELU_TASKS)


def mnist_leaky_table() -> str:
    return _mnist_results("leaky_relu", LEAKY_TASKS)


def mnist_sweep_table() -> str:
    from layerinv.reproduction.experiments import mnist

    names = [mnist.label(method, prior, 0.3) for method, prior in mnist.grid_methods(0.3)]
    lines = ["| noise std (variance) | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for std in SWEEP_STDS:
        rows = mnist.grid_run("relu", "denoise", variance=std**2, n=SWEEP_INSTANCES,
                              seed=MNIST_SEED).rows
        cells = []
        for name in names:
            mine = [r for r in rows if mnist.row_label(r) == name]
            assert mine, name  # every std has the same methods, the MAP prior its own
            psnr = float(np.median([r["psnr"] for r in mine]))
            error = float(np.median([r["latent_error"] for r in mine]))
            cells.append(f"{psnr:.1f} dB / {error:.2g}")
        lines.append(f"| {std:.3g} ({std**2:.2g}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mnist_generators_table() -> str:
    """The shipped decoders: their training records (the JSON beside the weights) and what is
    measured here on the shipped data."""
    import layerinv
    from layerinv.pretrained import mnist_digits, mnist_encoder, mnist_generator
    from layerinv.reproduction.experiments import mnist

    data = ROOT / "src" / "layerinv" / "data"
    digits = mnist_digits().images
    columns = {}
    for kind in ("relu", "leaky_relu"):
        record = json.loads((data / f"mnist_{kind}.json").read_text())
        net, encoder = mnist_generator(kind), mnist_encoder(kind)
        mean, log_var = encoder.encode(digits)
        kl = 0.5 * (mean**2 + np.exp(log_var) - 1.0 - log_var).mean(axis=0)
        instances = mnist.make_instances(net, None, RECOVERY_INSTANCES, variance=0.0,
                                         seed=MNIST_SEED)
        errors, statuses = [], []
        for instance in instances:
            result = layerinv.invert(net, instance.observation, "linf", progress=False)
            errors.append(np.linalg.norm(result.z - instance.z) / np.linalg.norm(instance.z))
            statuses.append(str(result.status))
        errors = np.array(errors)
        good = errors < 1e-6
        others = ", ".join(f"{e:.2g}" for e in errors[~good])
        final, held = record["final"], record["heldout_reconstruction"]
        size = [(data / f"mnist_{kind}_{part}.npz").stat().st_size / 1e6
                for part in ("decoder", "encoder")]
        columns[kind] = {
            "decoder": (" x ".join(map(str, record["decoder_widths"])) + ", "
                        + ", ".join(dict.fromkeys(record["decoder_activations"]))
                        + (", bias" if record["decoder_bias"] else ", no bias")),
            "encoder": " x ".join(map(str, record["encoder_widths"]))
                       + f" = {record['encoder_output']}",
            "loss": record["loss"] + f" (beta = {record['beta']:g})",
            "training": (f"{record['training_digits']:,} digits, {record['epochs']} epochs, "
                         f"batch {record['batch_size']}, {record['optimizer']} lr "
                         f"{record['lr']:g}, seed {record['seed']}"),
            "training time (recorded, torch threads)":
                f"{record['train_seconds']:.0f} s ({record['torch_threads']})",
            "final loss (reconstruction + KL)":
                f"{final['reconstruction']:.1f} + {final['kl']:.1f} = {final['loss']:.1f}",
            f"held-out reconstruction ({held['digits']:,} digits, encoder mean then decoder): "
            "MSE": f"{held['mse_mean']:.4f}",
            "same, median PSNR": f"{held['psnr_median']:.1f} dB",
            f"active latent dimensions (mean KL > 0.05 nats on the {len(digits)} shipped "
            "digits)": f"{int(np.sum(kl > 0.05))} of {len(kl)}",
            f"noise-free l_inf LP, {RECOVERY_INSTANCES} seeded z* ~ N(0, I): relative error "
            "< 1e-6": (f"{int(good.sum())} / {len(errors)} (largest {errors[good].max():.2g}"
                       + (f"; the others: {others}" if others else "")
                       + f"; {statuses.count('optimal')} 'optimal')"),
            "shipped size (decoder + encoder, float32 compressed)":
                f"{size[0]:.2f} + {size[1]:.2f} MB",
        }
    lines = ["| | 'relu' (the paper's) | 'leaky_relu' (the paper's second network) |",
             "|---|---|---|"]
    for label in columns["relu"]:
        cells = [str(columns[kind][label]).replace("|", "\\|") for kind in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


TABLES: dict[str, tuple[Path, Callable[[], str], str]] = {
    "sensing": (DOCS / "sensing.md", sensing_table,
                "sensing.run(('mnist', 'random'), ms=(10, 20, 30, 50, 100, 200, 400), "
                "instances=20, seed=0), every method of sensing.METHODS (pgd, pgd-plain, "
                "pgd-pattern, pattern, gd, lstsq); also docs/figures/sensing.png"),
    "mnist-generators": (DOCS / "mnist.md", mnist_generators_table,
                         "the training records in src/layerinv/data/*.json, and measured: "
                         "active latent dimensions, 100 noise-free LP inversions, file sizes"),
    "mnist-relu": (DOCS / "mnist.md", mnist_relu_table,
                   "mnist.grid_run('relu', task, n=100, seed=0) (the registry grid's methods: "
                   "mnist.METHODS with prior 0, pattern with the MAP prior, and gd with it "
                   "under noise) for the 8 tasks of RELU_TASKS; also their "
                   "docs/figures/mnist_relu_*_var*.png"),
    "mnist-leaky": (DOCS / "mnist.md", mnist_leaky_table,
                    "the same for 'leaky_relu' and the 2 tasks of LEAKY_TASKS"),
    "mnist-sweep": (DOCS / "mnist.md", mnist_sweep_table,
                    "mnist.grid_run('relu', 'denoise', variance=std**2, n=20, seed=0) for "
                    "each std (the MAP prior is std**2 / 784)"),
}


# ----------------------------------------------------------------------------- the files
def marker(name: str) -> str:
    return f"<!-- table: {name} (python scripts/docs_tables.py {name}) -->"


END = "<!-- /table -->"


def replace_table(text: str, name: str, table: str) -> str:
    """`text` with the block of table `name` replaced by `table`, indented as its marker is
    (a table inside a list item)."""
    pattern = re.compile(r"^( *)" + re.escape(marker(name)) + r"\n.*?\n *" + re.escape(END),
                         re.DOTALL | re.MULTILINE)
    if len(pattern.findall(text)) != 1:
        raise SystemExit(f"error: expected one block '{marker(name)}' ... '{END}'")

    def block(match: re.Match[str]) -> str:
        pad = match.group(1)
        body = "\n".join(pad + line for line in table.splitlines())
        return f"{pad}{marker(name)}\n{body}\n{pad}{END}"

    return pattern.sub(block, text)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"tables: {', '.join(TABLES)} or all")
    parser.add_argument("--list", action="store_true", help="list the tables and stop")
    args = parser.parse_args(argv)
    if args.list or not args.names:
        for name, (path, _, settings) in TABLES.items():
            print(f"{name}: {path.relative_to(ROOT)}: {settings}")
        return 0
    names = list(TABLES) if args.names == ["all"] else args.names
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        parser.error(f"unknown table {unknown[0]!r}; choose from {', '.join(TABLES)} or all")
    for name in names:
        path, make, _ = TABLES[name]
        started = time.perf_counter()
        table = make()
        path.write_text(replace_table(path.read_text(), name, table))
        print(f"{name}: {path.relative_to(ROOT)} rewritten in {time.perf_counter() - started:.0f}"
              f" s\n{table}\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
