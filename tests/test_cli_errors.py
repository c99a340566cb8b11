"""Every user error is one clear line: the command line as a user runs it.

Usage errors exit 2, runtime failures 1, Ctrl-C 130; stderr holds exactly one line naming the
argument, and a traceback only with --debug. Most checks run `layerinv.cli.main` in this
process (capsys); those that need a real process (a full disk, a signal) run
`python -m layerinv`.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys

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
