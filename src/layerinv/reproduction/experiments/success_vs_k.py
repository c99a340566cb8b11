"""Success rate against the latent size k (Lei et al. 2019, Figure 2).

Nets k x 250 x 600 with N(0, 1/n_out) weights and no bias, ReLU or LeakyReLU(0.1) on both
layers, k = 10, 20, ..., 250. Each trial draws its own net, z* ~ N(0, I) and uniform noise in
[-1e-9, 1e-9] per entry (so that the LPs are exercised: on exactly realizable data `linf` and
`l1` can finish by least squares), then inverts with one method:

- 'linf', 'l1': `layerinv.invert(net, x, method)` (eq. 5 and eq. 6, layer by layer);
- 'gd': gradient descent on the latent, preset 'bora2017' (Adam, lr 0.01, 1,000 steps,
  10 restarts, restart seed = the trial's instance), on one PyTorch thread. The trials of one
  (activation, k) run BATCH_SIZE at a time in one tensor (`run_batch`: each trial keeps its
  own net, the forward is a torch.bmm over the stacked weights), which gives every trial the
  same numbers as running it alone (tested bitwise); its `seconds` is then the batch's
  gradient-descent wall time divided by the batch size.

**Success** = relative latent error ||z_hat - z*||_2 / ||z*||_2 < 1e-3, the paper's criterion,
whatever the method's own status says (the status and the library's `success` are stored too).

Instance i of (activation, k) draws everything from numpy.random.default_rng([seed, a, k, i, p])
(a = 1 for ReLU, 2 for LeakyReLU; p = 1 net, 2 latent, 3 noise; no zeros at the end, which
numpy would drop), so the three methods see the same instance, and a trial's row depends on its
parameters only. Timing metric: `seconds`.

Identifiability: a zero-bias ReLU layer of width 250 has about Binomial(250, 1/2) active units;
fewer active units than k unknowns leaves the pre-image not unique, so no method can succeed
more often than P(Binomial(250, 1/2) >= k) on the ReLU nets. LeakyReLU has no such limit.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

NAME = "success-vs-k"
TITLE = "Success rate against the latent size k (paper Figure 2)"
HIDDEN, OUTPUT = 250, 600
K_VALUES = tuple(range(10, 251, 10))
K_QUICK = (10, 50, 90, 130, 170, 210, 250)
ACTIVATIONS = ("relu", "leaky_relu")
LEAKY_SLOPE = 0.1
METHODS = ("linf", "l1", "gd")
NOISE = 1e-9
SUCCESS = 1e-3
TRIALS = 200
QUICK_TRIALS = 2
SEED = 0
TIMING_FIELDS = ("seconds",)
PAPER_LP_PERFECT_K = 100
PAPER_GD_ZERO_K = 80
METHOD_LABELS = {"linf": r"$\ell_\infty$ LP", "l1": r"$\ell_1$ LP",
                 "gd": "gradient descent (Adam, 10 restarts)"}
ACTIVATION_LABELS = {"relu": "ReLU", "leaky_relu": f"LeakyReLU({LEAKY_SLOPE:g})"}

DESCRIPTION = (
    f"Random k x {HIDDEN} x {OUTPUT} nets (N(0, 1/n) weights, no bias), ReLU and "
    f"LeakyReLU({LEAKY_SLOPE:g}); x = G(z*) + uniform noise in [-{NOISE:g}, {NOISE:g}]; each "
    "trial draws its own net and latent. Methods: the l_inf LP (eq. 5), the l_1 LP (eq. 6) and "
    "gradient descent (preset bora2017: Adam, lr 0.01, 1,000 steps, 10 restarts). **Success = "
    f"relative latent error ||z_hat - z*|| / ||z*|| < {SUCCESS:g}**. The dashed curve is the "
    f"identifiability limit of the ReLU nets, P(Binomial({HIDDEN}, 1/2) >= k): below it too few "
    "units are active to pin z.")
PAPER = (
    f"Figure 2 (ReLU, k x {HIDDEN} x {OUTPUT}, noise 1e-9): the LP succeeds in every trial up "
    f"to k about {PAPER_LP_PERFECT_K}; gradient descent's success falls to 0 by "
    f"k = {PAPER_GD_ZERO_K}. 200 trials per k.")


# ----------------------------------------------------------------------------- the grid
def grid(quick: bool, trials: int | None) -> list[dict[str, Any]]:
    ks = K_QUICK if quick else K_VALUES
    count = trials if trials is not None else (QUICK_TRIALS if quick else TRIALS)
    return [{"activation": act, "k": k, "hidden": HIDDEN, "output": OUTPUT, "noise": NOISE,
             "method": method, "instance": i, "seed": SEED}
            for act in ACTIVATIONS for k in ks for i in range(count) for method in METHODS]


BATCH_SIZE = 10
"""Gradient-descent trials per batch (see `run_batch`)."""


def cost(params: dict[str, Any]) -> float:
    """Estimated seconds of one trial (for chunking); a gd trial as part of a batch."""
    return 0.4 if params["method"] == "gd" else 0.05


def batch_key(params: dict[str, Any]) -> tuple | None:
    """Gradient-descent trials that differ only in their instance run as one batch."""
    if params["method"] != "gd":
        return None
    return tuple(sorted((k, v) for k, v in params.items() if k != "instance"))


def instance(params: dict[str, Any]) -> tuple[Any, np.ndarray, np.ndarray]:
    """(net, z*, x) of a trial; the same for every method."""
    from layerinv.activations import LeakyReLU, ReLU
    from layerinv.network import random_network

    act = params["activation"]
    k, hidden, output = int(params["k"]), int(params["hidden"]), int(params["output"])
    a = ACTIVATIONS.index(act)
    # Parts 1, 2, 3 (never 0): numpy drops trailing zeros of a seed list, so [s, ..., 0]
    # would be the same stream as [s, ...].
    net_rng, z_rng, noise_rng = (
        np.random.default_rng([params["seed"], a + 1, k, params["instance"], part])
        for part in (1, 2, 3))
    activation = ReLU() if act == "relu" else LeakyReLU(LEAKY_SLOPE)
    net = random_network([k, hidden, output], activation, seed=net_rng)
    z = z_rng.standard_normal(k)
    noise = float(params["noise"])
    x = net.forward(z) + noise_rng.uniform(-noise, noise, size=output)
    return net, z, x


def run_trial(params: dict[str, Any], shared: Any = None) -> dict[str, Any]:
    if params["method"] == "gd":
        return run_batch([params], shared)[0]  # the batch code path, so a row never
    net, z, x = instance(params)              # depends on whether it ran in a batch
    return invert_and_measure(net, z, x, params["method"], int(params["instance"]))


def run_batch(batch: list[dict[str, Any]], shared: Any = None) -> list[dict[str, Any]]:
    """Gradient-descent trials of one cell in one call: every trial's own net and x, all
    restarts of all trials in one tensor (`gradient_descent` on a list of networks)."""
    from layerinv._blas import one_torch_thread
    from layerinv._gradient import gradient_descent
    from layerinv.errors import InputError

    if any(p["method"] != "gd" for p in batch):
        raise InputError("run_batch takes gradient-descent ('gd') trials only")
    nets, zs, xs = zip(*(instance(p) for p in batch), strict=True)
    warm_up("gd")
    with one_torch_thread():
        started = time.perf_counter()
        result = gradient_descent(list(nets), np.stack(xs),
                                  seed=[int(p["instance"]) for p in batch], progress=False)
        seconds = (time.perf_counter() - started) / len(batch)
    return [_measure(z, result.z[b], str(result.status[b]), bool(result.success[b]),
                     float(result.residual[b]), seconds) for b, z in enumerate(zs)]


def invert_and_measure(net: Any, z: np.ndarray, x: np.ndarray, method: str,
                       gd_seed: int) -> dict[str, Any]:
    """One `invert` call, timed (imports and first-call costs kept out), and its errors."""
    from layerinv._walk import invert

    warm_up(method)
    if method in ("gd", "lp+gd"):
        from layerinv._blas import one_torch_thread

        with one_torch_thread():
            started = time.perf_counter()
            result = invert(net, x, method, progress=False, seed=gd_seed, joint=False)
            seconds = time.perf_counter() - started
    else:
        started = time.perf_counter()
        # joint=False: the paper's layer-wise pipeline alone (Figure 2 measures its limit).
        result = invert(net, x, method, progress=False, joint=False)
        seconds = time.perf_counter() - started
    return _measure(z, result.z, str(result.status), bool(result.success),
                    float(result.residual), seconds)


def _measure(z: np.ndarray, z_hat: np.ndarray, status: str, library_success: bool,
             residual: float, seconds: float) -> dict[str, Any]:
    z_hat = np.asarray(z_hat, dtype=np.float64)
    rel_error = float(np.linalg.norm(z_hat - z) / np.linalg.norm(z))
    return {"rel_error": rel_error,
            "linf_error": float(np.max(np.abs(z_hat - z))),
            "success": bool(rel_error < SUCCESS),
            "status": status,
            "library_success": library_success,
            "residual": residual,
            "seconds": seconds}


_WARM: set[str] = set()


def warm_up(method: str) -> None:
    """Once per process and method: a tiny untimed inversion (imports, HiGHS, PyTorch)."""
    if method in _WARM:
        return
    from layerinv._walk import invert
    from layerinv.network import random_network

    net = random_network([4, 12, 30], seed=0)
    x = net.forward(np.ones(4))
    if method in ("gd", "lp+gd"):
        from layerinv._blas import one_torch_thread

        with one_torch_thread():
            invert(net, x, method, progress=False, steps=3, restarts=1)
    else:
        invert(net, x, method, progress=False)
    _WARM.add(method)


# ----------------------------------------------------------------------------- analysis
def identifiability_limit(k: np.ndarray | int, width: int = HIDDEN) -> np.ndarray:
    """P(Binomial(width, 1/2) >= k): the most any method can succeed on ReLU nets."""
    from scipy.stats import binom

    return binom.sf(np.asarray(k) - 1, width, 0.5)


def rates(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, tuple[float, int]]]:
    """(activation, method) -> k -> (success rate, trials)."""
    groups: dict[tuple[str, str, int], list[bool]] = {}
    for row in rows:
        groups.setdefault((row["activation"], row["method"], int(row["k"])), []).append(
            bool(row["success"]))
    out: dict[tuple[str, str], dict[int, tuple[float, int]]] = {}
    for (act, method, k), hits in sorted(groups.items()):
        out.setdefault((act, method), {})[k] = (float(np.mean(hits)), len(hits))
    return out


def summary(rows: list[dict[str, Any]]) -> str:
    from layerinv.reproduction.report import markdown_table, not_run

    table = rates(rows)
    seconds: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        seconds.setdefault((row["activation"], row["method"]), []).append(row["seconds"])
    lines = []
    for act in ACTIVATIONS:
        ks = sorted({k for (a, _), per_k in table.items() if a == act for k in per_k})
        if not ks:
            continue
        # Every method has its column: one with no rows says why ("not run: ...").
        methods = [m for m in METHODS if (act, m) in table or m == "gd"]
        header = ["activation", "k", "trials", *(f"success {m}" for m in methods)]
        if act == "relu":
            header.append("limit P(Bin(250,1/2) >= k)")
        body = []
        for k in ks:
            n = max(table.get((act, m), {}).get(k, (0.0, 0))[1] for m in methods)
            cells = [ACTIVATION_LABELS[act], str(k), str(n)]
            for m in methods:
                rate = table.get((act, m), {}).get(k)
                cells.append(f"{rate[0]:.2f}" if rate is not None else
                             "" if (act, m) in table else not_run())
            if act == "relu":
                cells.append(f"{float(identifiability_limit(k)):.2f}")
            body.append(cells)
        lines.append(markdown_table(header, body))
        med = ", ".join(f"{m} {np.median(seconds[(act, m)]):.3f} s" if (act, m) in seconds
                        else f"{m} {not_run()}" for m in methods)
        lines.append(f"\nMedian seconds per inversion ({ACTIVATION_LABELS[act]}): {med}.\n")
    sizes = sorted({int(r["_batch"]) for r in rows if (r.get("_batch") or 1) > 1})
    if sizes:
        lines.append(f"Gradient-descent trials ran in batches of {'/'.join(map(str, sizes))} "
                     f"in one tensor: their seconds are the batch's wall time / its size.")
    return "\n".join(lines).strip()


def figures(rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    from layerinv.reproduction.report import pyplot, save_figure

    plt = pyplot()
    table = rates(rows)
    acts = [a for a in ACTIVATIONS if any(key[0] == a for key in table)]
    if not acts:
        return []
    fig, axes = plt.subplots(1, len(acts), figsize=(6.0 * len(acts), 4.4), squeeze=False)
    markers = {"linf": "o", "l1": "s", "gd": "^"}
    for ax, act in zip(axes[0], acts, strict=True):
        n_max = 0
        for method in METHODS:
            per_k = table.get((act, method))
            if not per_k:
                continue
            ks = np.array(sorted(per_k))
            p = np.array([per_k[k][0] for k in ks])
            n = np.array([per_k[k][1] for k in ks])
            n_max = max(n_max, int(n.max()))
            half = 1.96 * np.sqrt(p * (1 - p) / n)
            line = ax.plot(ks, p, marker=markers[method], label=METHOD_LABELS[method])[0]
            ax.fill_between(ks, np.clip(p - half, 0, 1), np.clip(p + half, 0, 1),
                            color=line.get_color(), alpha=0.12, linewidth=0)
        if act == "relu":
            grid_k = np.arange(1, HIDDEN + 1)
            ax.plot(grid_k, identifiability_limit(grid_k), "k--", linewidth=1,
                    label=f"limit P(Bin({HIDDEN}, 1/2) >= k)")
        ax.set_xlim(0, HIDDEN + 5)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("latent size k")
        ax.set_ylabel(f"success rate (rel. error < {SUCCESS:g})")
        ax.set_title(f"{ACTIVATION_LABELS[act]}, k x {HIDDEN} x {OUTPUT}, up to {n_max} "
                     f"trials per k", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return [save_figure(fig, Path(out_dir) / "success_vs_k.png")]


def consistent_with_limit(rate: float, n: int, k: int, level: float = 0.99) -> bool:
    """Whether n trials at success `rate` fit Binomial(n, limit(k)) (central `level` interval)."""
    from scipy.stats import binom

    p = float(identifiability_limit(k))
    hits = round(rate * n)
    low, high = binom.interval(level, n, p)
    return bool(low <= hits <= high)


def verdict(rows: list[dict[str, Any]]) -> str:
    table = rates(rows)
    lp = table.get(("relu", "linf"))
    if not lp:
        return "No ReLU l_inf trials recorded yet, so there is nothing to compare with Figure 2."
    ks = sorted(lp)
    n_min = min(n for _, n in lp.values())
    last_perfect = None
    for k in ks:
        if lp[k][0] < 1.0:
            break
        last_perfect = k
    fits = [k for k in ks if consistent_with_limit(lp[k][0], lp[k][1], k)]
    misses = [k for k in ks if k not in fits]
    if last_perfect is None:
        lead = f"the l_inf LP already fails at k = {ks[0]} (success {lp[ks[0]][0]:.2f})"
    else:
        lead = f"the l_inf LP succeeds in every trial up to k = {last_perfect}"
    lead += f" (paper: up to k about {PAPER_LP_PERFECT_K})"
    limit = (f"its success rate is consistent with the identifiability limit "
             f"P(Bin({HIDDEN}, 1/2) >= k) at {len(fits)} of {len(ks)} k values (99 % binomial "
             f"interval)")
    if misses:
        limit += f", not at k = {', '.join(map(str, misses))}"
    from layerinv.reproduction.report import not_run

    gd = table.get(("relu", "gd"))
    gd_text = f"; gradient descent: {not_run()}"
    if gd:
        zero = [k for k in sorted(gd) if gd[k][0] == 0.0]
        gd_text = (f"; gradient descent first reaches 0 at k = {zero[0]}" if zero
                   else f"; gradient descent never reaches 0 (lowest rate "
                        f"{min(r for r, _ in gd.values()):.2f})")
        gd_text += f" (paper: by k = {PAPER_GD_ZERO_K})"
    leaky = table.get(("leaky_relu", "linf"))
    leaky_text = ""
    if leaky:
        worst = min(leaky, key=lambda k: leaky[k][0])
        leaky_text = (f"; on LeakyReLU nets, which have no such limit, the l_inf LP's lowest "
                      f"success rate is {leaky[worst][0]:.2f} (k = {worst})")
    if not misses:
        word = "match"
        why = "it fails only where too few units are active for any method to succeed"
    elif len(misses) <= max(1, len(ks) // 10):
        word = "nearly match"
        why = "the LP misses the limit at a few k only"
    else:
        word = "fall short of"
        below = [k for k in misses if lp[k][0] < float(identifiability_limit(k))]
        why = (f"the LP succeeds less often than the limit allows at k = "
               f"{', '.join(map(str, below))}" if below else
               "the LP's rates sit above the limit's interval, more often than sampling "
               "explains")
    caveat = f" ({n_min} trials per point: indicative only)" if n_min < 20 else ""
    return (f"We {word} Figure 2: {lead}, and {limit}, so {why}{gd_text}{leaky_text}"
            f"{caveat}.")
