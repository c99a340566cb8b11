"""Every user error is one clear line: the command line as a user runs it.

Usage errors exit 2, runtime failures 1, Ctrl-C 130; stderr holds exactly one line naming the
argument, and a traceback only with --debug. Most checks run `layerinv.cli.main` in this
process (capsys); those that need a real process (a full disk, a signal) run
`python -m layerinv`.
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import layerinv
from layerinv import cli
from layerinv.errors import InputError, LayerinvError, NetworkFileError, OutputError

LAYERINV = [sys.executable, "-m", "layerinv"]


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*LAYERINV, *args], capture_output=True, text=True, timeout=120,
                          check=False, **kwargs)


def assert_one_line(code: int, stderr: str, expected_code: int, *needles: str) -> str:
    """Exit status `expected_code`, one line on stderr holding every needle, no traceback."""
    assert code == expected_code, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def call(capsys, *argv: str) -> tuple[int, str]:
    """`layerinv ARGV` in this process: (exit status, stderr)."""
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


@pytest.fixture
def files(tmp_path):
    """A small network (3 x 10 x 20) and two observations of it, in tmp_path."""
    net = layerinv.random_network([3, 10, 20], seed=0)
    net.save(tmp_path / "net.npz")
    x = net.forward(np.random.default_rng([1, 7]).normal(size=(2, 3)))
    np.save(tmp_path / "x.npy", x)
    return tmp_path


@pytest.fixture
def no_work(monkeypatch):
    """Any work (loading the network, drawing one) fails the test: checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the command started its work before checking its arguments")

    monkeypatch.setattr(layerinv.Network, "load", classmethod(refuse))
    monkeypatch.setattr(cli, "random_network", refuse)


# ------------------------------------------------------------------ main(): exit statuses
@pytest.mark.parametrize(("error", "expected"), [
    (InputError("noise must be >= 0; got -1"), 2),
    (NetworkFileError("network file 'n.npz' is corrupt"), 2),
    (LayerinvError("a worker process was lost"), 1),
    (OutputError("--out: cannot write 'z.npy': No space left on device"), 1),
    (OSError(errno.ENOSPC, "No space left on device"), 1),
    (PermissionError(errno.EACCES, "Permission denied", "/ro/results.sqlite"), 1),
    (sqlite3.OperationalError("database or disk is full"), 1),
    (MemoryError("Unable to allocate 80. GiB"), 1),
    (RuntimeError("a message\nover two lines"), 1),
    (KeyboardInterrupt(), 130),
])
def test_main_maps_each_failure_to_its_exit_status_in_one_line(monkeypatch, capsys, error,
                                                               expected):
    def fail(args):
        raise error

    monkeypatch.setattr(cli, "_run_demo", fail)
    code, stderr = call(capsys, "demo")
    line = assert_one_line(code, stderr, expected, "layerinv demo:")
    if not isinstance(error, KeyboardInterrupt) and str(error):
        assert str(error).splitlines()[0] in line
    # --debug, before or after the command, prints the traceback and then the same line.
    for argv in (["--debug", "demo"], ["demo", "--debug"]):
        code, stderr = call(capsys, *argv)
        assert code == expected and "Traceback (most recent call last)" in stderr
        assert stderr.splitlines()[-1] == line


def test_parser_errors_are_one_line_with_exit_status_2(capsys):
    for argv, needles in ((["sample", "--count", "abc"], ["--count", "'abc'"]),
                          (["invert", "--network", "n.npz"], ["--observation", "--out"]),
                          (["invert", "--network", "n", "--observation", "x", "--out", "z",
                            "--method", "l2"], ["--method", "invalid choice"]),
                          (["no-such-command"], ["no-such-command"])):
        assert_one_line(*call(capsys, *argv), 2, *needles)


def test_help_and_version_still_exit_0(capsys):
    assert cli.main(["--version"]) == 0
    assert cli.main(["invert", "--help"]) == 0
    assert "--out" in capsys.readouterr().out


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    process = subprocess.Popen([*LAYERINV, "demo", "--instances", "60"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout.readline().startswith("Inverting")  # main() is running
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert_one_line(process.returncode, stderr, 130, "layerinv demo: interrupted")


# ------------------------------------------------------------------ output paths
OUTPUT_COMMANDS = {
    "invert": ["invert", "--network", "{d}/net.npz", "--observation", "{d}/x.npy"],
    "sample": ["sample", "--network", "{d}/net.npz"],
    "reconstruct": ["reconstruct", "--network", "{d}/net.npz", "--measurement", "identity",
                    "--observation", "{d}/x.npy"],
    "random-network": ["random-network", "--widths", "3", "10"],
}


def command(name: str, folder: Path, *extra: str) -> list[str]:
    return [part.format(d=folder) for part in OUTPUT_COMMANDS[name]] + list(extra)


@pytest.mark.parametrize("name", sorted(OUTPUT_COMMANDS))
@pytest.mark.parametrize("case", ["existing folder", "missing folder", "read-only"])
def test_a_bad_out_is_refused_before_any_work(files, no_work, capsys, name, case):
    target = {"existing folder": str(files),
              "missing folder": str(files / "missing" / "dir" / "z.npy"),
              "read-only": "/proc/layerinv-z.npy"}[case]  # root ignores permission bits
    code, stderr = call(capsys, *command(name, files, "--out", target))
    expected = 1 if case == "read-only" else 2  # a read-only place is no usage error
    assert_one_line(code, stderr, expected, "--out", target if case != "missing folder"
                    else "does not exist")


@pytest.mark.parametrize("name", sorted(OUTPUT_COMMANDS))
def test_out_in_a_missing_folder_as_a_user_types_it(files, name):
    result = run(*command(name, files, "--out", "/missing/dir/z.npy"))
    assert_one_line(result.returncode, result.stderr, 2, "--out", "'/missing/dir'",
                    "does not exist")


def test_out_may_not_overwrite_an_input(files, capsys):
    before = (files / "x.npy").read_bytes()
    for out in ("x.npy", "x"):  # 'x' is written as x.npy too
        code, stderr = call(capsys, *command("invert", files, "--out", str(files / out)))
        assert_one_line(code, stderr, 2, "--out", "--observation", "overwrite")
    assert (files / "x.npy").read_bytes() == before
    code, stderr = call(capsys, *command("reconstruct", files, "--out", str(files / "x.npy")))
    assert_one_line(code, stderr, 2, "--out", "--observation")
    code, stderr = call(capsys, *command("sample", files, "--out", str(files / "a.npy"),
                                         "--latent-out", str(files / "a")))
    assert_one_line(code, stderr, 2, "--out", "--latent-out")
    code, stderr = call(capsys, *command("reconstruct", files, "--out", str(files / "a.npy"),
                                         "--signal-out", str(files / "a.npy")))
    assert_one_line(code, stderr, 2, "--out", "--signal-out")


@pytest.mark.parametrize("name", ["invert", "sample", "reconstruct"])
def test_out_without_suffix_prints_the_file_really_written(files, capsys, name):
    out = files / "zout"
    assert cli.main(command(name, files, "--out", str(out))) == 0
    printed = capsys.readouterr().out
    assert (files / "zout.npy").exists() and not out.exists()
    assert f"{out}.npy" in printed


def test_network_given_a_npy_file(files):
    for name in ("invert", "sample", "reconstruct"):
        argv = [part.replace("net.npz", "x.npy") for part in command(name, files)]
        result = run(*argv, "--out", str(files / "z.npy"))
        assert_one_line(result.returncode, result.stderr, 2, "x.npy", ".npy array",
                        "not a layerinv .npz network")


# ------------------------------------------------------------------ a full disk
def _small_file_limit() -> None:
    """In the child: files stop growing at 16 KiB, as on a full disk (EFBIG, not a signal)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))


@pytest.mark.parametrize("name", sorted(OUTPUT_COMMANDS))
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(files, name):
    # Each command's output is made larger than the 16 KiB the child may write.
    widths, samples = ([50, 100, 200], 60) if name == "invert" else ([3, 10, 2000], 2)
    net = layerinv.random_network(widths, seed=0)
    net.save(files / "net.npz")
    np.save(files / "x.npy", net.forward(np.random.default_rng([2, 7]).normal(
        size=(samples, widths[0]))))
    out = files / "out.npy"
    out.write_bytes(b"an earlier result")
    flag = "--signal-out" if name == "reconstruct" else "--out"  # the signal is the big one
    argv = {"invert": command(name, files), "sample": command(name, files, "--count", "3"),
            "reconstruct": command(name, files),
            "random-network": ["random-network", "--widths", "3", "2000"]}[name]
    result = run(*argv, flag, str(out), preexec_fn=_small_file_limit)
    assert_one_line(result.returncode, result.stderr, 1, flag, str(out), "File too large")
    assert out.read_bytes() == b"an earlier result"  # written whole or not at all
    assert sorted(p.name for p in files.iterdir()) == ["net.npz", "out.npy", "x.npy"]


def test_write_output_keeps_the_file_mode_a_plain_open_gives(tmp_path):
    from layerinv._validation import output_path, save_npy

    plain = tmp_path / "plain.npy"
    np.save(plain, np.ones(2))
    target = output_path(str(tmp_path / "ours"), "--out", suffix=".npy")
    save_npy(target, np.ones(2), "--out")
    assert os.stat(target).st_mode == os.stat(plain).st_mode
    np.testing.assert_array_equal(np.load(target), np.ones(2))


# ------------------------------------------------------------------ numbers
BAD_NUMBERS = [
    (["sample", "--network", "n.npz", "--out", "x.npy", "--noise", "nan"], "--noise"),
    (["sample", "--network", "n.npz", "--out", "x.npy", "--noise", "-0.5"], "--noise"),
    (["sample", "--network", "n.npz", "--out", "x.npy", "--noise", "inf"], "--noise"),
    (["sample", "--network", "n.npz", "--out", "x.npy", "--count", "-2"], "--count"),
    (["sample", "--network", "n.npz", "--out", "x.npy", "--count", "0"], "--count"),
    (["sample", "--network", "n.npz", "--out", "x.npy", "--seed", "-1"], "--seed"),
    (["invert", "--network", "n", "--observation", "x", "--out", "z", "--noise", "nan"],
     "--noise"),
    (["invert", "--network", "n", "--observation", "x", "--out", "z", "--seed", "-1"],
     "--seed"),
    (["invert", "--network", "n", "--observation", "x", "--out", "z", "--steps", "0"],
     "--steps"),
    (["random-network", "--widths", "3", "10", "--out", "n", "--seed", "-1"], "--seed"),
    (["random-network", "--out", "n", "--widths", "3", "-10"], "--widths"),
    (["random-network", "--widths", "3", "10", "--out", "n", "--slope", "nan"], "--slope"),
    (["demo", "--noise", "nan"], "--noise"),
    (["demo", "--instances", "0"], "--instances"),
    (["hardness", "--time-limit", "nan"], "--time-limit"),
    (["hardness", "--sweep", "--budget", "inf"], "--budget"),
    (["hardness", "--seed", "-1"], "--seed"),
    (["reconstruct", "--network", "n", "--measurement", "identity", "--simulate", "1",
      "--noise-sigma", "nan"], "--noise-sigma"),
    (["reconstruct", "--network", "n", "--measurement", "mask", "--simulate", "1",
      "--keep-fraction", "nan"], "--keep-fraction"),
    (["reconstruct", "--network", "n", "--measurement", "gaussian", "-m", "5", "--simulate",
      "1", "--tol", "nan"], "--tol"),
    (["reconstruct", "--network", "n", "--measurement", "identity", "--simulate", "0"],
     "--simulate"),
    (["reconstruct", "--network", "n", "--measurement", "gaussian", "-m", "5", "--simulate",
      "1", "--matrix-seed", "-1"], "--matrix-seed"),
    (["mnist", "denoise", "--variance", "nan"], "--variance"),
    (["mnist", "denoise", "--seed", "-1"], "--seed"),
    (["mnist", "inpaint", "--keep", "1.5"], "--keep"),
    (["train-mnist", "--data", "d", "--out", "o", "--lr", "nan"], "--lr"),
]


@pytest.mark.parametrize(("argv", "flag"), BAD_NUMBERS,
                         ids=[f"{argv[0]} {argv[-2]} {argv[-1]}" for argv, _ in BAD_NUMBERS])
def test_bad_numbers_are_refused_naming_the_flag(capsys, no_work, argv, flag):
    line = assert_one_line(*call(capsys, *argv), 2, flag, repr(argv[-1]))
    assert "finite" in line or "int >=" in line


def _all_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for path, inner in _all_actions(sub):
                    yield f"{name} {path}", inner
        else:
            yield "/".join(action.option_strings) or action.dest, action


def test_no_numeric_flag_of_any_command_takes_nan_inf_or_a_negative_seed():
    checked = 0
    for path, action in _all_actions(cli.build_parser()):
        if action.type is None:
            continue
        checked += 1
        for text in ("nan", "inf", "-inf"):
            with pytest.raises((argparse.ArgumentTypeError, ValueError)):
                action.type(text)
                pytest.fail(f"{path} accepts {text!r}")
        if "seed" in action.dest:
            with pytest.raises(argparse.ArgumentTypeError):
                action.type("-1")
            assert action.type("0") == 0
    assert checked >= 40  # the sweep saw every command's numeric flags


def test_valid_numbers_are_still_accepted(files, capsys):
    out = files / "s.npy"
    assert cli.main(["sample", "--network", str(files / "net.npz"), "--out", str(out),
                     "--count", "2", "--noise", "1e-3", "--seed", "0"]) == 0
    x = np.load(out)
    assert x.shape == (2, 20) and np.isfinite(x).all()
    clean = layerinv.Network.load(files / "net.npz").forward(
        np.random.default_rng(0).normal(size=(2, 3)))
    assert 0 < np.abs(x - clean).max() <= 1e-3 * np.abs(clean).max()


def test_reconstruct_with_a_zero_matrix_is_one_line(files):
    np.save(files / "A.npy", np.zeros((5, 20)))
    result = run("reconstruct", "--network", str(files / "net.npz"), "--measurement",
                 "gaussian", "--matrix", str(files / "A.npy"), "--simulate", "1")
    assert result.returncode in (1, 2)  # 2 once the API refuses A = 0 as an InputError
    assert_one_line(result.returncode, result.stderr, result.returncode, "layerinv reconstruct")


# ------------------------------------------------------------------ complex arrays
def test_a_complex_observation_is_refused(files, capsys):
    x = np.load(files / "x.npy")
    np.save(files / "c.npy", x + 1j)
    assert cli.main(command("invert", files, "--out", str(files / "z.npy"))) == 0
    argv = [p.replace("x.npy", "c.npy") for p in command("invert", files, "--out",
                                                         str(files / "z.npy"))]
    assert_one_line(*call(capsys, *argv), 2, "--observation", "complex")


def test_the_api_refuses_complex_arrays():
    net = layerinv.random_network([3, 10, 20], seed=0)
    x = net.forward(np.ones(3))
    with pytest.raises(InputError, match="x must be real; got a complex array"):
        layerinv.invert(net, x + 0j)
    with pytest.raises(InputError, match="z must be real"):
        net.forward(np.ones(3) * (1 + 1e-3j))
    with pytest.raises(InputError, match="must be real"):
        layerinv.measurements.Matrix(np.eye(20) * 1j)
    # a real array in a complex dtype is refused too: the dtype says the data are complex
    with pytest.raises(InputError, match="complex"):
        layerinv.invert(net, x.astype(complex))
