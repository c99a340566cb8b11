"""Ctrl-C stops a HiGHS solve (`solvers._highs.run`): a real SIGINT to a real process in the
middle of a MILP that would run for minutes; the SIGINT handler is put back after every run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import layerinv
from layerinv import exact
from layerinv.solvers import _highs

ROOT = Path(__file__).resolve().parents[1]

# exact.closest (l_inf) on a noisy point of a random 30 x 120 x 200 net, no bound tightening:
# HiGHS's branch and bound was still running after 300 s (measured).
LONG_MILP = """
import sys, time
import numpy as np
import layerinv
from layerinv import exact
net = layerinv.random_network([30, 120, 200], seed=1)
rng = np.random.default_rng(0)
x = net.forward(rng.normal(size=30)) + 0.05 * rng.normal(size=200)
print("solving", flush=True)
try:
    exact.closest(net, x, tighten=False)
    print("finished", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""

STOP_S = 15.0
"""How long after the SIGINT the process may take to stop (measured: 0.1-6 s, HiGHS's interrupt
callbacks being rarer in some phases of branch and bound; 0.25 s at this point of the solve; a
HiGHS that ignored Ctrl-C ran on for minutes)."""


def test_ctrl_c_stops_a_long_milp_at_once():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep
           + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-c", LONG_MILP], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "solving"
        time.sleep(2.0)  # inside HiGHS's branch and bound
        process.send_signal(signal.SIGINT)
        sent = time.perf_counter()
        out, err = process.communicate(timeout=STOP_S)
        stopped = time.perf_counter() - sent
    finally:
        process.kill()
        process.wait()
    assert out.strip() == "interrupted", (out, err)
    assert process.returncode == 0, err  # no abort at exit from HiGHS's threads
    assert stopped < STOP_S, stopped


def test_run_puts_the_sigint_handler_back_and_respects_an_ignored_one():
    net = layerinv.random_network([3, 10, 20], seed=1)
    x = net.forward(np.ones(3)) + 0.01
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    exact.closest(net, x, tighten=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert exact.closest(net, x).status == "optimal"
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_run_solves_as_highs_does_outside_an_interrupt():
    # The same MILP answer through `run` (main thread: the interrupt callbacks) as through
    # HiGHS's own run.
    net = layerinv.random_network([3, 10, 20], seed=1)
    x = net.forward(np.ones(3)) + 0.01
    through_run = exact.closest(net, x)
    original = _highs.run
    try:
        _highs.run = lambda highs: highs.run()
        direct = exact.closest(net, x)
    finally:
        _highs.run = original
    assert through_run.status == direct.status == "optimal"
    np.testing.assert_allclose(through_run.distance, direct.distance, rtol=1e-9)
