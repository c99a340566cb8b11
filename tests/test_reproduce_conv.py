"""`layerinv reproduce conv`: the shipped convolutional generator's experiments (issue 14)."""

from __future__ import annotations

import numpy as np
import pytest

from layerinv.reproduction.experiments import conv, mnist, sensing
from layerinv.reproduction.store import to_jsonable

pytest.importorskip("torch")


def without_timing(metrics: dict) -> dict:
    return {k: v for k, v in to_jsonable(metrics).items() if k != "seconds"}


def test_grid_sets_pattern_and_gd_on_one_prior_beside_linf():
    for quick in (True, False):
        cells: dict[tuple, list] = {}
        for p in conv.grid(quick, None):
            if p["task"] == conv.SENSING:
                cells.setdefault(("sensing", p["m"], p["instance"]), []).append(p["method"])
                continue
            assert p["generator"] == "conv"
            cells.setdefault((p["task"], p["source"], p["instance"]), []).append(
                (p["method"], p["prior"]))
        for (task, *_), methods in cells.items():
            if task == "sensing":
                assert methods == list(conv.SENSING_METHODS)
                continue
            prior = mnist.prior_for(0.3) if task == "denoise" else 0.0
            assert methods == [("linf", 0.0), ("pattern", prior), ("gd", prior)], task
        tasks = {key[0] for key in cells}
        assert tasks == {*conv.IMAGE_TASKS, "sensing"}
    full = conv.grid(False, None)
    assert {p["keep"] for p in full if p["task"] == "inpaint-random"} == {0.5}
    assert {p["m"] for p in full if p["task"] == conv.SENSING} == set(conv.SENSING_MS)
    assert {p["source"] for p in full if p["task"] != conv.SENSING} == set(mnist.SOURCES)


def test_an_image_trial_is_the_mnist_experiments_instance_on_the_conv_decoder():
    """A trial's row is instance i of `mnist.make_instances` on the conv decoder: the pattern
    method recovers the realizable z* (and the row says so) and a denoising trial sees the
    paper's noise, its objective the MAP one."""
    realizable, denoise = ({"task": task, "generator": "conv", "source": "gaussian",
                            "noise_variance": conv._variance(task), "method": "pattern",
                            "prior": mnist.prior_for(conv._variance(task)), "instance": 1,
                            "seed": conv.SEED} for task in ("realizable", "denoise"))
    row = conv.run_trial(realizable)
    assert row["status"] == "optimal" and row["latent_error"] < 1e-9
    assert row["observed_pixels"] == 784 and row["objective"] < 1e-20
    net, encoder, _, _ = mnist.models("conv")
    instance = mnist.make_instances(net, encoder, 2, variance=0.3, seed=conv.SEED)[1]
    noisy = conv.run_trial(denoise)
    image = np.asarray(noisy["image"])  # G(z_hat), rounded to 1e-5
    assert image.shape == (784,)
    assert noisy["psnr"] == pytest.approx(mnist.psnr(image, instance.clean), abs=1e-3)
    fit = float(np.mean((image - instance.observation) ** 2))  # the fit, prior aside
    assert fit - 1e-4 <= noisy["objective"] <= fit + 0.05 and 0.2 < fit < 0.4  # noise 0.3


def test_a_gd_batch_gives_each_trial_the_metrics_it_gets_alone():
    mine = [p for p in conv.grid(True, 3) if p["task"] == "inpaint-random"
            and p["method"] == "gd"]
    assert len(mine) == 3 and conv.batch_key(mine[0]) == conv.batch_key(mine[2])
    batch = conv.run_batch(mine)
    assert without_timing(batch[2]) == without_timing(conv.run_trial(mine[2]))
    assert without_timing(conv.run_batch([mine[1], mine[0]])[1]) == without_timing(batch[0])


def test_a_sensing_trial_is_a_tagged_one_instance_sensing_run():
    params = {"task": "sensing", "generator": "conv", "m": 50, "method": "pattern",
              "noise": 0.0, "instance": 0, "seed": conv.SEED}
    assert conv.batch_key(params) is None
    row = conv.run_trial(params)
    seed = int(np.random.SeedSequence([conv.SEED, conv.SENSING_TAG, 0]).generate_state(1)[0])
    assert row["instance_seed"] == seed and row["network"] == "conv" and row["n"] == 784
    direct = sensing.run({"conv": mnist.models("conv")[0]}, ms=[50], methods=["pattern"],
                         instances=1, seed=seed, progress=False)[0]
    assert row["rel_error"] == direct["rel_error"] < 1e-9
    other = conv.run_trial({**params, "instance": 1})
    assert other["instance_seed"] != seed and other["rel_error"] != row["rel_error"]


def rows_for(task: str, shares: dict[str, float], n: int = 20, **extra) -> list[dict]:
    """Synthetic image rows: per method, the first share x n instances recovered."""
    out = []
    for method, share in shares.items():
        for i in range(n):
            out.append({"task": task, "generator": "conv", "source": "gaussian",
                        "noise_variance": 0.0, "method": method, "prior": 0.0, "instance": i,
                        "latent_error": 1e-12 if i < share * n else 0.5, "psnr": 30.0,
                        "objective": 0.1, "seconds": 1.0, **extra})
    return out


def denoise_rows(psnr: tuple[float, float], seconds: tuple[float, float],
                 objective: tuple[float, float]) -> list[dict]:
    out = []
    for method, p, s, f in zip(("pattern", "gd"), psnr, seconds, objective, strict=True):
        out += [{"task": "denoise", "generator": "conv", "source": "gaussian",
                 "noise_variance": 0.3, "method": method, "prior": mnist.prior_for(0.3),
                 "instance": i, "latent_error": 0.6, "psnr": p + 0.01 * i,
                 "objective": f + 0.001 * i, "seconds": s} for i in range(20)]
    return out


def test_verdict_says_met_or_missed_from_the_rows():
    met = conv.verdict(rows_for("realizable", {"linf": 0.5, "pattern": 0.95, "gd": 0.0}))
    assert "realizable (z* gaussian) recovered to 1e-6: linf 50%, pattern 95%, gd 0% " \
           "(target >= 95%: met)" in met
    missed = conv.verdict(rows_for("inpaint-random", {"pattern": 0.85}))
    assert "pattern 85% (target >= 90%: missed)" in missed
    block = conv.verdict(rows_for("inpaint-block", {"pattern": 1.0}))
    assert "inpaint-block (z* gaussian) recovered to 1e-6: pattern 100%." in block
    assert "target >=" not in block  # no target on blocks
    fast = conv.verdict(denoise_rows((24.0, 23.9), (0.1, 2.0), (0.30, 0.31)))
    assert "median PSNR pattern 24.09 dB, gd 23.99 dB, pattern's objective no higher on 20 " \
           "of 20, 20.0x less time (target PSNR >= gd's at >= 10x: met)" in fast
    slow = conv.verdict(denoise_rows((24.0, 23.9), (0.5, 2.0), (0.32, 0.31)))
    assert "no higher on 0 of 20, 4.0x less time" in slow and "10x: missed" in slow
    worse = conv.verdict(denoise_rows((23.0, 23.9), (0.1, 2.0), (0.30, 0.31)))
    assert "10x: missed" in worse
    few = conv.verdict(rows_for("realizable", {"pattern": 1.0}, n=2))
    assert "(2 instances per setting: indicative only)" in few


def test_summary_and_figures_from_rows(tmp_path):
    params = [p for p in conv.grid(True, 1) if p["method"] in ("pattern", "gd")
              and p["task"] in ("realizable", conv.SENSING)]
    rows = [{**p, **conv.run_batch([p])[0]} for p in params]
    table = conv.summary(rows)
    assert "| conv | realizable | gaussian | 0 | pattern | 1 |" in table
    assert "| conv | 20 | pattern | 1 |" in table and "| conv | 50 | gd | 1 |" in table
    assert "lp+gd" not in table.split("The objective")[0]  # no rows for methods not run
    paths = conv.figures(rows, tmp_path)
    assert sorted(p.name for p in paths) == ["mnist_conv_realizable_gaussian.png",
                                             "sensing_conv.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    verdict = conv.verdict(rows)
    assert "sensing, pattern: median error < 0.001" in verdict
