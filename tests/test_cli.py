"""The command line, end to end, as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

LAYERINV = [shutil.which("layerinv")] if shutil.which("layerinv") else \
    [sys.executable, "-m", "layerinv"]


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*LAYERINV, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, check=False)


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("invert", "random-network", "sample", "demo", "hardness"):
        assert command in result.stdout


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "layerinv", "--version"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("layerinv ")


@pytest.mark.parametrize("method", ["exact", "linf", "l1"])
def test_random_network_sample_invert_round_trip(tmp_path, method):
    net, x, z_true, z_out = (tmp_path / name for name in ("net.npz", "x.npy", "z.npy", "zh.npy"))
    assert run("random-network", "--widths", "10", "60", "200", "--seed", "3",
               "--out", str(net)).returncode == 0
    assert run("sample", "--network", str(net), "--count", "3", "--seed", "1",
               "--out", str(x), "--latent-out", str(z_true)).returncode == 0
    result = run("invert", "--network", str(net), "--observation", str(x), "--method", method,
                 "--out", str(z_out))
    assert result.returncode == 0, result.stderr
    assert "3 of 3 samples optimal" in result.stdout
    assert "status" in result.stdout and "eps per layer" in result.stdout
    np.testing.assert_allclose(np.load(z_out), np.load(z_true), rtol=1e-8, atol=1e-10)


def test_noise_bound_is_passed_through(tmp_path):
    net, x, z = tmp_path / "net.npz", tmp_path / "x.npy", tmp_path / "z.npy"
    run("random-network", "--widths", "10", "60", "200", "--out", str(net))
    run("sample", "--network", str(net), "--noise", "0.01", "--out", str(x))
    result = run("invert", "--network", str(net), "--observation", str(x), "--noise", "1e-6",
                 "--out", str(z))
    assert result.returncode == 0
    assert "noise_bound_violated" in result.stdout


def test_bad_files_give_a_clear_error_and_exit_code_2(tmp_path):
    fake = tmp_path / "fake.npz"
    fake.write_bytes(b"not a network")
    x = tmp_path / "x.npy"
    np.save(x, np.ones(5))
    result = run("invert", "--network", str(fake), "--observation", str(x),
                 "--out", str(tmp_path / "z.npy"))
    assert result.returncode == 2
    assert "error" in result.stderr and "fake.npz" in result.stderr
    assert "Traceback" not in result.stderr

    net = tmp_path / "net.npz"
    run("random-network", "--widths", "4", "20", "--out", str(net))
    result = run("invert", "--network", str(net), "--observation", str(x),
                 "--out", str(tmp_path / "z.npy"))
    assert result.returncode == 2
    assert "x must have 20 entries per sample" in result.stderr

    result = run("invert", "--network", str(net), "--observation", str(tmp_path / "none.npy"),
                 "--out", str(tmp_path / "z.npy"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_unknown_method_is_refused_by_the_parser(tmp_path):
    result = run("invert", "--network", "n.npz", "--observation", "x.npy", "--method", "l2",
                 "--out", "z.npy")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_demo_runs(tmp_path):
    result = run("demo", "--instances", "2")
    assert result.returncode == 0
    assert result.stdout.count("realizable") >= 3 and "noisy" in result.stdout


def test_gradient_method_from_the_command_line(tmp_path):
    net, x, z_true, z_out = (tmp_path / name for name in ("net.npz", "x.npy", "z.npy", "zh.npy"))
    run("random-network", "--widths", "5", "30", "90", "--seed", "2", "--out", str(net))
    run("sample", "--network", str(net), "--count", "2", "--out", str(x),
        "--latent-out", str(z_true))
    result = run("invert", "--network", str(net), "--observation", str(x), "--method", "lp+gd",
                 "--out", str(z_out))
    assert result.returncode == 0, result.stderr
    assert "2 of 2 samples" in result.stdout
    np.testing.assert_allclose(np.load(z_out), np.load(z_true), rtol=1e-6, atol=1e-8)


def test_hardness_command(tmp_path):
    result = run("hardness", "--vars", "6", "--clauses", "26", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "answer:" in result.stdout and ("SAT" in result.stdout)
    assert "Running HiGHS" not in result.stdout  # the solver's banner is kept out


def test_random_network_activation_names_carry_the_slope(tmp_path):
    from layerinv import LeakyReLU, Network

    path = tmp_path / "net.npz"
    for argv, slope in ((["--activation", "leaky_relu(0.2)"], 0.2),
                        (["--activation", "leaky_relu", "--slope", "0.3"], 0.3),
                        (["--activation", "leaky_relu"], 0.1)):  # the CLI's stated default
        result = run("random-network", "--widths", "3", "10", "--out", str(path), *argv)
        assert result.returncode == 0, result.stderr
        assert f"leaky_relu({slope})" in result.stdout  # the slope used is printed
        assert Network.load(path).layers[0].activation == LeakyReLU(slope)
    result = run("random-network", "--widths", "3", "10", "--out", str(path),
                 "--activation", "leaky_relu(0.2)", "--slope", "0.3")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "--slope" in result.stderr
