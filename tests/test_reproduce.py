"""`layerinv reproduce` / `layerinv report`: rows, resuming after a kill, Dask, the report."""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

import pytest
from conftest import count_rows
from conftest import source_env as env

from layerinv.cli import main as cli_main
from layerinv.cli.reproduce import add_parsers
from layerinv.errors import InputError
from layerinv.reproduction import registry
from layerinv.reproduction.experiments import mnist, noise, sensing, success_vs_k, timing
from layerinv.reproduction.registry import EXPERIMENTS, available, load_experiment, timing_fields
from layerinv.reproduction.run import execute_trial, run_experiments
from layerinv.reproduction.store import (
    ResultsFileError,
    ResultsStore,
    comparable,
    json_equal,
    to_jsonable,
    trial_key,
)

ROOT = Path(__file__).resolve().parents[1]
NOISE_TRIALS = 2
NOISE_TOTAL = len(noise.grid(True, NOISE_TRIALS))  # its shape: test_registry_grids_...


def stored(path) -> dict:
    with ResultsStore(path, create=False) as store:
        return comparable(store.rows(), {name: timing_fields(name) for name in EXPERIMENTS})


def assert_same_rows(a, b) -> None:
    rows_a, rows_b = stored(a), stored(b)
    assert rows_a.keys() == rows_b.keys()
    different = [key for key in rows_a if not json_equal(rows_a[key], rows_b[key])]
    assert not different, f"{len(different)} rows differ, first {different[0]}"




def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "layerinv", *args]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted in-process quick run of `noise` (2 trials per point) and its report."""
    base = tmp_path_factory.mktemp("reference")
    out = io.StringIO()
    result = run_experiments(["noise"], quick=True, trials=NOISE_TRIALS, workers=1,
                             db=base / "ref.sqlite", out=base / "report", stream=out)
    return base, result, out.getvalue()


# ------------------------------------------------------------------------------ a quick run
def test_quick_run_writes_rows_report_and_figures(reference):
    base, result, text = reference
    assert result.exit_code == 0 and not result.failed
    assert result.planned == result.computed == NOISE_TOTAL
    with ResultsStore(base / "ref.sqlite", create=False) as store:
        rows = store.rows("noise")
        assert len(rows) == NOISE_TOTAL
        row = rows[0]
        assert {"rel_error", "linf_error", "eps", "status", "seconds"} <= set(row.metrics)
        assert row.method in noise.METHODS and row.seed == noise.SEED and row.seconds > 0
        assert {r.method for r in rows} == {"linf", "l1", "pattern"}
        assert row.versions["numpy"] and row.versions["layerinv"]
        assert row.versions["scheduler"] == "local"
    report = base / "report" / "REPORT.md"
    markdown = report.read_text()
    assert "Recovery error against noise" in markdown and "**Paper.**" in markdown
    assert "**Verdict.** We " in markdown and "Machine and versions" in markdown
    assert "| pattern |" in markdown and "The pattern method (l2 fit" in markdown
    figures = sorted((base / "report" / "figures").glob("*.png"))
    assert [f.name for f in figures] == ["noise_linf_theorem.png", "noise_relative_error.png"]
    for figure in figures:
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](figures/{figure.name})" in markdown
    page = (base / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page
    assert "src=\"figures/" not in page  # self-contained
    embedded = page.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(embedded)[:4] == b"\x89PNG"
    assert "== noise" in text and "| network | noise |" in text


def test_rerun_of_a_complete_file_computes_nothing_and_report_rerenders(reference, tmp_path):
    base, _, _ = reference
    out = io.StringIO()
    started = time.perf_counter()
    again = run_experiments(["noise"], quick=True, trials=NOISE_TRIALS, workers=1,
                            db=base / "ref.sqlite", out=tmp_path / "again", stream=out)
    assert again.computed == 0 and again.already_done == NOISE_TOTAL
    assert f"{NOISE_TOTAL} done, 0 to run" in out.getvalue()
    assert time.perf_counter() - started < 30
    # The quick grid with 1 trial per point is a subset: nothing to run either.
    fewer = run_experiments(["noise"], quick=True, trials=1, workers=1,
                            db=base / "ref.sqlite", out=None, stream=io.StringIO())
    assert fewer.computed == 0 and fewer.planned == NOISE_TOTAL // 2
    # `layerinv report` re-renders from the file alone.
    code = cli_main(["report", "--db", str(base / "ref.sqlite"), "--out", str(tmp_path / "r")])
    assert code == 0
    assert (tmp_path / "r" / "REPORT.md").read_text().count("![noise") == 2
    assert (tmp_path / "r" / "report.html").exists()


# ------------------------------------------------------------------------------ kill, resume
def marked_processes(mark: str) -> list[int]:
    """Live processes whose environment holds `mark` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if mark.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_run_resumes_without_recomputing(reference, tmp_path, workers):
    base, _, _ = reference
    db = tmp_path / "killed.sqlite"
    args = ("reproduce", "noise", "--quick", "--trials", str(NOISE_TRIALS), "--workers",
            str(workers), "--db", str(db), "--out", str(tmp_path / "report"), "--no-progress")
    mark = f"LAYERINV_TEST_RUN={uuid.uuid4().hex}"
    # No pipes: workers that outlived the kill would hold them open.
    process = subprocess.Popen(cli(*args), env={**env(), mark.split("=")[0]: mark},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while count_rows(db) < 10 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    at_kill = count_rows(db)
    assert 10 <= at_kill < NOISE_TOTAL, f"{at_kill} rows at the kill: not in the middle"
    if Path("/proc/self/environ").exists():  # the pool's workers do not outlive the run
        deadline = time.monotonic() + 15
        while marked_processes(mark) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marked_processes(mark) == []
    with ResultsStore(db, create=False) as store:
        before = {row.trial_key: (row.seconds, row.finished_at) for row in store.rows()}

    finish = subprocess.run(cli(*args), env=env(), capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stdout + finish.stderr
    assert f"{len(before)} done, {NOISE_TOTAL - len(before)} to run" in finish.stdout
    with ResultsStore(db, create=False) as store:
        after = {row.trial_key: (row.seconds, row.finished_at) for row in store.rows()}
    assert len(after) == NOISE_TOTAL
    assert all(after[key] == value for key, value in before.items())  # not recomputed
    assert_same_rows(db, base / "ref.sqlite")

    complete = subprocess.run(cli(*args), env=env(), capture_output=True, text=True,
                              timeout=120)
    assert complete.returncode == 0
    assert f"{NOISE_TOTAL} done, 0 to run" in complete.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, workers):
    db = tmp_path / "interrupted.sqlite"
    args = ("reproduce", "noise", "--quick", "--trials", str(NOISE_TRIALS), "--workers",
            str(workers), "--db", str(db), "--out", str(tmp_path / "report"), "--no-progress")
    process = subprocess.Popen(cli(*args), env=env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while count_rows(db) < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    rows = count_rows(db)
    if process.returncode == 0:  # pragma: no cover - finished before the signal arrived
        pytest.skip("the run finished before Ctrl-C")
    assert process.returncode == 130, stdout + stderr
    assert f"{rows} of {NOISE_TOTAL} trials done; run again to resume" in stdout
    assert "Traceback" not in stderr
    assert 5 <= rows < NOISE_TOTAL


# ------------------------------------------------------------------------------ parallel
def test_local_processes_and_a_dask_cluster_give_the_same_rows(reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    base, _, _ = reference
    pool = run_experiments(["noise"], quick=True, trials=NOISE_TRIALS, workers=2,
                           db=tmp_path / "pool.sqlite", out=None, stream=io.StringIO())
    assert pool.computed == NOISE_TOTAL
    with ResultsStore(tmp_path / "pool.sqlite", create=False) as store:
        assert {row.versions["workers"] for row in store.rows()} == {2}
    assert_same_rows(tmp_path / "pool.sqlite", base / "ref.sqlite")

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        result = run_experiments(["noise"], quick=True, trials=NOISE_TRIALS,
                                 scheduler=cluster.scheduler_address,
                                 db=tmp_path / "dask.sqlite", out=None, stream=io.StringIO())
    assert result.computed == NOISE_TOTAL and not result.failed
    with ResultsStore(tmp_path / "dask.sqlite", create=False) as store:
        assert {row.versions["scheduler"] for row in store.rows()} == {"dask"}
    assert_same_rows(tmp_path / "dask.sqlite", base / "ref.sqlite")


# ------------------------------------------------------------------------------ bad files
def test_a_file_that_is_not_ours_is_refused_before_anything_runs(tmp_path, capsys):
    path = tmp_path / "precious.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER, balance REAL)")
    conn.execute("INSERT INTO accounts VALUES (1, 100.0)")
    conn.commit()
    conn.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ResultsFileError, match="not a layerinv results file"):
        run_experiments(["noise"], quick=True, trials=1, workers=1, db=path, out=None,
                        stream=io.StringIO())
    code = cli_main(["reproduce", "noise", "--quick", "--trials", "1", "--workers", "1",
                     "--db", str(path), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "not a layerinv results file" in capsys.readouterr().err
    code = cli_main(["report", "--db", str(path), "--out", str(tmp_path / "o")])
    assert code == 2
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ registry
def test_registry_grids_are_json_unique_and_quick_is_part_of_full():
    for name in EXPERIMENTS:
        experiment = load_experiment(name)
        quick = experiment.grid(True, None)
        full = {trial_key(p) for p in experiment.grid(False, None)}
        keys = [trial_key(p) for p in quick]
        assert len(keys) == len(set(keys)), name
        assert set(keys) <= full, f"{name}: the quick grid is not part of the full grid"
        assert all("method" in p and "seed" in p for p in quick), name
        assert "seconds" in experiment.TIMING_FIELDS
        for attribute in ("figures", "summary", "verdict", "run_trial", "TITLE", "PAPER"):
            assert getattr(experiment, attribute, None), (name, attribute)
    svk = success_vs_k.grid(False, None)
    assert len(svk) == 2 * 25 * 3 * 200
    assert {p["k"] for p in svk} == set(range(10, 251, 10))
    assert len(noise.grid(False, None)) == len(noise.NETWORKS) * len(noise.NOISES) * len(
        noise.LEVELS) * len(noise.METHODS) * noise.TRIALS == 2 * 2 * 6 * 3 * 200
    assert len(noise.grid(True, NOISE_TRIALS)) == 2 * 2 * 6 * 3 * NOISE_TRIALS
    assert {p["method"] for p in noise.grid(True, None)} == {"linf", "l1", "pattern"}
    assert {p["method"] for p in sensing.grid(True, None)} >= {"pgd-pattern", "pattern", "gd"}
    assert {p["method"] for p in sensing.grid(False, None)} == set(sensing.METHODS)
    # MNIST: each task's prior-0 methods, pattern with the MAP prior of the task's noise, and
    # gradient descent with that same prior where there is noise (the same loss and prior).
    for quick in (True, False):
        cells = {}
        for p in mnist.grid(quick, None):
            cells.setdefault((p["task"], p["generator"], p["source"], p["instance"]),
                             []).append((p["method"], p.get("prior", 0.0)))
        for (task, *_), methods in cells.items():
            prior = mnist.prior_for(0.3) if task == "denoise" else 0.0
            assert methods == [*((m, 0.0) for m in mnist.METHODS),
                               *((("gd", prior),) if prior else ()), ("pattern", prior)], task
    assert {p["net"] for p in timing.grid(True, 1)} == {*(f"k={k}" for k in timing.K_VALUES),
                                                         "mnist"}
    with pytest.raises(InputError, match="experiment must be one of"):
        run_experiments(["nope"], db=":memory:", out=None, stream=io.StringIO())


def test_trials_depend_only_on_their_parameters():
    params = {"activation": "relu", "k": 10, "hidden": 30, "output": 80, "noise": 1e-9,
              "method": "linf", "instance": 3, "seed": 0}
    first = execute_trial(("success-vs-k", params), None)
    second = execute_trial(("success-vs-k", dict(reversed(list(params.items())))), None)
    assert "error" not in first, first.get("traceback")
    assert first["metrics"]["success"] and first["metrics"]["rel_error"] < 1e-6
    drop = set(success_vs_k.TIMING_FIELDS)
    assert {k: v for k, v in first["metrics"].items() if k not in drop} == \
        {k: v for k, v in second["metrics"].items() if k not in drop}
    broken = execute_trial(("success-vs-k", {**params, "activation": "nope"}), None)
    assert "error" in broken and "traceback" in broken


def test_success_vs_k_figure_and_verdict_from_rows(tmp_path):
    rows = []
    for k in (10, 90, 130, 170):
        for i in range(10):
            limit = float(success_vs_k.identifiability_limit(k))
            rows.append({"activation": "relu", "k": k, "method": "linf", "instance": i,
                         "success": i < round(10 * limit), "seconds": 0.01})
            rows.append({"activation": "relu", "k": k, "method": "gd", "instance": i,
                         "success": k < 90, "seconds": 1.0})
            rows.append({"activation": "leaky_relu", "k": k, "method": "linf", "instance": i,
                         "success": True, "seconds": 0.01})
    (path,) = success_vs_k.figures(rows, tmp_path)
    assert path.name == "success_vs_k.png" and path.stat().st_size > 10_000
    sentence = success_vs_k.verdict(rows)
    assert sentence.startswith("We match Figure 2")
    assert "every trial up to k = 90" in sentence and "first reaches 0 at k = 90" in sentence
    assert "| ReLU | 130 | 10 |" in success_vs_k.summary(rows)
    worse = [dict(r, success=False) if r["method"] == "linf" and r["activation"] == "relu"
             else r for r in rows]
    assert success_vs_k.verdict(worse).startswith("We fall short of Figure 2")
    assert "less often than the limit allows at k = 10, 90" in success_vs_k.verdict(worse)


def test_timing_summary_and_verdict_from_rows(tmp_path):
    rows = [{"net": net, "method": method, "instance": i, "seconds": seconds,
             "success": True, "_workers": 1}
            for net in timing.NETS for i in range(3)
            for method, seconds in (("linf", 0.05), ("l1", 0.06), ("gd", 1.9))]
    table = timing.summary(rows)
    assert "| 10 x 250 x 600 | 3 | 0.050 | 0.060 | 1.900 | 0.63-1.03" in table
    assert "MNIST 20 x 60 x 784" in table
    assert timing.verdict(rows).startswith("We exceed Table 1")
    assert timing.figures(rows, tmp_path)[0].exists()


def test_mnist_and_sensing_are_registered_as_modules():
    assert available("mnist") == (True, "")
    assert available("sensing") == (True, "")
    assert load_experiment("mnist") is mnist and load_experiment("sensing") is sensing
    assert {p["task"] for p in mnist.grid(True, None)} == set(mnist.TASKS)
    assert {p["m"] for p in sensing.grid(True, 1)} == set(sensing.QUICK_MS)


def test_every_experiment_follows_the_one_convention():
    """Each registered experiment is a module of the experiments package named as it is
    registered (no adapter objects beside modules)."""
    for name in EXPERIMENTS:
        experiment = load_experiment(name)
        assert isinstance(experiment, ModuleType), name
        assert experiment.__name__.startswith("layerinv.reproduction.experiments."), name
        assert experiment.NAME == name


# The trial keys of the grids as the adapters of layerinv 0.x (before the experiments were all
# modules) stored them: sha256 of the sorted keys, first 16 hex digits. A results file written
# then must resume, so these must never change: they are the digests of the grids' trials of
# the methods those files had (`OLD_TRIALS`; the pattern methods came later, new keys).
OLD_TRIALS = {
    "noise": lambda p: p["method"] in ("linf", "l1"),
    "sensing": lambda p: p["method"] in ("pgd", "pgd-plain", "gd", "lstsq"),
    "mnist": lambda p: "prior" not in p,
}
STORED_KEYS = {
    ("success-vs-k", True): "7bd3ad2def815f2f", ("success-vs-k", False): "2910a74492ae75b4",
    ("noise", True): "625966bcbdd52f50", ("noise", False): "e1476be1cb46f473",
    ("mnist", True): "4ae33dc73d6fedef", ("mnist", False): "4a55f032e4ea2e62",
    ("sensing", True): "017d88a46aad3b2f", ("sensing", False): "748777f038b0e6ea",
    ("timing", True): "6419510c21d49d10", ("timing", False): "803f27c9dc553241",
}


# The same digests of the whole grids since the pattern methods joined them (issue 13), so
# that a change of any trial key is deliberate: update a digest only with a commit that says
# which keys changed and why.
GRID_KEYS = {
    ("success-vs-k", True): "7bd3ad2def815f2f", ("success-vs-k", False): "2910a74492ae75b4",
    ("noise", True): "70690bc92bc78e03", ("noise", False): "aef7d572554487b9",
    ("mnist", True): "694c3e4bad3dc649", ("mnist", False): "1000dba7fd7b124e",
    ("sensing", True): "61f952a863a5782f", ("sensing", False): "e079c0b92dd0fe1f",
    ("conv", True): "50a355ddf6c666aa", ("conv", False): "a329cbc914a94e37",
    ("timing", True): "6419510c21d49d10", ("timing", False): "803f27c9dc553241",
}


def keys_digest(params: list[dict]) -> str:
    keys = sorted(trial_key(p) for p in params)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def test_grids_keep_the_trial_keys_of_stored_results_files():
    for (name, quick), digest in STORED_KEYS.items():
        trials = load_experiment(name).grid(quick, None)
        old = [p for p in trials if OLD_TRIALS.get(name, lambda p: True)(p)]
        assert keys_digest(old) == digest, (name, quick)
    for (name, quick), digest in GRID_KEYS.items():
        assert keys_digest(load_experiment(name).grid(quick, None)) == digest, (name, quick)


def test_resolve_all_names_every_registered_experiment():
    assert registry.resolve_names(["all"]) == (list(registry.names()), [])
    assert registry.resolve_names(["noise", "all"])[0][0] == "noise"


def test_a_registered_experiment_is_a_cli_choice(monkeypatch, capsys):
    monkeypatch.setattr(registry, "EXPERIMENTS", dict(registry.EXPERIMENTS))
    registry.register("noise-again", "layerinv.reproduction.experiments.noise")
    parser = argparse.ArgumentParser(prog="layerinv")
    add_parsers(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["reproduce", "noise-again"]).experiment == "noise-again"
    assert cli_main(["reproduce", "--help"]) == 0
    usage = capsys.readouterr().out
    assert "{" + ",".join([*registry.names(), "all"]) + "}" in usage.replace("\n", "")
    assert "noise-again" in registry.names()
    for bad in ("all", "", "-x"):
        with pytest.raises(InputError, match="name must be"):
            registry.register(bad, "layerinv.reproduction.experiments.noise")
    with pytest.raises(InputError, match="module must be a dotted module name"):
        registry.register("x", "layerinv.reproduction.run:MNIST")


def test_cli_parsers_register_reproduce_and_report():
    parser = argparse.ArgumentParser(prog="layerinv")
    commands = parser.add_subparsers(dest="command")
    add_parsers(commands)
    args = parser.parse_args(["reproduce", "--quick", "--workers", "2", "--db", "x.sqlite"])
    assert args.experiment == "all" and args.quick and args.workers == 2
    assert callable(args.run)
    args = parser.parse_args(["reproduce", "success-vs-k", "--trials", "5", "--scheduler",
                              "tcp://127.0.0.1:8786", "--out", "o"])
    assert args.experiment == "success-vs-k" and args.trials == 5
    assert args.scheduler == "tcp://127.0.0.1:8786"
    args = parser.parse_args(["report", "--db", "x.sqlite", "--out", "d"])
    assert args.command == "report" and callable(args.run)
    with pytest.raises(SystemExit):
        parser.parse_args(["reproduce", "not-an-experiment"])


# ------------------------------------------------------------------------------ verdicts
def mnist_rows(variance: float, lp_psnr: float, gd_psnr: float, statuses: list[str]) -> list:
    rows = []
    for i, status in enumerate(statuses):
        for method, value, state in (("linf", lp_psnr, status), ("gd", gd_psnr, "max_steps")):
            rows.append({"generator": "relu", "task": "denoise", "source": "gaussian",
                         "noise_variance": variance, "method": method, "instance": i,
                         "latent_error": 1.0, "psnr": value + 0.01 * i, "psnr_digit": None,
                         "seconds": 0.01, "status": state})
    return rows


def test_mnist_verdict_explains_from_the_rows_not_from_a_fixed_setting():
    rows = mnist_rows(0.05, 12.0, 25.0, ["not_unique"] * 3 + ["optimal"] * 2)
    sentence = mnist.verdict(rows)
    assert "behind on denoise" in sentence
    assert "noise variance 0.05 per pixel" in sentence and "0.3" not in sentence
    assert "not 'optimal' on 3 of 5 instances" in sentence
    assert "least squares" not in sentence and "small-noise regime" not in sentence
    ahead = mnist.verdict(mnist_rows(0.0, 250.0, 50.0, ["optimal"] * 4))
    assert "ahead on denoise (an exact fit of G(z*)" in ahead and "local minimum" not in ahead


def test_mnist_sets_the_pattern_method_beside_gradient_descent_on_the_same_prior(tmp_path):
    prior = mnist.prior_for(0.3)
    rows = []
    for i in range(3):
        for method, p, psnr, objective in (("linf", 0.0, 9.0, 0.45), ("gd", 0.0, 20.0, 0.29),
                                           ("gd", prior, 23.0, 0.31),
                                           ("pattern", prior, 24.0, 0.30 + 0.02 * (i == 2))):
            rows.append({"generator": "relu", "task": "denoise", "source": "gaussian",
                         "noise_variance": 0.3, "method": method, "prior": p, "instance": i,
                         "latent_error": 1.0, "psnr": psnr, "psnr_digit": None,
                         "objective": objective, "seconds": 0.01, "status": "optimal"})
    sentence = mnist.verdict(rows)
    assert "denoise (relu, z* gaussian): LP 9.0 dB, GD 20.0 dB" in sentence  # prior-0 GD
    assert "denoise (relu, z* gaussian, MAP prior): pattern 24.0 dB, GD 23.0 dB, pattern's " \
           "objective no higher on 2 of 3" in sentence
    table = mnist.summary(rows)
    assert "| 0.3 | gd | 3 |" in table and "| 0.3 | gd (MAP prior) | 3 |" in table
    assert "| 0.3 | pattern (MAP prior) | 3 |" in table and "| 0.31 |" in table
    assert table.index("| gd |") < table.index("| gd (MAP prior) |") < table.index(
        "| pattern (MAP prior) |")
    # Rows stored before the prior existed have none: prior 0, the plain method's row.
    old = [{k: v for k, v in r.items() if k not in ("prior", "objective")} for r in rows
           if r["prior"] == 0]
    assert "| 0.3 | gd | 3 |" in mnist.summary(old) and "pattern" not in mnist.verdict(old)
    assert mnist.figure_rows(["linf", "l1", "gd", "gd (MAP prior)", "pattern (MAP prior)"],
                             mnist.FIGURE_METHODS) == ["linf", "gd", "gd (MAP prior)",
                                                       "pattern (MAP prior)"]
    assert mnist.figure_rows(["gd", "gd (MAP prior)"], ["gd (MAP prior)"]) == ["gd (MAP prior)"]


def test_an_mnist_trial_runs_with_its_prior():
    prior = mnist.prior_for(0.3)
    trial = next(p for p in mnist.grid(True, None) if p["method"] == "pattern"
                 and p["task"] == "denoise" and p["instance"] == 0)
    assert trial["prior"] == prior
    got = mnist.run_trial(trial)
    alone = mnist.denoise_run(n=1, methods=["pattern"], prior=prior, seed=mnist.SEED,
                              progress=False).rows[0]
    plain = mnist.denoise_run(n=1, methods=["pattern"], seed=mnist.SEED, progress=False).rows[0]
    assert got["objective"] == alone["objective"] and got["psnr"] == alone["psnr"]
    assert got["latent_error"] != plain["latent_error"]


def test_noise_and_sensing_verdicts_name_the_pattern_methods():
    rows = [{"network": "random", "noise": "uniform", "level": level, "method": method,
             "instance": i, "rel_error": level * {"pattern": 0.5, "l1": 2.0}.get(method, 1.0),
             "rel_noise": level, "linf_error": level, "eps": level, "depth": 2,
             "status": "optimal", "seconds": 0.01}
            for level in (1e-4, 1e-3, 1e-2) for i in range(2) for method in noise.METHODS]
    sentence = noise.verdict(rows)
    assert "The pattern method (l2 fit of the whole network) grows with slope 1.00 to 1.00; " \
           "its error is a median 0.5 times the l_inf LP's on the same 6 runs (lower on 6)" \
           in sentence
    assert "| random | uniform | pattern | 2 |" in noise.summary(rows)
    rows = [{"network": "random", "m": m, "method": method, "instance": 0, "seconds": 0.1,
             "rel_error": 1e-15 if m == 100 or method == "pattern" else 0.5}
            for m in (50, 100) for method in ("pgd", "pgd-pattern", "pattern", "gd")]
    assert "on the random net the median error is below 0.001 from m = 100 for LP-PGD, from " \
           "m = 100 for PGD with the pattern projection, from m = 50 for the pattern method, " \
           "from m = 100 for gradient descent" in sensing.verdict(rows)


def test_sensing_and_timing_verdicts_carry_no_fixed_explanations():
    rows = [{"network": "random", "m": m, "method": method, "instance": i, "seconds": 0.1,
             "rel_error": error * (1 + 0.1 * i)}
            for m in (50, 100) for i in range(3)
            for method, error in (("pgd", 1e-15), ("gd", 3e-3 if m == 50 else 2e-4))]
    sentence = sensing.verdict(rows)
    assert "at 2 (network, m) points LP-PGD's median error is below 1e-10 where gradient " \
           "descent's is 2.2e-04 to 3.3e-03" in sentence
    assert "optimisation error" not in sentence
    timed = [{"net": net, "method": method, "instance": 0, "seconds": seconds,
              "success": True, "_workers": 1}
             for net in timing.NETS for method, seconds in (("linf", 0.05), ("gd", 1.9))]
    assert "interior point" not in timing.verdict(timed)


# ------------------------------------------------------------------------------ batches
def without_timing(metrics: dict, fields=("seconds",)) -> dict:
    return {k: v for k, v in to_jsonable(metrics).items() if k not in fields}


def test_a_batch_gives_each_trial_the_metrics_it_gets_alone():
    """Bitwise, timing aside: a trial's row must not depend on the trials batched with it."""
    # success-vs-k: a net per trial. The last trial of a batch is the one whose rows sit in
    # the tail of every tensor (where a vectorised loop hands over to scalar code).
    cell = [{"activation": "relu", "k": 6, "hidden": 30, "output": 80, "noise": 1e-9,
             "method": "gd", "instance": i, "seed": 0} for i in range(3)]
    batch = success_vs_k.run_batch(cell)
    assert without_timing(batch[2]) == without_timing(success_vs_k.run_trial(cell[2]))
    part = success_vs_k.run_batch([cell[2], cell[0]])
    assert without_timing(part[0]) == without_timing(batch[2])
    assert without_timing(part[1]) == without_timing(batch[0])
    # MNIST: one shared generator, a mask per instance (inpainting), and lp+gd's one restart.
    grid = mnist.grid(True, 3)
    for task, method in (("inpaint-random", "gd"), ("denoise", "lp+gd")):
        mine = [p for p in grid if p["task"] == task and p["method"] == method]
        assert len(mine) == 3
        batch = mnist.run_batch(mine)
        assert without_timing(batch[2]) == without_timing(mnist.run_trial(mine[2]))
        assert without_timing(mnist.run_batch([mine[1], mine[0]])[1]) == \
            without_timing(batch[0])


def test_a_partly_stored_cell_runs_only_its_missing_trials_in_one_batch(tmp_path):
    def cell(name, params):
        return params["method"] == "gd" and params["k"] == 10 and \
            params["activation"] == "relu"

    def first(name, params):
        return cell(name, params) and params["instance"] == 0

    db = tmp_path / "part.sqlite"
    once = run_experiments(["success-vs-k"], trials=3, workers=1, db=db, out=None,
                           select=first, stream=io.StringIO())
    assert once.computed == 1
    text = io.StringIO()
    rest = run_experiments(["success-vs-k"], trials=3, workers=1, db=db, out=tmp_path / "r",
                           select=cell, stream=text)
    assert rest.computed == 2 and "3 trials, 1 already" in text.getvalue()
    whole = run_experiments(["success-vs-k"], trials=3, workers=1, db=tmp_path / "all.sqlite",
                            out=None, select=cell, stream=io.StringIO())
    assert whole.computed == 3
    with ResultsStore(db, create=False) as store:
        rows = {row.params["instance"]: row for row in store.rows()}
    with ResultsStore(tmp_path / "all.sqlite", create=False) as store:
        reference = {row.params["instance"]: row for row in store.rows()}
    assert sorted(rows) == sorted(reference) == [0, 1, 2]  # one row per trial
    assert [rows[i].versions["batch"] for i in range(3)] == [1, 2, 2]
    assert {reference[i].versions["batch"] for i in range(3)} == {3}
    assert rows[1].seconds == rows[2].seconds > 0  # the batch's wall time shared out
    assert "batch of 2 trials / 2" in rows[1].versions["seconds"]
    for i in range(3):
        assert without_timing(rows[i].metrics) == without_timing(reference[i].metrics), i
    report = (tmp_path / "r" / "REPORT.md").read_text()
    assert "2 of these trials ran in batches of up to 2" in report
    assert "batch's wall time / its size" in report


def test_timing_trials_run_last_and_alone(tmp_path):
    def few(name, params):
        if name == "timing":
            return params["method"] == "linf" and params["net"] in ("k=10", "mnist")
        return params["network"] == "random" and params["level"] == 1e-3

    text = io.StringIO()
    result = run_experiments(["timing", "noise"], trials=2, workers=2, db=tmp_path / "t.sqlite",
                             out=None, select=few, stream=text)
    noisy = sum(few("noise", p) for p in noise.grid(False, 2))  # 2 noises x 2 x methods
    assert noisy == 2 * 2 * len(noise.METHODS)
    assert result.computed == 4 + noisy and not result.failed
    assert "timing: its 4 trials run last, one at a time in this process" in text.getvalue()
    with ResultsStore(tmp_path / "t.sqlite", create=False) as store:
        order = [row.experiment for row in store.rows()]
        timed = store.rows("timing")
    assert order == ["noise"] * noisy + ["timing"] * 4
    assert {row.versions["workers"] for row in timed} == {1}


# ------------------------------------------------------------------------------ no PyTorch
NO_TORCH = '''
import importlib.abc
import sys


class _NoTorch(importlib.abc.MetaPathFinder):
    """As on a machine without PyTorch: `import torch` raises ModuleNotFoundError."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
'''


def test_without_pytorch_the_run_says_so_skips_gradient_trials_and_exits_0(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(NO_TORCH)
    environment = env()
    environment["PYTHONPATH"] = str(shim) + os.pathsep + environment["PYTHONPATH"]
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=environment,
                           capture_output=True, text=True, timeout=60)
    assert "No module named 'torch'" in probe.stderr  # the shim works
    db, out = tmp_path / "nt.sqlite", tmp_path / "report"
    done = subprocess.run(cli("reproduce", "success-vs-k", "--quick", "--trials", "1",
                              "--workers", "1", "--db", str(db), "--out", str(out),
                              "--no-progress"),
                          env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    note = [i for i, line in enumerate(lines) if line.startswith("PyTorch cannot be imported")]
    assert len(note) == 1 and note[0] < min(i for i, line in enumerate(lines)
                                            if line.startswith("total:"))
    assert "14 of the 42 trials (methods gd) are skipped" in lines[note[0]]
    assert "trial failed" not in done.stdout + done.stderr
    assert "raised an error" not in done.stdout
    with ResultsStore(db, create=False) as store:
        rows = store.rows()
    assert len(rows) == 28 and {row.method for row in rows} == {"linf", "l1"}
    report = (out / "REPORT.md").read_text()
    assert "success gd" in report and report.count("not run: PyTorch is not installed") >= 14
    assert "gradient descent: not run: PyTorch is not installed" in report


def test_reports_mark_gradient_cells_not_run_when_pytorch_is_missing(monkeypatch):
    from layerinv.reproduction import report

    monkeypatch.setattr(report, "torch_missing", lambda: "No module named 'torch'")
    lp = [{"net": net, "method": method, "instance": 0, "seconds": 0.05, "success": True}
          for net in timing.NETS for method in ("linf", "l1")]
    table = timing.summary(lp)
    assert table.count("not run: PyTorch is not installed") == len(timing.NETS)
    assert "gradient descent: not run" in timing.verdict(lp)
    rows = [r for r in mnist_rows(0.3, 12.0, 25.0, ["not_unique"] * 2) if r["method"] == "linf"]
    table = mnist.summary(rows)
    assert "| relu | denoise | gaussian | 0.3 | gd | 0 | not run: PyTorch is not installed" in \
        table and "| lp+gd | 0 | not run: PyTorch" in table
    assert "Gradient descent: not run: PyTorch is not installed" in mnist.verdict(rows)
    pgd = [{"network": "mnist", "m": 50, "method": "pgd", "instance": i, "seconds": 0.1,
            "rel_error": 1e-15} for i in range(2)]
    assert "| mnist | 50 | gd | 0 | not run: PyTorch is not installed" in sensing.summary(pgd)
    assert "gradient descent: not run: PyTorch is not installed" in sensing.verdict(pgd)


# ------------------------------------------------------------------------------ docs tables
def docs_tables_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "scripts" /
                                                  "docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_blocks(text: str) -> dict[str, list[list[str]]]:
    """name -> rows (cells) of each marked table; asserts every table is marked."""
    import re

    blocks: dict[str, list[list[str]]] = {}
    name = None
    for number, line in enumerate(text.splitlines()):
        stripped = line.strip()
        opened = re.match(r"<!-- table: (\S+) \(python scripts/docs_tables.py \1\) -->$",
                          stripped)
        if opened:
            name = opened[1]
            blocks[name] = []
        elif stripped == "<!-- /table -->":
            name = None
        elif stripped.startswith("|"):
            assert name is not None, f"line {number + 1}: a table no command regenerates"
            blocks[name].append([c.strip() for c in stripped.strip("|").split("|")])
    return blocks


def test_every_docs_table_is_regenerated_by_a_named_command_and_matches_its_grid():
    script = docs_tables_script()
    found = {}
    for path in sorted((ROOT / "docs").glob("*.md")):
        text = path.read_text()
        for name, rows in table_blocks(text).items():
            assert name in script.TABLES and script.TABLES[name][0] == path, name
            assert f"`python scripts/docs_tables.py {name}`" in text, name  # visible, beside
            found[name] = rows
    assert set(found) == set(script.TABLES)
    grid = script.SENSING
    body = found["sensing"][2:]
    assert {(r[0], int(r[1]), r[2]) for r in body} == {
        (net, m, method) for net in grid["networks"] for m in grid["ms"]
        for method in sensing.METHODS}
    assert {int(r[3]) for r in body} == {grid["instances"]} and len(body) == len(set(
        (r[0], r[1], r[2]) for r in body))
    for name, kind, tasks in (("mnist-relu", "relu", script.RELU_TASKS),
                              ("mnist-leaky", "leaky_relu", script.LEAKY_TASKS)):
        body = found[name][2:]
        assert {(r[0], r[1], r[2], float(r[3]), r[4]) for r in body} == {
            (kind, task, source, variance, mnist.label(method, prior, variance))
            for task, source, variance in tasks
            for method, prior in mnist.grid_methods(variance)}
        assert {int(r[5]) for r in body} == {script.MNIST_INSTANCES}
    text = (ROOT / "docs" / "sensing.md").read_text()
    assert "`layerinv reproduce sensing` runs the same grid" not in text
    # The script rewrites a block in place, at the marker's indentation, and nothing else.
    sample = "a\n  <!-- table: x (python scripts/docs_tables.py x) -->\n  | old |\n  " \
             "<!-- /table -->\nb"
    assert script.replace_table(sample, "x", "| new |\n|---|") == (
        "a\n  <!-- table: x (python scripts/docs_tables.py x) -->\n  | new |\n  |---|\n  "
        "<!-- /table -->\nb")
