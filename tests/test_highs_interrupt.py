"""Ctrl-C stops a HiGHS solve (`solvers._highs.run`): a real SIGINT to a real process in the
middle of a MILP that would run for minutes; the SIGINT handler is put back after every run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import source_env

import layerinv
from layerinv import exact
from layerinv.solvers import _highs

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


def test_ctrl_c_stops_a_long_milp():
    process = subprocess.Popen([sys.executable, "-c", LONG_MILP], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=source_env())
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
        # An ignored Ctrl-C stays ignored: the long MILP runs to its time limit.
        long_net = layerinv.random_network([30, 120, 200], seed=1)
        rng = np.random.default_rng(0)
        noisy = long_net.forward(rng.normal(size=30)) + 0.05 * rng.normal(size=200)
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            status = exact.closest(long_net, noisy, tighten=False, time_limit=3).status
        except KeyboardInterrupt:
            pytest.fail("an ignored SIGINT stopped the MILP")
        assert status == "time_limit"
    finally:
        signal.signal(signal.SIGINT, previous)


def test_run_solves_as_highs_does_outside_an_interrupt(monkeypatch):
    # The same MILP answer through `run` (main thread: the interrupt callbacks) as through
    # HiGHS's own run.
    net = layerinv.random_network([3, 10, 20], seed=1)
    x = net.forward(np.ones(3)) + 0.01
    through_run = exact.closest(net, x)
    monkeypatch.setattr(_highs, "run", lambda highs: highs.run())
    direct = exact.closest(net, x)
    assert through_run.status == direct.status == "optimal"
    np.testing.assert_allclose(through_run.distance, direct.distance, rtol=1e-9)
