"""BLAS threading for the solvers.

The layer problems are small (at most a few hundred columns). On this project's 2-core
machines a multithreaded OpenBLAS ran them 10x slower than one thread whenever another process
was busy (median 23 ms against 2.3 ms for a 100 x 250 x 600 inversion), so the solvers run BLAS
on one thread and get parallelism from solving several samples at once (`invert(n_jobs=...)`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache, wraps
from typing import ParamSpec, TypeVar

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    # Building the controller scans the loaded libraries (~1 ms); limiting with it is ~10 us.
    return ThreadpoolController()


# How deep this thread is inside `single_threaded_blas`: the limit is taken on entering the
# outermost context only. Re-entering threadpoolctl cost ~10 us a call, paid by every
# `on_one_thread` function of `_linalg` that the walk (already on one thread) called: 4-6 per
# sample and layer on the exact path.
_held = threading.local()


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """A context in which every loaded BLAS (NumPy's and SciPy's) runs on one thread.

    Nested uses cost nothing: only the outermost one sets (and on exit restores) the limit.
    Code inside that changes the thread count itself is not undone by a nested use.
    """
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    with _controller().limit(limits=1, user_api="blas"):
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """PyTorch on one CPU thread for the duration (restored after), if PyTorch is installed.

    Gradient descent works on (restarts x n) batches too small to gain from threads; on a
    machine whose cores were busy, two PyTorch threads took 58 s instead of 0.5 s for one
    bora2017 run (threads spin-waiting for a core). The LPs run on one BLAS thread too, so
    every method's seconds are single-threaded and comparable.
    """
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


P = ParamSpec("P")
R = TypeVar("R")


def on_one_thread(function: Callable[P, R]) -> Callable[P, R]:
    """Decorator: run `function` with single-threaded BLAS (10 us of overhead a call, none
    inside `single_threaded_blas`, where the walk and the reconstruction run)."""

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if getattr(_held, "depth", 0):
            return function(*args, **kwargs)
        with single_threaded_blas():
            return function(*args, **kwargs)

    return wrapper
