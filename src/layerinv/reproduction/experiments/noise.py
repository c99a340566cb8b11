"""Recovery error against noise (Lei et al. 2019, Figure 1).

Networks: 'random', a 20 x 100 x 500 ReLU net with N(0, 1/n_out) weights and no bias, drawn
afresh for every instance, and 'mnist', the shipped MNIST generator (20 x 60 x 784, ReLU,
`layerinv.pretrained.mnist_generator('relu')`), built once per run and sent once to each worker.
Noise: 'uniform' (i.i.d. U[-1, 1]) or 'gaussian' (i.i.d. N(0, 1)) directions, scaled so that
the **relative noise** ||e||_2 / ||G(z*)||_2 equals the level exactly, levels 1e-6 ... 1e-1.
Methods: the l_inf LP (eq. 5) and the l_1 LP (eq. 6), no noise bound given (noise=None), the
paper's layer-wise pipeline alone (joint=False); and, beside them (issue 13, new trial keys),
'pattern': the whole network fitted on activation regions, l2 loss, no prior
(`invert(net, x, 'pattern')`, seeded starts and the l_inf answer as one more), its status
'optimal' (zero residual) or 'local_optimum' (certified) and its region's error bound.

Metrics: the relative recovery error ||z_hat - z*||_2 / ||z*||_2, the l_inf error
||z_hat - z*||_inf, eps = ||e||_inf (the theorem's noise size), the certificate's guaranteed bound
on ||z_hat - z*||_inf (`error_bound`), the status and `seconds` (the only timing metric).

The theorem (l_inf LP, every layer expanding enough): ||z_hat - z*||_inf <= 2^d eps / c^d
with an unspecified constant c: linear in eps. The figure draws that shape, (2 / c)^d eps, with
c fitted to the medians, and the fitted log-log slope of the median error against eps is
reported (1 = linear, as the theorem says).

Instance i of a network draws the net (for 'random') and z* from
numpy.random.default_rng([seed, j, i, 1]) (j = 1 random, 2 mnist), the same at every level and
noise kind (the curves are paired), and the noise from
default_rng([seed, j, i, 2, kind (1 uniform, 2 gaussian), the level's float64 bits]).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

NAME = "noise"
TITLE = "Recovery error against noise (paper Figure 1)"
NETWORKS = ("random", "mnist")
RANDOM_WIDTHS = (20, 100, 500)
NOISES = ("uniform", "gaussian")
LEVELS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
METHODS = ("linf", "l1", "pattern")
"""The grid's methods; 'pattern' was added after the others (their trial keys unchanged)."""
SUCCESS_STATUSES = ("optimal", "local_optimum")
"""A method's own claim of success: an optimal LP, or the pattern method's certified local
optimum (its 'optimal' is a zero-residual fit, which noisy data never give)."""
TRIALS = 200
QUICK_TRIALS = 3
SEED = 0
TIMING_FIELDS = ("seconds",)
NETWORK_LABELS = {"random": "random ReLU net 20 x 100 x 500",
                  "mnist": "MNIST generator 20 x 60 x 784"}
METHOD_LABELS = {"linf": r"$\ell_\infty$ LP", "l1": r"$\ell_1$ LP",
                 "pattern": r"pattern ($\ell_2$)"}

DESCRIPTION = (
    "Relative recovery error ||z_hat - z*|| / ||z*|| against the relative noise ||e|| / ||G(z*)|| "
    "(set exactly by scaling a uniform or Gaussian draw), on a random 20 x 100 x 500 ReLU net "
    "(a fresh one per instance) and on the shipped MNIST generator (20 x 60 x 784), with the "
    "l_inf and l_1 LPs and the pattern method (the whole network fitted on activation "
    "regions, l2 loss). Each run is a dot and the median per level a line. The second figure "
    "plots the l_inf error ||z_hat - z*||_inf against eps = ||e||_inf with the theorem's shape "
    "2^d eps / c^d (c fitted: the theorem gives no number).")
PAPER = (
    "Figure 1 (20 x 100 x 500 random net and the MNIST generator, uniform and Gaussian noise, "
    "levels 1e-6 to 1e-1, 200 runs per level): the recovery error of the LP grows linearly with "
    "the noise (a line of slope 1 on the log-log plot), as Theorem 4's bound "
    "||z_hat - z*||_inf <= 2^d eps / c^d predicts.")


# ----------------------------------------------------------------------------- the grid
def grid(quick: bool, trials: int | None) -> list[dict[str, Any]]:
    count = trials if trials is not None else (QUICK_TRIALS if quick else TRIALS)
    return [{"network": net, "noise": kind, "level": level, "method": method, "instance": i,
             "seed": SEED}
            for net in NETWORKS for kind in NOISES for level in LEVELS
            for i in range(count) for method in METHODS]


def cost(params: dict[str, Any]) -> float:
    return 0.03 if params["network"] == "random" else 0.015


def shared(quick: bool) -> dict[str, Any]:
    """The MNIST generator, loaded once per run and sent once to each worker."""
    from layerinv.pretrained import mnist_generator

    return {"mnist": mnist_generator("relu")}


def instance(params: dict[str, Any], shared_objects: dict[str, Any] | None
             ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """(net, z*, G(z*), e) of a trial."""
    from layerinv.network import random_network

    name = params["network"]
    j = NETWORKS.index(name)
    # No zero at the end of a seed list: numpy drops trailing zeros ([s, 0] is the stream s).
    rng = np.random.default_rng([params["seed"], j + 1, params["instance"], 1])
    if name == "random":
        net = random_network(list(RANDOM_WIDTHS), "relu", seed=rng)
    else:
        if shared_objects is None or "mnist" not in shared_objects:
            from layerinv.pretrained import mnist_generator

            net = mnist_generator("relu")
        else:
            net = shared_objects["mnist"]
    z = rng.standard_normal(net.input_dim)
    clean = net.forward(z)
    kind, level = params["noise"], float(params["level"])
    level_id = int(np.float64(level).view(np.uint64))  # the level's bits: unique, >= 0
    noise_rng = np.random.default_rng([params["seed"], j + 1, params["instance"], 2,
                                       NOISES.index(kind) + 1, level_id])
    draw = (noise_rng.uniform(-1.0, 1.0, clean.shape) if kind == "uniform"
            else noise_rng.standard_normal(clean.shape))
    e = draw * (level * np.linalg.norm(clean) / np.linalg.norm(draw))
    return net, z, clean, e


def run_trial(params: dict[str, Any], shared: Any = None) -> dict[str, Any]:
    from layerinv._walk import invert

    net, z, clean, e = instance(params, shared)
    x = clean + e
    started = time.perf_counter()
    # joint=False: the paper's layer-wise pipeline (Figure 1) for the LPs; the pattern
    # method is its own row (its l_inf start is that pipeline's answer).
    result = invert(net, x, params["method"], progress=False, joint=False)
    seconds = time.perf_counter() - started
    z_hat = np.asarray(result.z)
    return {"rel_error": float(np.linalg.norm(z_hat - z) / np.linalg.norm(z)),
            "linf_error": float(np.max(np.abs(z_hat - z))),
            "rel_noise": float(np.linalg.norm(e) / np.linalg.norm(clean)),
            "eps": float(np.max(np.abs(e))),
            "depth": len(net.layers),
            "error_bound": float(result.error_bound),
            "status": str(result.status),
            "seconds": seconds}


# ----------------------------------------------------------------------------- analysis
def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["network"], row["noise"], row["method"]), []).append(row)
    return groups


def medians(members: list[dict[str, Any]], field: str, x_field: str = "level"
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per level: (median of x_field, median of field)."""
    levels = sorted({float(r["level"]) for r in members})
    xs, ys = [], []
    for level in levels:
        at = [r for r in members if float(r["level"]) == level]
        xs.append(float(np.median([r[x_field] for r in at])))
        ys.append(float(np.median([r[field] for r in at])))
    return np.array(xs), np.array(ys)


def slope(xs: np.ndarray, ys: np.ndarray) -> float:
    """Least-squares slope of log10(y) on log10(x) over positive points (nan if < 2)."""
    keep = (xs > 0) & (ys > 0) & np.isfinite(ys)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log10(xs[keep]), np.log10(ys[keep]), 1)[0])


def theorem_c(members: list[dict[str, Any]]) -> float:
    """c such that (2 / c)^d eps passes through the medians (geometric mean of the ratios)."""
    eps, err = medians(members, "linf_error", "eps")
    keep = (eps > 0) & (err > 0) & np.isfinite(err)
    if not keep.any():
        return float("nan")
    d = int(members[0].get("depth", 2))
    ratio = float(np.exp(np.mean(np.log(err[keep] / eps[keep]))))
    return 2.0 / ratio ** (1.0 / d)


def summary(rows: list[dict[str, Any]]) -> str:
    from layerinv.reproduction.report import markdown_table

    groups = _groups(rows)
    levels = sorted({float(r["level"]) for r in rows})
    header = ["network", "noise", "method", "runs/level", *(f"{lv:g}" for lv in levels),
              "slope", "c fit", "optimal / local opt."]
    body = []
    for net in NETWORKS:
        for kind in NOISES:
            for method in METHODS:
                members = groups.get((net, kind, method))
                if not members:
                    continue
                xs, ys = medians(members, "rel_error")
                by_level = dict(zip(xs, ys, strict=True))
                per = min(sum(float(r["level"]) == lv for r in members) for lv in levels)
                body.append([net, kind, method, str(per),
                             *(f"{by_level[lv]:.1e}" if lv in by_level else "" for lv in levels),
                             f"{slope(xs, ys):.2f}", f"{theorem_c(members):.2f}",
                             f"{np.mean([r['status'] in SUCCESS_STATUSES for r in members]):.0%}"])
    return ("Median relative recovery error per relative noise level; slope = fitted log-log "
            "slope (1 = linear); c fit = the theorem's c from the l_inf errors; the last column "
            "is the share of runs whose status is 'optimal' (or, for the pattern method, a "
            "certified 'local_optimum').\n\n"
            + markdown_table(header, body))


def figures(rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    from layerinv.reproduction.report import pyplot, save_figure

    plt = pyplot()
    groups = _groups(rows)
    panels = [(net, kind) for net in NETWORKS for kind in NOISES
              if any((net, kind, m) in groups for m in METHODS)]
    if not panels:
        return []
    out = []
    colors = {"linf": "tab:blue", "l1": "tab:orange", "pattern": "tab:green"}
    offsets = {"linf": 0.92, "l1": 1.08, "pattern": 1.0}
    for figure, (field, x_field, name, ylabel, xlabel) in enumerate((
            ("rel_error", "rel_noise", "noise_relative_error.png",
             r"relative error $\|\hat z - z^*\|_2 / \|z^*\|_2$",
             r"relative noise $\|e\|_2 / \|G(z^*)\|_2$"),
            ("linf_error", "eps", "noise_linf_theorem.png",
             r"$\|\hat z - z^*\|_\infty$", r"$\epsilon = \|e\|_\infty$"))):
        ncols = len(NOISES)
        nrows = -(-len(panels) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.0 * nrows),
                                 squeeze=False)
        for ax in axes.ravel()[len(panels):]:
            ax.set_visible(False)
        for ax, (net, kind) in zip(axes.ravel(), panels, strict=False):
            for method in METHODS:
                members = groups.get((net, kind, method))
                if not members:
                    continue
                if figure == 1 and method != "linf":
                    continue
                xv = np.array([r[x_field] for r in members]) * offsets[method]
                yv = np.array([r[field] for r in members], dtype=float)
                ax.scatter(xv, np.maximum(yv, 1e-16), s=6, alpha=0.35, color=colors[method],
                           linewidths=0)
                xs, ys = medians(members, field, x_field)
                ax.plot(xs, np.maximum(ys, 1e-16), "-o", color=colors[method], markersize=3,
                        label=f"{METHOD_LABELS[method]} median (slope {slope(xs, ys):.2f})")
                if figure == 1:
                    c = theorem_c(members)
                    d = int(members[0].get("depth", 2))
                    if np.isfinite(c):
                        grid_eps = np.logspace(np.log10(xs.min()), np.log10(xs.max()), 20)
                        ax.plot(grid_eps, (2.0 / c) ** d * grid_eps, "k--", linewidth=1,
                                label=rf"theorem shape $2^d\epsilon/c^d$, d={d}, c={c:.2f}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(f"{NETWORK_LABELS[net]}, {kind} noise", fontsize=9)
            ax.minorticks_off()
            ax.grid(True, alpha=0.25)
            ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        out.append(save_figure(fig, Path(out_dir) / name))
    return out


def verdict(rows: list[dict[str, Any]]) -> str:
    groups = _groups(rows)
    slopes = {}
    for key, members in groups.items():
        xs, ys = medians(members, "rel_error")
        slopes[key] = slope(xs, ys)
    linf = {k: s for k, s in slopes.items() if k[2] == "linf" and np.isfinite(s)}
    if not linf:
        return "No l_inf noise runs recorded yet, so there is nothing to compare with Figure 1."
    low, high = min(linf.values()), max(linf.values())
    worst = max(linf, key=lambda k: abs(linf[k] - 1.0))
    ratios = []
    for key, members in groups.items():
        if key[2] != "linf":
            continue
        xs, ys = medians(members, "rel_error")
        ratios.extend(ys[xs > 0] / xs[xs > 0])
    factor = float(np.median(ratios)) if ratios else float("nan")
    n_min = min(len(m) for m in groups.values()) // max(1, len(LEVELS))
    linear = abs(low - 1.0) <= 0.15 and abs(high - 1.0) <= 0.15
    word = "match" if linear else "fall short of"
    why = ("the l_inf LP's error is linear in the noise, as the paper's Figure 1 and the "
           "2^d eps / c^d bound say" if linear else
           f"the slope is furthest from 1 on {worst[0]} with {worst[1]} noise "
           f"({linf[worst]:.2f}): the error is not linear in the noise there")
    caveat = f" ({n_min} runs per level: indicative only)" if n_min < 20 else ""
    return (f"We {word} Figure 1: the median relative error of the l_inf LP grows with "
            f"fitted log-log slope {low:.2f} to {high:.2f} against the relative noise "
            f"(median error/noise ratio {factor:.2g}); {why}{caveat}." + _pattern_clause(rows))


def _pattern_clause(rows: list[dict[str, Any]]) -> str:
    """A sentence on the pattern method beside the l_inf LP (empty without pattern rows):
    its slopes and its error over the l_inf LP's, paired by trial."""
    groups = _groups(rows)
    slopes = [slope(*medians(m, "rel_error")) for k, m in groups.items() if k[2] == "pattern"]
    slopes = [s for s in slopes if np.isfinite(s)]
    if not slopes:
        return ""

    def key(row: dict[str, Any]) -> tuple:
        return (row["network"], row["noise"], float(row["level"]), int(row["instance"]))

    linf = {key(r): r["rel_error"] for r in rows if r["method"] == "linf"}
    ratios = [r["rel_error"] / linf[key(r)] for r in rows
              if r["method"] == "pattern" and linf.get(key(r), 0) > 0]
    paired = (f"; its error is a median {np.median(ratios):.2g} times the l_inf LP's on the "
              f"same {len(ratios)} runs (lower on {sum(q < 1 for q in ratios)})"
              if ratios else "")
    return (f" The pattern method (l2 fit of the whole network) grows with slope "
            f"{min(slopes):.2f} to {max(slopes):.2f}{paired}.")
