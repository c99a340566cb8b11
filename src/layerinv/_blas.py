"""BLAS threading for the solvers.

The layer problems are small (at most a few hundred columns). On this project's 2-core
machines a multithreaded OpenBLAS ran them 10x slower than one thread whenever another process
was busy (median 23 ms against 2.3 ms for a 100 x 250 x 600 inversion), so the solvers run BLAS
on one thread and get parallelism from solving several samples at once (`invert(n_jobs=...)`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache, wraps
from typing import ParamSpec, TypeVar

from threadpoolctl import ThreadpoolController


@lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    # Building the controller scans the loaded libraries (~1 ms); limiting with it is ~10 us.
    return ThreadpoolController()


def single_threaded_blas() -> AbstractContextManager:
    """A context in which every loaded BLAS (NumPy's and SciPy's) runs on one thread."""
    return _controller().limit(limits=1, user_api="blas")


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
    """Decorator: run `function` with single-threaded BLAS (10 us of overhead a call)."""

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with single_threaded_blas():
            return function(*args, **kwargs)

    return wrapper
