"""Map work over local processes, yielding results as they come.

`map_local(fn, trials, shared, workers)` calls `fn(trial, shared)` for every trial and yields
`(trial, result)` in the order they finish, so that the caller can keep each result at once.
It is the core's only process pool: the walk's `n_jobs` and the reproduction system's local
runs both use it (`layerinv.reproduction.parallel` adds Dask clusters on top). Two back ends:

- in process (`workers=1`, or when the whole map is estimated under `min_parallel_seconds`):
  no pool at all; the simplest to debug, and the notes (../shared/notes/lp-solvers.md) measured
  a 2-process pool to pay only for batches holding more than about 1 s of work.
- local processes (default, one per usable core): `concurrent.futures.ProcessPoolExecutor` on a
  'forkserver' context ('spawn' where there is none), so no worker inherits the parent's
  threads or locks. `shared` (e.g. a network) is pickled once per worker through the pool's
  `initializer`, never per trial. Workers ignore SIGINT: Ctrl-C reaches the parent only, which
  cancels what has not started and terminates the workers at once (the chunks they were
  running are lost; every result already yielded stays valid), then waits until they are
  gone (`_stop_pool`; a second Ctrl-C meanwhile is held, `sigint_deferred`). The parent
  never takes a Ctrl-C inside concurrent.futures' own code, where it could leave a future's
  lock held and hang the exit: it waits in slices of WAIT_POLL_S with the signal held
  (`_wait_some`). Measured: `layerinv reproduce success-vs-k --workers 2` exits 0.4-0.8 s
  after a Ctrl-C (56 of 56 tries).
  Workers import the main script again, so a script asking for workers from its top level
  without an `if __name__ == "__main__":` guard is refused first (`check_main_guarded`,
  an UnguardedMainError naming the script and the fix), whatever the size of the map.

Trials are grouped into chunks holding about `chunk_seconds` of estimated work (`cost(trial)`,
default 1 s per trial), so that millisecond trials do not pay a round trip each; a chunk is
yielded trial by trial when it returns, and at most one chunk per worker is lost when a worker
dies. Catch exceptions inside `fn` to keep going: they propagate as raised, and a worker that
dies (killed, out of memory) is a `WorkerLostError`; the results yielded before stay valid.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from layerinv.errors import InputError, LayerinvError

CHUNK_SECONDS = 0.5
MIN_PARALLEL_SECONDS = 1.5
CHUNKS_PER_WORKER = 4
"""Chunks are also capped so that each worker gets at least this many (load balance)."""
PARENT_POLL_S = 1.0
STOP_JOIN_S = 5.0
"""How long a terminated worker may take to exit before it is killed."""
WAIT_POLL_S = 0.2
"""The longest a Ctrl-C waits while the pool runs (see _wait_some)."""

_SHARED: Any = None
"""The shared object of this worker process (set by the pool initializer)."""


class WorkerLostError(LayerinvError, RuntimeError):
    """A worker process died (killed or out of memory) in the middle of a map."""


class UnguardedMainError(LayerinvError, RuntimeError):
    """Worker processes were asked for from a script's top level without a `__main__` guard:
    each worker would run the script again. The caller's mistake (fix the script)."""

    usage = True


# ------------------------------------------------------------------------------- helpers
def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """None or -1: every usable core; -j (scikit-learn's rule): all but j - 1; else a positive
    int."""
    if workers is None:
        return usable_cores()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers == 0:
        raise InputError(f"workers must be a positive int, a negative int (-1: every core) or "
                         f"None (every core); got {workers!r}")
    return workers if workers > 0 else max(1, usable_cores() + 1 + workers)


def local_workers(trials: Sequence[Any], workers: int | None,
                 cost: Callable[[Any], float] | None = None,
                  min_parallel_seconds: float = MIN_PARALLEL_SECONDS) -> int:
    """The local processes `map_trials` uses for these trials: 1 means in this process."""
    n = min(resolve_workers(workers), max(1, len(trials)))
    total = sum(1.0 if cost is None else float(cost(t)) for t in trials)
    return 1 if total < min_parallel_seconds else n


def make_chunks(trials: Sequence[Any], workers: int,
                cost: Callable[[Any], float] | None = None,
                chunk_seconds: float = CHUNK_SECONDS) -> list[list[Any]]:
    """Consecutive trials grouped into chunks of about `chunk_seconds` of estimated work."""
    if not trials:
        return []
    cap = max(1, -(-len(trials) // (workers * CHUNKS_PER_WORKER)))
    chunks: list[list[Any]] = []
    current: list[Any] = []
    load = 0.0
    for trial in trials:
        current.append(trial)
        load += 1.0 if cost is None else float(cost(trial))
        if load >= chunk_seconds or len(current) >= cap:
            chunks.append(current)
            current, load = [], 0.0
    if current:
        chunks.append(current)
    return chunks


def _init_worker(shared: Any, setup: Callable[[], None] | None, parent: int) -> None:
    global _SHARED
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="layerinv-watch-parent").start()
    _SHARED = shared
    if setup is not None:
        setup()


def _watch_parent(parent: int, every: float = PARENT_POLL_S) -> None:
    """End this worker once the process that started the pool is gone.

    A parent killed with SIGKILL cannot stop its pool, and idle pool workers would wait on
    their task queue for ever (they hold both ends of its pipe, so they never see EOF).
    """
    while True:
        time.sleep(every)
        if not _alive(parent):
            os._exit(1)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or the pid now belongs to another
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (macOS): kill(0) is all there is
        return True
    return state not in (b"Z", b"X")


def _run_chunk_local(fn: Callable[[Any, Any], Any], chunk: list[Any]) -> list[Any]:
    return [fn(trial, _SHARED) for trial in chunk]


def check_main_guarded() -> None:
    """Refuse worker processes asked for from the top level of an unguarded script.

    A forkserver or spawn worker imports the main script again (the forkserver does, to
    preload it). A script whose top level calls `invert(..., n_jobs=2)` without
    `if __name__ == "__main__":` then ran itself again there, the nested pool failed
    ("bootstrapping phase"), the forkserver died and the parent got a BrokenPipeError. Here
    the frame running the main module's top level is found on the stack and the script's
    source read: a call on a line outside an `if __name__ == "__main__":` body is an
    UnguardedMainError naming the script, the line and the fix, before any process starts.
    Interactive sessions, `python -c`, `python -m package` (whose `__main__` module
    multiprocessing does not import again) and code run after the main module has finished
    are not concerned.
    """
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    spec_name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if spec_name == "__main__" or spec_name.endswith(".__main__"):
        return  # `python -m package`: multiprocessing never imports a package's __main__ again
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_globals is getattr(main, "__dict__", None)
                                     and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None or not script:
        return
    try:
        tree = ast.parse(Path(script).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return  # no source to read: let multiprocessing speak for itself
    line = frame.f_lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.body \
                and node.body[0].lineno <= line <= (node.body[-1].end_lineno or line):
            return
    raise UnguardedMainError(
        f"worker processes (n_jobs/workers > 1) were started from the top level of the script "
        f"{script!r} (line {line}), which each worker would run again: put the script's code "
        f"under `if __name__ == \"__main__\":`, or use n_jobs=1")


def _is_main_test(test: ast.expr) -> bool:
    """`__name__ == "__main__"`, either way round."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    values = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(values) == 1


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


# ------------------------------------------------------------------------------- the map
def map_local(fn: Callable[[Any, Any], Any], trials: Iterable[Any], shared: Any = None,
              workers: int | None = None, *,
              cost: Callable[[Any], float] | None = None,
              chunk_seconds: float = CHUNK_SECONDS,
              min_parallel_seconds: float = MIN_PARALLEL_SECONDS,
              setup: Callable[[], None] | None = None) -> Iterator[tuple[Any, Any]]:
    """Yield `(trial, fn(trial, shared))` for every trial, in the order they finish (locally).

    Parameters
    ----------
    fn : callable (trial, shared) -> result
        Must be picklable by reference (a module-level function) for the process
        back end; trials and results must be picklable.
    trials : iterable
    shared : object
        Built once by the caller and sent once to each worker.
    workers : int, optional
        Local processes (None or -1: every usable core; 1: in this process).
    cost : callable trial -> float, optional
        Estimated seconds of one trial, for chunking (default 1 s per trial).
    min_parallel_seconds : float
        Below this much estimated work in all, local runs stay in process (a pool costs
        about a second to start).
    setup : callable, optional
        Run once in each local worker process (and once here for the in-process back end).

    Use it in a `with contextlib.closing(...)` block, or exhaust it: closing the generator
    cancels the work not yet done and ends local workers.
    """
    trials = list(trials)
    if not trials:
        return
    if resolve_workers(workers) > 1 and len(trials) > 1:
        # Whatever the size of this map: a script that works on small data only is a trap.
        check_main_guarded()
    n_workers = local_workers(trials, workers, cost, min_parallel_seconds)
    if n_workers == 1:
        if setup is not None:
            setup()
        for trial in trials:
            yield trial, fn(trial, shared)
        return
    yield from _map_local(fn, trials, shared, n_workers, cost, chunk_seconds, setup)


def _map_local(fn: Callable[[Any, Any], Any], trials: list[Any], shared: Any, workers: int,
               cost: Callable[[Any], float] | None, chunk_seconds: float,
               setup: Callable[[], None] | None) -> Iterator[tuple[Any, Any]]:
    chunks = make_chunks(trials, workers, cost, chunk_seconds)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context(),
                               initializer=_init_worker,
                               initargs=(shared, setup, os.getpid()))
    pending: dict[Future, list[Any]] = {}
    clean = False
    try:
        with sigint_deferred():  # submit() takes the pool's locks (see _wait_some)
            for chunk in chunks:
                pending[pool.submit(_run_chunk_local, fn, chunk)] = chunk
        while pending:
            for future in _wait_some(pending, workers):
                chunk = pending.pop(future)
                try:
                    with sigint_deferred():
                        results = future.result()
                except BrokenProcessPool:
                    raise WorkerLostError(
                        "a worker process died (killed, or out of memory) with "
                        f"{sum(len(c) for c in pending.values()) + len(chunk)} trials not "
                        "done; the finished ones are kept: run again to resume") from None
                yield from zip(chunk, results, strict=True)
        clean = True
    finally:
        if clean:
            pool.shutdown(wait=True)
        else:
            _stop_pool(pool)


def _wait_some(pending: dict[Future, Any], workers: int) -> set[Future]:
    """Wait until one of the pending futures is done; a Ctrl-C meanwhile comes out as a
    KeyboardInterrupt within WAIT_POLL_S, raised outside `wait()`.

    Raised inside `wait()`, a KeyboardInterrupt could land while it held some futures' locks
    (it takes every one of them) and leave them held: the pool's manager thread then blocked
    on them for ever, and the interpreter's exit, which joins that thread, with it (1 Ctrl-C in
    11 hung so). Only the oldest futures are waited on: the pool hands work to its workers in
    submission order and queues at most one item beyond them, so no other can finish first,
    and each wait costs O(workers) instead of O(pending) (thousands of chunks).
    """
    window = list(itertools.islice(pending, 2 * workers + 2))
    while True:
        with sigint_deferred():
            done, _ = wait(window, timeout=WAIT_POLL_S, return_when=FIRST_COMPLETED)
        if done:
            return done


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now (Ctrl-C, an error, a close).

    The workers are read before `shutdown()`, which sets `pool._processes` to None (CPython
    3.9+): read after it, no worker was terminated, each went on with its chunk, and the
    pool's manager thread, which the interpreter joins at exit, waited for them, so that a
    Ctrl-C never ended the command. A second Ctrl-C waits until the workers are gone.
    """
    with sigint_deferred():
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
        for process in processes:
            with contextlib.suppress(Exception):
                process.join(timeout=STOP_JOIN_S)
                if process.is_alive():  # SIGTERM is not handled by the workers: unlikely
                    process.kill()
                    process.join(timeout=STOP_JOIN_S)


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block and deliver it when the block ends.

    For work that must not be cut in half: a trial's commit (a KeyboardInterrupt between the
    insert and the commit would lose a trial already reported as finished) and the stop of a
    pool. The handler in place before is called at the end, as if the signal came then (the
    default one raises KeyboardInterrupt). Only the main thread receives signals; elsewhere,
    and where SIGINT is ignored or not handled by Python, the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # SIG_IGN, SIG_DFL or a handler installed outside Python
        yield
        return
    held: list[Any] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            previous(signal.SIGINT, held[0])
