"""Map trials over local processes or a Dask distributed cluster, yielding results as they come.

`map_trials(fn, trials, shared, workers, scheduler)` calls `fn(trial, shared)` for every trial
and yields `(trial, result)` in the order they finish, so that the caller can store each result
at once. Without a scheduler it is `layerinv._processes.map_local` (in process, or local worker
processes; Ctrl-C and unguarded scripts are handled there). With one:

- Dask (`scheduler='tcp://HOST:PORT'` or a `distributed.Client`): `shared` is scattered once with
  `broadcast=True`, each chunk of trials is one `client.submit`, results come from
  `as_completed`. A worker that dies has its tasks rescheduled by the scheduler; any failed
  task is a `WorkerLostError`, and the results yielded before stay valid.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from layerinv._processes import (
    CHUNK_SECONDS,
    MIN_PARALLEL_SECONDS,
    WorkerLostError,
    make_chunks,
    map_local,
)
from layerinv.errors import LayerinvError

DASK_CONNECT_TIMEOUT_S = 30


def map_trials(fn: Callable[[Any, Any], Any], trials: Iterable[Any], shared: Any = None,
               workers: int | None = None, scheduler: Any = None, *,
               cost: Callable[[Any], float] | None = None,
               chunk_seconds: float = CHUNK_SECONDS,
               min_parallel_seconds: float = MIN_PARALLEL_SECONDS,
               setup: Callable[[], None] | None = None) -> Iterator[tuple[Any, Any]]:
    """Yield `(trial, fn(trial, shared))` for every trial, in the order they finish: on a
    Dask cluster if `scheduler` is given (a scheduler address 'tcp://HOST:PORT' or a
    connected distributed.Client; `workers` is then ignored, the cluster has its own), else
    through `layerinv._processes.map_local`, whose parameters these are (`fn`, `trials` and
    the results must be picklable, `fn` by reference, for the Dask back end too).

    Use it in a `with contextlib.closing(...)` block, or exhaust it: closing the generator
    cancels the work not yet done and ends local workers.
    """
    trials = list(trials)
    if not trials:
        return
    if scheduler is not None:
        yield from _map_dask(fn, trials, shared, scheduler, cost, chunk_seconds)
        return
    yield from map_local(fn, trials, shared, workers, cost=cost, chunk_seconds=chunk_seconds,
                         min_parallel_seconds=min_parallel_seconds, setup=setup)



_LOCALIZED: dict[int, tuple[Any, Any]] = {}


def localize(shared: Any) -> Any:
    """A copy of `shared` rebuilt by an in-band pickle round trip, once per object and process.

    Dask hands NumPy arrays over as views of its receive buffers, which can be misaligned (an
    address that is not a multiple of 8 was seen): NumPy's matmul then leaves BLAS for its own
    loop, and results differ from the local run in the last bits. Arrays rebuilt from an
    in-band pickle are freshly allocated and aligned, as in a local worker.
    """
    if shared is None:
        return None
    key = id(shared)
    cached = _LOCALIZED.get(key)
    if cached is None or cached[0] is not shared:
        cached = (shared, pickle.loads(pickle.dumps(shared, protocol=4)))
        _LOCALIZED[key] = cached
    return cached[1]


def _run_chunk_given(fn: Callable[[Any, Any], Any], chunk: list[Any], shared: Any
                     ) -> list[Any]:
    own = localize(shared)
    return [fn(trial, own) for trial in chunk]


def _map_dask(fn: Callable[[Any, Any], Any], trials: list[Any], shared: Any, scheduler: Any,
              cost: Callable[[Any], float] | None,
              chunk_seconds: float) -> Iterator[tuple[Any, Any]]:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise LayerinvError(f"--scheduler needs dask.distributed: {exc}") from None
    own = not isinstance(scheduler, Client)
    if own:
        try:
            client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise LayerinvError(f"cannot reach the Dask scheduler {scheduler!r}: "
                                f"{type(exc).__name__}: {exc}") from None
    else:
        client = scheduler
    futures: list[Any] = []
    try:
        n_workers = max(1, sum(info.get("nthreads", 1) for info in
                               client.scheduler_info().get("workers", {}).values()))
        chunks = make_chunks(trials, n_workers, cost, chunk_seconds)
        # A list, so that a dict-shaped shared object is scattered whole, not per key.
        shared_ref = client.scatter([shared], broadcast=True, hash=False)[0]
        by_key = {}
        for chunk in chunks:
            future = client.submit(_run_chunk_given, fn, chunk, shared_ref, pure=False)
            by_key[future.key] = chunk
            futures.append(future)
        for future in as_completed(futures):
            try:
                results = future.result()
            except Exception as exc:  # fn's own errors are its business; this is the cluster
                raise WorkerLostError(
                    f"the Dask cluster lost a task ({type(exc).__name__}: {exc}); the finished "
                    "trials are kept: run again to resume") from None
            yield from zip(by_key[future.key], results, strict=True)
            future.release()
    finally:
        for future in futures:
            if not future.done():
                future.cancel()
        if own:
            client.close()
