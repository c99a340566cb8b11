"""Compressed sensing with a generative prior: relative error against the number of measurements.

The CSGM experiment (Bora, Jalal, Price and Dimakis, ICML 2017, Figure 1: reconstruction error
against m) with the layer-wise LP as the projection of projected gradient descent. For each
network, each m and each instance: a latent z* ~ N(0, I), the signal x = G(z*), a Gaussian
A (m, n) with i.i.d. N(0, 1/m) entries and y = A x (+ Gaussian noise of standard deviation
`noise` per measurement, 0 by default). Methods:

- 'pgd': `reconstruct(net, y, A, 'pgd')`, projected gradient descent with the l_inf LP as the
  projection, backtracking step and Gauss-Newton polish (see `layerinv.reconstruct`);
- 'pgd-plain': the same without the polish (Shah and Hegde's PGD as such, LP projection only),
  one start unless `pgd_options` says otherwise (it rarely fits to round-off, so restarts
  would always all run);
- 'pgd-pattern': 'pgd' with the pattern method's l2 fit as the projection
  (`pgd(projection='pattern')`, seeded);
- 'pattern': `reconstruct(net, y, A, 'pattern')`, the whole network fitted to y on activation
  regions directly (A G(z) is affine on each), l2 loss, seeded starts;
- 'gd': gradient descent on the latent, the CSGM estimator itself (preset 'bora2017': Adam,
  lr 0.01, 1,000 steps, 10 restarts; `gd_options` overrides);
- 'lstsq': the minimum-norm least-squares estimate x = A^+ y, no prior (the CSGM paper's
  prior-free baseline; for m < n it is the projection of x on the row space of A, relative
  error about sqrt(1 - m / n)).

Metric: the relative error ||x_hat - x||_2 / ||x||_2 in signal space. Networks: 'mnist' (the
shipped VAE decoder, 20 x 60 x 784, ReLU, `layerinv.pretrained.mnist_generator('relu')`) and
'random' (a fresh random 20 x 100 x 500 ReLU net per instance), or any `Network` given in
`networks` as a {name: network} mapping. Instance i of network index j uses the generators
numpy.random.default_rng([seed, j, i, 1]) (the latent and, for 'random', the net: the same for
every m, so the curves are paired) and default_rng([seed, j, i, m, 2]) (A and the noise); the
random starts of 'gd' and 'pgd' are seeded with an int drawn from default_rng([seed, j, i, m,
3]). The non-zero last entries matter: NumPy reads a seed list as one little-endian integer, so
default_rng([0, 0, 0]) is default_rng(0), and an untagged instance 0 drew z* equal to the
first random start of 'gd' and 'pgd' with their default seed 0 (a first run of this experiment
"recovered" MNIST instance 0 from m = 10 that way).

`run` returns one dict per (network, m, method, instance): network, n, m, method, instance,
seed, noise, rel_error, status, seconds; ready for a table or an SQLite store. `summarise` gives
per (network, m, method) the mean with a 95 % interval (mean +- 1.96 standard errors), the
median, the share of instances below 1e-3 and the mean seconds; `format_summary` prints it;
`plot` draws the error-versus-m figure (mean with 95 % error bars, and the share recovered
with 95 % Wilson intervals).

The module is also the registry's `sensing` experiment (its last section: one trial per
(network, m, method, instance), each a one-instance `run`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from layerinv._reconstruct import reconstruct
from layerinv.errors import InputError
from layerinv.measurements import Gaussian, GaussianNoise
from layerinv.network import Network, random_network
from layerinv.reproduction.report import not_run, pyplot, save_figure

METHODS = ("pgd", "pgd-plain", "pgd-pattern", "pattern", "gd", "lstsq")
"""The registry grid's methods, the report's order. The pattern ones were added after the
others (issue 13): they are new trial keys; the others' keys are those stored before."""
SUPPORTED = METHODS
"""What `run` takes."""
NETWORKS = ("mnist", "random")
RANDOM_WIDTHS = (20, 100, 500)
DEFAULT_MS = (10, 20, 30, 50, 100, 200, 300)
SUCCESS = 1e-3
METHOD_LABELS = {"pgd": "LP-PGD (+ Gauss-Newton polish)", "pgd-plain": "LP-PGD (no polish)",
                 "pgd-pattern": "PGD, pattern projection", "pattern": "pattern (regions)",
                 "gd": "gradient descent (CSGM)", "lstsq": "least squares $A^+y$ (no prior)"}
NETWORK_LABELS = {"mnist": "MNIST VAE decoder 20 x 60 x 784",
                  "random": "random ReLU net 20 x 100 x 500",
                  "conv": "conv MNIST decoder 20 -> 32x7x7 -> 16x14x14 -> 784"}


def run(networks: Sequence[str] | Mapping[str, Network] = NETWORKS, *,
        ms: Sequence[int] = DEFAULT_MS, methods: Sequence[str] = METHODS, instances: int = 10,
        seed: int = 0, noise: float = 0.0, gd_options: Mapping[str, Any] | None = None,
        pgd_options: Mapping[str, Any] | None = None,
        progress: bool | None = None) -> list[dict[str, Any]]:
    """Every (network, m, method, instance); see the module docstring."""
    nets = _networks(networks)
    ms = [int(m) for m in ms]
    if not ms or min(ms) < 1:
        raise InputError(f"ms must list measurement counts >= 1; got {ms}")
    methods = list(methods)
    bad = [method for method in methods if method not in SUPPORTED]
    if bad or not methods:
        raise InputError(f"methods must be taken from {SUPPORTED}; got {methods}")
    if not (isinstance(instances, int) and instances >= 1):
        raise InputError(f"instances must be an int >= 1; got {instances!r}")
    if noise < 0:
        raise InputError(f"noise must be >= 0; got {noise!r}")
    gd_options = {"progress": False, **(gd_options or {})}
    pgd_options = {"progress": False, **(pgd_options or {})}
    rows: list[dict[str, Any]] = []
    total = len(nets) * len(ms) * instances
    with tqdm(total=total, desc="sensing", unit="instance", leave=False,
              disable=progress is False, delay=0.0 if progress else 2.0) as bar:
        for j, (name, fixed) in enumerate(nets.items()):
            for i in range(instances):
                rng = np.random.default_rng([seed, j, i, 1])
                net = fixed if fixed is not None else random_network(RANDOM_WIDTHS, seed=rng)
                z_true = rng.standard_normal(net.input_dim)
                x = net.forward(z_true)
                for m in ms:
                    inner = np.random.default_rng([seed, j, i, m, 2])
                    starts = int(np.random.default_rng([seed, j, i, m, 3]).integers(2**31))
                    A = Gaussian(m, net.output_dim, seed=inner)
                    y = A.apply(x)
                    if noise > 0:
                        y = GaussianNoise(noise, seed=int(inner.integers(2**31)))(y)
                    for method in methods:
                        estimate, status, seconds = _estimate(
                            method, net, y, A, {"seed": starts, **gd_options},
                            {"seed": starts, **pgd_options})
                        error = float(np.linalg.norm(estimate - x) / np.linalg.norm(x))
                        rows.append({"network": name, "n": net.output_dim, "m": m,
                                     "method": method, "instance": i, "seed": seed,
                                     "noise": float(noise), "rel_error": error,
                                     "status": status, "seconds": seconds})
                    bar.update()
    return rows


def _networks(networks: Sequence[str] | Mapping[str, Network]) -> dict[str, Network | None]:
    """name -> a fixed Network, or None for a fresh random net per instance."""
    if isinstance(networks, Mapping):
        out: dict[str, Network | None] = {}
        for name, net in networks.items():
            if not isinstance(net, Network):
                raise InputError(f"networks[{name!r}] must be a layerinv.Network; got "
                                 f"{type(net).__name__}")
            out[str(name)] = net
        return out
    out = {}
    for name in networks:
        if name == "mnist":
            from layerinv.pretrained import mnist_generator

            out[name] = mnist_generator("relu")
        elif name == "random":
            out[name] = None
        else:
            raise InputError(f"networks must name {NETWORKS} or map names to Networks; got "
                             f"{name!r}")
    if not out:
        raise InputError("networks must name at least one network")
    return out


def _estimate(method: str, net: Network, y: np.ndarray, A: Gaussian,
              gd_options: Mapping[str, Any], pgd_options: Mapping[str, Any]
              ) -> tuple[np.ndarray, str, float]:
    started = time.perf_counter()
    if method == "lstsq":
        return A.lstsq(y), "lstsq", time.perf_counter() - started
    if method == "gd":
        result = reconstruct(net, y, A, "gd", **gd_options)
    elif method == "pgd":
        result = reconstruct(net, y, A, "pgd", **pgd_options)
    elif method == "pgd-pattern":
        result = reconstruct(net, y, A, "pgd", **{**pgd_options, "projection": "pattern"})
    elif method == "pattern":
        result = reconstruct(net, y, A, "pattern", seed=int(pgd_options.get("seed", 0)),
                             progress=False)
    else:
        result = reconstruct(net, y, A, "pgd", **{"restarts": 1, **pgd_options,
                                                  "polish": False})
    return result.signal, str(result.status), time.perf_counter() - started


# --------------------------------------------------------------------------------- summary
def summarise(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (network, m, method): count, mean, ci95, median, success share, mean seconds."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["network"], int(row["m"]), row["method"]), []).append(row)
    order = {method: i for i, method in enumerate(SUPPORTED)}
    out = []
    for (network, m, method), group in sorted(
            groups.items(), key=lambda item: (item[0][0], item[0][1],
                                              order.get(item[0][2], 99), item[0][2])):
        errors = np.array([row["rel_error"] for row in group])
        count = errors.size
        sem = float(np.std(errors, ddof=1) / np.sqrt(count)) if count > 1 else float("nan")
        out.append({"network": network, "m": m, "method": method, "count": count,
                    "mean": float(errors.mean()), "ci95": 1.96 * sem,
                    "median": float(np.median(errors)),
                    "success": float(np.mean(errors < SUCCESS)),
                    "seconds": float(np.mean([row["seconds"] for row in group]))})
    return out


def format_summary(summary: Sequence[dict[str, Any]]) -> str:
    """A text table of `summarise`'s output."""
    lines = [f"{'network':<8} {'m':>5} {'method':<10} {'n':>3} {'mean':>9} {'+-95%':>9} "
             f"{'median':>9} {'<1e-3':>6} {'seconds':>8}"]
    for row in summary:
        lines.append(f"{row['network']:<8} {row['m']:>5} {row['method']:<10} "
                     f"{row['count']:>3} {row['mean']:>9.2e} {row['ci95']:>9.2e} "
                     f"{row['median']:>9.2e} {row['success']:>6.0%} {row['seconds']:>8.3f}")
    return "\n".join(lines)


def format_markdown(summary: Sequence[dict[str, Any]]) -> str:
    """The same table in Markdown."""
    lines = ["| network | m | method | instances | mean rel. error | 95 % half-width | median | "
             "share < 1e-3 | mean s |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in summary:
        lines.append(f"| {row['network']} | {row['m']} | {row['method']} | {row['count']} | "
                     f"{row['mean']:.2e} | {row['ci95']:.2e} | {row['median']:.2e} | "
                     f"{row['success']:.0%} | {row['seconds']:.3f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- figure
def wilson_interval(successes: int, count: int) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial share."""
    if count == 0:
        return float("nan"), float("nan")
    z = 1.96
    share = successes / count
    centre = (share + z * z / (2 * count)) / (1 + z * z / count)
    half = z * np.sqrt(share * (1 - share) / count + z * z / (4 * count * count)) \
        / (1 + z * z / count)
    return max(0.0, centre - half), min(1.0, centre + half)


def plot(rows: Iterable[dict[str, Any]], path: str | Path, *, title: str | None = None
         ) -> Path:
    """The error-versus-m figure (PNG), one column per network.

    Top: mean relative error with 95 % error bars (mean +- 1.96 standard errors), linear
    scale as in the CSGM paper's Figure 1. Bottom: the share of instances recovered to a
    relative error below 1e-3, with 95 % Wilson intervals (the errors span 16 orders of
    magnitude, which a mean alone hides).
    """
    plt = pyplot()
    table = summarise(rows)
    if not table:
        raise InputError("rows is empty: nothing to plot")
    networks = list(dict.fromkeys(row["network"] for row in table))
    fig, axes = plt.subplots(2, len(networks), figsize=(6.0 * len(networks), 7.6),
                             squeeze=False, sharex="col")
    markers = {"pgd": "o", "pgd-plain": "s", "pgd-pattern": "D", "pattern": "v", "gd": "^",
               "lstsq": "x"}
    for column, network in enumerate(networks):
        top, bottom = axes[0][column], axes[1][column]
        mine = [row for row in table if row["network"] == network]
        for method in dict.fromkeys(row["method"] for row in mine):
            points = sorted((row for row in mine if row["method"] == method),
                            key=lambda row: row["m"])
            m = np.array([row["m"] for row in points])
            mean = np.array([row["mean"] for row in points])
            half = np.nan_to_num(np.array([row["ci95"] for row in points]))
            style = {"marker": markers.get(method, "."), "capsize": 3,
                     "label": METHOD_LABELS.get(method, method)}
            top.errorbar(m, mean, yerr=[np.minimum(half, mean), half], **style)
            shares = np.array([row["success"] for row in points])
            bounds = np.array([wilson_interval(round(row["success"] * row["count"]),
                                               row["count"]) for row in points])
            bottom.errorbar(m, shares, yerr=[shares - bounds[:, 0], bounds[:, 1] - shares],
                            **style)
        count = mine[0]["count"]
        top.set_title(f"{NETWORK_LABELS.get(network, network)} ({count} instances)",
                      fontsize=10)
        top.set_ylabel(r"mean relative error $\|\hat x - x\|_2 / \|x\|_2$")
        top.set_ylim(bottom=0.0)
        bottom.set_ylabel(f"share with relative error < {SUCCESS:g}")
        bottom.set_ylim(-0.05, 1.05)
        bottom.set_xlabel("number of measurements m")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.grid(True, which="both", alpha=0.3)
        top.legend(fontsize=8)
    fig.suptitle(title or "Compressed sensing, y = A G(z*), A with N(0, 1/m) entries: "
                          "95 % error bars", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


# ------------------------------------------------------------------------------ the experiment
# The registry's interface (see `layerinv.reproduction.registry`): one trial = one
# (network, m, method, instance). Instance i of a network runs `run([network], ms=[m],
# methods=[method], instances=1, seed=s_i)` with s_i = SeedSequence([seed, j, i])
# .generate_state(1)[0] (j = 0 mnist, 1 random): the same latent (and random net) for every
# m and method, so the curves are paired.
NAME = "sensing"
TITLE = "Compressed sensing with a generative prior (extension)"
TIMING_FIELDS = ("seconds",)
QUICK_MS = (20, 50, 200)
QUICK_METHODS = ("pgd", "pgd-pattern", "pattern", "gd", "lstsq")
TRIALS = 10
QUICK_TRIALS = 2
SEED = 0
DESCRIPTION = (
    "y = A G(z*), A Gaussian (m x n, N(0, 1/m) entries), no noise; relative error "
    "||x_hat - x|| / ||x|| against m for projected gradient descent with the l_inf LP as "
    "projection (with and without its Gauss-Newton polish), the same with the pattern "
    "method's l2 fit as projection, the pattern method itself (the whole network fitted to y "
    "on activation regions), gradient descent on the latent (CSGM) and the prior-free least "
    "squares A^+ y. Networks: the MNIST generator and a "
    "random 20 x 100 x 500 ReLU net (a fresh one per instance).")
PAPER = (
    "Not an experiment of Lei et al. (2019), which motivates the inversion as the projection "
    "step of projected gradient descent (Shah and Hegde 2018); the setting is that of CSGM "
    "(Bora et al. 2017, Figure 1).")


def grid(quick: bool, trials: int | None) -> list[dict[str, Any]]:
    count = trials if trials is not None else (QUICK_TRIALS if quick else TRIALS)
    ms = QUICK_MS if quick else DEFAULT_MS
    methods = QUICK_METHODS if quick else METHODS
    return [{"network": net, "m": int(m), "method": method, "noise": 0.0, "instance": i,
             "seed": SEED}
            for net in NETWORKS for m in ms for i in range(count) for method in methods]


def cost(params: dict[str, Any]) -> float:
    if params["method"] in ("pgd", "pgd-plain", "pgd-pattern") and int(params["m"]) <= 30:
        return 10.0  # measured 8-23 s per instance at m = 20 (m <= k: PGD does not settle)
    return {"gd": 1.5, "pgd-plain": 3.0, "pgd": 0.5, "pgd-pattern": 1.0,
            "pattern": 0.1}.get(params["method"], 0.05)


def shared(quick: bool) -> dict[str, Any]:
    """The MNIST generator, loaded once per run and sent once to each worker."""
    from layerinv.pretrained import mnist_generator

    return {"mnist": mnist_generator("relu")}


def run_trial(params: dict[str, Any], shared_objects: Any = None) -> dict[str, Any]:
    from layerinv._blas import one_torch_thread

    network = params["network"]
    j = NETWORKS.index(network)
    seed = int(np.random.SeedSequence([int(params["seed"]), j, int(params["instance"])])
               .generate_state(1)[0])
    if network == "mnist":
        net = (shared_objects or {}).get("mnist") or shared(True)["mnist"]
        networks: Any = {"mnist": net}
    else:
        networks = [network]
    with one_torch_thread():
        rows = run(networks, ms=[int(params["m"])], methods=[params["method"]], instances=1,
                   seed=seed, noise=float(params["noise"]), progress=False)
    metrics = {k: v for k, v in rows[0].items() if k not in params}
    metrics["instance_seed"] = seed
    return metrics


def summary(rows: list[dict[str, Any]]) -> str:
    table = format_markdown(summarise(rows))
    points = dict.fromkeys((r["network"], int(r["m"])) for r in rows)
    for network, m in sorted(points, key=lambda p: (p[0], p[1])):
        if not any(r["network"] == network and int(r["m"]) == m and r["method"] == "gd"
                   for r in rows):  # gradient descent with no rows says why
            table += f"\n| {network} | {m} | gd | 0 | {not_run()} |  |  |  |  |"
    return table


def figures(rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    if not rows:
        return []
    return [plot(rows, Path(out_dir) / "sensing.png")]


def verdict(rows: list[dict[str, Any]]) -> str:
    table = summarise(rows)
    parts = []
    for network in NETWORKS:
        mine = [r for r in table if r["network"] == network]
        clauses = []
        for method, label in (("pgd", "LP-PGD"), ("pgd-pattern", "PGD with the pattern "
                              "projection"), ("pattern", "the pattern method"),
                              ("gd", "gradient descent")):
            rows_m = [r for r in mine if r["method"] == method]
            if not rows_m:
                if method == "gd" and mine:
                    clauses.append(f"gradient descent: {not_run()}")
                continue
            good = sorted(r["m"] for r in rows_m if r["median"] < SUCCESS)
            clauses.append(f"from m = {good[0]} for {label}" if good else
                           f"at none of m = {', '.join(str(r['m']) for r in rows_m)} for "
                           f"{label}")
        if clauses:
            parts.append(f"on the {network} net the median error is below {SUCCESS:g} "
                         + ", ".join(clauses))
    if not parts:
        return "No sensing rows recorded yet."
    exact = [r for r in table if r["method"] == "pgd" and r["median"] < 1e-10]
    gd_there = [r for r in table if r["method"] == "gd" and r["median"] > 1e-6
                and any(e["network"] == r["network"] and e["m"] == r["m"] for e in exact)]
    why = ""
    if gd_there:
        low = min(r["median"] for r in gd_there)
        high = max(r["median"] for r in gd_there)
        why = (f"; at {len(gd_there)} (network, m) points LP-PGD's median error is below "
               f"1e-10 where gradient descent's is {low:.1e} to {high:.1e}")
    n_min = min(r["count"] for r in table)
    caveat = f" ({n_min} instances per point: indicative only)" if n_min < 20 else ""
    return "Beyond the paper (no figure to match): " + "; ".join(parts) + why + caveat + "."
