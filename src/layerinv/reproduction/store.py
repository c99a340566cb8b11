"""The SQLite store of experiment trials: one row per finished trial, committed at once.

A results file holds two tables:

- `meta` (key, value): `magic` = 'layerinv-results' (what marks a file as ours),
  `schema_version`, `created_at` (UTC, ISO 8601) and `created_by` (the layerinv version).
- `trials`: experiment, trial_key, method, seed, params (JSON), metrics (JSON), seconds (the
  trial's wall time), versions (JSON: packages, Python, platform, parallelism), finished_at;
  UNIQUE (experiment, trial_key). `trial_key` is the canonical JSON of the parameters (sorted
  keys, no spaces), seed and method included, so running a grid again finds its finished trials
  by key and skips them.

Every JSON column is valid JSON, so that SQLite's JSON functions read it (`SELECT
json_extract(metrics, '$.eps') FROM trials`). JSON has no number for infinity or NaN, and
Python's bare `Infinity`/`NaN` (schema 1) made `json_valid` false and `json_extract` fail
('malformed JSON'). Decision (schema 2): a non-finite float is stored as the string "inf",
"-inf" or "nan", and `rows()` reads those strings in metrics back as floats (a metric that is
meant as one of these three strings would read back as a float: none is). A string keeps
json_extract usable (NULL would lose which of the three it was, and SQL comparisons on the
column are typed anyway). Schema-1 files are still read (Python's json reads the bare names),
and a run that writes to one marks it schema 2.

Every trial is inserted in its own transaction as soon as it finishes (WAL journal,
synchronous=FULL): a run stopped by Ctrl-C, a killed process or a lost machine keeps every
trial that finished. `INSERT OR IGNORE` makes a trial written twice harmless: the first row
stays.

One writer per file (decision): two runs on one file each computed every trial (each had
planned before the other stored anything) and printed totals that counted neither the other's
rows nor their own duplicates. A writable store now holds an advisory lock for as long as it
is open, `flock` on a sidecar file PATH.lock that holds the writer's pid and host (`WriterLock`):
a second writer is refused at once with a `ResultsBusyError` naming the file and that pid.
Not SQLite's own locks, which guard single transactions, not a run; not a lock on the
database file itself, since closing any other descriptor of that file drops SQLite's POSIX
locks on it. The kernel releases the lock when the process ends, however it ends, so it is
never stale. Readers (`readonly=True`, what `layerinv report` opens) take no lock and read
while a run writes.

Opening a file that exists is checked first on a read-only connection (SQLite's `mode=ro`):
a file that is not SQLite, an SQLite database without our `meta` magic, one written by a newer
schema, or a corrupt one (`PRAGMA quick_check`) is an error naming the path, and the file is
never written to. An empty file (0 bytes) holds nothing and becomes a new store.
A new file is built under a temporary name and hard-linked into place (which fails if the name
was taken meanwhile), so a results file appears complete or not at all.

Errors, each one line naming the path and what to do: `NotResultsFileError` (an InputError
too: the path is a directory, missing, not ours or of a newer schema; fix --db), and the
runtime failures `ResultsFileError` (corrupt; cannot be created or written: a read-only
location, no permission, a full disk, where the trials stored before are kept) and
`ResultsBusyError` (another run holds the file).

Readers never write (`ResultsStore(path, readonly=True)`, what `layerinv report` opens): the
connection is `mode=ro`, with no journal-mode switch and no checkpoint at close (a read-write
close merged a killed run's -wal into the file, changing it). So a read-only file, or one on
a read-only file system, is read where it is; there SQLite cannot create the -shm index a WAL
file needs, and a file with no unmerged -wal beside it is opened `immutable=1` instead.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import math
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from layerinv._processes import sigint_deferred
from layerinv.errors import InputError, LayerinvError

MAGIC = "layerinv-results"
SCHEMA_VERSION = 2
"""2: non-finite floats stored as the strings 'inf', '-inf', 'nan' (1: bare `Infinity`)."""
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60.0
TRIAL_COLUMNS = ("id", "experiment", "trial_key", "method", "seed", "params", "metrics",
                 "seconds", "versions", "finished_at")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    id          INTEGER PRIMARY KEY,
    experiment  TEXT NOT NULL,
    trial_key   TEXT NOT NULL,
    method      TEXT,
    seed        INTEGER,
    params      TEXT NOT NULL,
    metrics     TEXT NOT NULL,
    seconds     REAL NOT NULL,
    versions    TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    UNIQUE (experiment, trial_key)
);
"""


class ResultsFileError(LayerinvError, OSError):
    """A results file that cannot be used: corrupt, unreadable, or it cannot be created or
    written (a read-only location, a full disk). A runtime failure; its subclass
    NotResultsFileError is the usage error."""


class NotResultsFileError(ResultsFileError, InputError):
    """The path names no results file this layerinv can use: a directory, nothing (for a
    reader), a file that is not ours, or one of a newer schema. A usage error (fix --db)."""


class ResultsBusyError(ResultsFileError):
    """Another run is writing the results file: it holds the file's lock."""


# ----------------------------------------------------------------------------------- lock
class WriterLock:
    """The advisory lock of the one process writing a results file: `flock` on PATH.lock.

    Held from the opening of a writable store to its close; the kernel releases it when the
    process ends, killed or not, so a lock is never stale. The file holds the holder's pid and
    host, for the message of a refused run. A refused run fails at once (no waiting). The lock
    file is removed on release while still locked; a run that opened it just before then
    finds, once it holds its lock, that the path names another file (or none), and tries
    again on the file at the path. Readers take no lock. Without `fcntl` (Windows) there is
    no lock: two runs on one file are not prevented there, and each computes every trial.
    """

    SUFFIX = ".lock"

    def __init__(self, results: Path):
        self.results = results
        self.path = results.with_name(results.name + self.SUFFIX)
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None or self._fd is not None:  # pragma: no cover - Windows
            return
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 256, 0).decode(errors="replace").split()
                os.close(fd)
                pid, host = [*holder, "unknown", "unknown"][:2]
                raise ResultsBusyError(
                    f"results file {str(self.results)!r} is in use by another layerinv run "
                    f"(pid {pid} on {host}; lock {str(self.path)!r}): wait until it ends or "
                    f"pass --db another file; `layerinv report` can read it meanwhile"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed this file as we opened it
        self._fd = fd
        with contextlib.suppress(OSError):  # only a refused run's message reads it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            if not self.path.exists():
                raise
            return os.open(self.path, os.O_RDONLY)  # another user's lock file: lock, no pid

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # still locked: see the class docstring
        os.close(self._fd)
        self._fd = None

    usage = True  # the file named by --db is wrong: exit status 2 (see errors.py)


# ----------------------------------------------------------------------------------- JSON
def to_jsonable(value: Any) -> Any:
    """`value` with NumPy scalars and arrays turned into Python numbers and lists."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
"""How non-finite floats are stored: JSON has no number for them (see the module docstring)."""


def _map_leaves(value: Any, leaf: Any) -> Any:
    """`value` (JSON-shaped: dicts, lists, scalars) with `leaf` applied to every scalar."""
    if isinstance(value, dict):
        return {k: _map_leaves(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_leaves(v, leaf) for v in value]
    return leaf(value)


def _spell_leaf(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _spell_non_finite(value: Any) -> Any:
    return _map_leaves(value, _spell_leaf)


def _read_non_finite(value: Any) -> Any:
    """`value` with the strings 'inf', '-inf' and 'nan' turned back into floats."""
    return _map_leaves(value, lambda v: NON_FINITE.get(v, v) if isinstance(v, str) else v)


def dumps(value: Any) -> str:
    """Canonical, valid JSON: sorted keys, no spaces; non-finite floats as "inf", "-inf" and
    "nan" (strings: the bare names Python writes are not JSON, and SQLite's JSON functions
    reject them)."""
    return json.dumps(_spell_non_finite(to_jsonable(value)), sort_keys=True,
                      separators=(",", ":"), allow_nan=False)


def loads_metrics(text: str) -> Any:
    """Metrics as stored, non-finite floats read back (also the bare `Infinity` and `NaN` of
    schema-1 rows, which Python's json reads)."""
    return _read_non_finite(json.loads(text))


def trial_key(params: Mapping[str, Any]) -> str:
    """The canonical JSON of a trial's parameters: its identity in the store.

    Parameters must be JSON values (str, int, float, bool, None, lists, dicts); NaN and
    infinities are refused, since they would not compare equal to themselves.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"trial parameters must be a mapping; got {type(params).__name__}")
    try:
        return json.dumps(to_jsonable(params), sort_keys=True, separators=(",", ":"),
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"trial parameters must be JSON values (finite numbers, strings, "
                        f"lists, dicts); got {params!r}: {exc}") from None


# ----------------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class TrialRow:
    """One finished trial as stored."""

    experiment: str
    trial_key: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    seconds: float
    versions: dict[str, Any]
    finished_at: str
    method: str | None = None
    seed: int | None = None

    def record(self) -> dict[str, Any]:
        """Parameters and metrics in one dict, plus `trial_seconds` (the trial's wall time)."""
        return {**self.params, **self.metrics, "trial_seconds": self.seconds}


# ----------------------------------------------------------------------------------- store
class ResultsStore:
    """A layerinv results file (SQLite). Use as a context manager or call `close()`.

    Parameters
    ----------
    path : str or PathLike
        The file. Created (with its parent folders) if it does not exist and `create` is True.
    create : bool
        False: a missing file is a ResultsFileError.
    readonly : bool
        Open for reading only (`layerinv report`): SQLite's `mode=ro`, no lock (a run may be
        writing meanwhile), nothing written; `add` is refused. Implies create=False.

    A writable store holds the file's `WriterLock` until it is closed: a second writer, in
    this process or another, is a ResultsBusyError naming the holder's pid.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = None
        self._lock = WriterLock(self.path)
        name = repr(str(self.path))
        if self.path.is_dir():
            raise NotResultsFileError(f"results file {name} is a directory")
        if readonly:
            create = False
        new = not self.path.exists()
        if new and not create:
            raise NotResultsFileError(f"results file {name} does not exist: nothing to read")
        if not new and self.path.stat().st_size == 0 and not create:
            raise NotResultsFileError(f"results file {name} is empty: nothing to read")
        if readonly:
            check_results_file(self.path)
            self._conn = _connect_readonly(self.path)
            return
        try:
            if new:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()  # before anything is created or written: one writer per file
        except ResultsFileError:
            raise
        except OSError as exc:  # a read-only location, no permission, a full disk
            raise ResultsFileError(_write_failure(self.path, exc, creating=new)) from None
        try:
            self._open_for_writing()
        except BaseException:
            self._lock.release()
            raise

    def _open_for_writing(self) -> None:
        try:
            if not self.path.exists():
                _create_atomically(self.path)
            elif self.path.stat().st_size == 0:
                _initialise_file(self.path)  # an empty file holds nothing to lose
        except (OSError, sqlite3.Error) as exc:
            raise ResultsFileError(_write_failure(self.path, exc, creating=True)) from None
        meta = check_results_file(self.path)
        self._conn = _connect(self.path)
        if int(meta["schema_version"]) < SCHEMA_VERSION:  # its new rows follow this one
            try:
                self._conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                                   (str(SCHEMA_VERSION),))
            except sqlite3.Error as exc:
                raise ResultsFileError(_write_failure(self.path, exc)) from None

    # ------------------------------------------------------------------ lifecycle
    @property
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ResultsFileError(f"results file {str(self.path)!r} is closed")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._lock.release()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    # ------------------------------------------------------------------ reading
    def meta(self) -> dict[str, str]:
        return dict(self._connection.execute("SELECT key, value FROM meta").fetchall())

    def done_keys(self, experiment: str) -> set[str]:
        """The trial keys already finished for `experiment`."""
        cursor = self._connection.execute(
            "SELECT trial_key FROM trials WHERE experiment = ?", (experiment,))
        return {key for (key,) in cursor}

    def experiments(self) -> list[str]:
        """Experiments with at least one row, in the order of their first row."""
        cursor = self._connection.execute(
            "SELECT experiment, MIN(id) FROM trials GROUP BY experiment ORDER BY MIN(id)")
        return [name for name, _ in cursor]

    def count(self, experiment: str | None = None) -> int:
        if experiment is None:
            return int(self._connection.execute("SELECT COUNT(*) FROM trials").fetchone()[0])
        return int(self._connection.execute(
            "SELECT COUNT(*) FROM trials WHERE experiment = ?", (experiment,)).fetchone()[0])

    def rows(self, experiment: str | None = None) -> list[TrialRow]:
        """Every stored trial (of one experiment), in the order they were written."""
        return list(self.iter_rows(experiment))

    def iter_rows(self, experiment: str | None = None) -> Iterator[TrialRow]:
        query = ("SELECT experiment, trial_key, method, seed, params, metrics, seconds, "
                 "versions, finished_at FROM trials")
        args: tuple[Any, ...] = ()
        if experiment is not None:
            query += " WHERE experiment = ?"
            args = (experiment,)
        query += " ORDER BY id"
        try:
            for (name, key, method, seed, params, metrics, seconds, versions,
                 finished) in self._connection.execute(query, args):
                yield TrialRow(name, key, json.loads(params), loads_metrics(metrics),
                               float(seconds), json.loads(versions), finished, method, seed)
        except (sqlite3.DatabaseError, json.JSONDecodeError) as exc:
            raise ResultsFileError(f"results file {str(self.path)!r} holds an unreadable "
                                   f"row: {exc}") from None

    # ------------------------------------------------------------------ writing
    def add(self, experiment: str, params: Mapping[str, Any], metrics: Mapping[str, Any],
            seconds: float, versions: Mapping[str, Any] | None = None) -> bool:
        """Store one finished trial in its own transaction; False if its key was already there."""
        key = trial_key(params)
        method = params.get("method")
        seed = params.get("seed")
        values = (experiment, key, None if method is None else str(method),
                  seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
                  key, dumps(metrics), float(seconds), dumps(versions or {}), _now())
        if self.readonly:
            raise ResultsFileError(f"results file {str(self.path)!r} was opened read-only")
        conn = self._connection
        # A Ctrl-C between the insert and the commit would lose a finished trial: held.
        with sigint_deferred():
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    cursor = conn.execute(
                        "INSERT OR IGNORE INTO trials (experiment, trial_key, method, seed, "
                        "params, metrics, seconds, versions, finished_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):  # the first error matters
                            conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise ResultsFileError(_write_failure(self.path, exc, stored=True)) \
                    from None
        return cursor.rowcount == 1


def _connect(path: Path) -> sqlite3.Connection:
    """A read-write connection in autocommit mode (explicit transactions), WAL, fsync'd."""
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise ResultsFileError(f"results file {str(path)!r} cannot be opened: {exc}") from None
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as exc:
        conn.close()
        raise ResultsFileError(f"results file {str(path)!r} cannot be used: {exc}") from None
    return conn


def _write_failure(path: Path, exc: BaseException, *, creating: bool = False,
                   stored: bool = False) -> str:
    """One line for a results file that cannot be created or written: the path, the cause in
    the system's words, what to do. `stored`: trials were stored before (say they are kept)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    code = getattr(exc, "errno", None)
    elsewhere = "pass --db a path in a folder you can write"
    if code == errno.EROFS or "readonly" in text or "read-only" in text.lower():
        cause = f"the location is read-only; {elsewhere}"
    elif code in (errno.EACCES, errno.EPERM):
        cause = f"no permission to write there; {elsewhere}"
    elif code in (errno.ENOSPC, errno.EFBIG) or "full" in text or "I/O" in text:
        cause = "the disk is full or the file cannot grow; free space there or pass --db a " \
                "path on another disk"
    elif "locked" in text or "busy" in text:
        cause = "another program holds a lock on it; close it or pass --db another file"
    else:
        cause = f"it cannot be written; {elsewhere}"
    what = "create" if creating else "write"
    line = f"cannot {what} results file {str(path)!r} ({text}): {cause}"
    if stored:
        return line + "; the trials stored before are kept: run again to resume"
    if not creating:
        return line + " (`layerinv report` reads the file where it is)"
    return line


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot write the file: SQLite's `mode=ro` (a URI).

    A WAL database read in place needs its -shm index, which SQLite creates next to the file;
    on a read-only location it cannot, and the open fails (SQLITE_CANTOPEN). The file then
    holds every row unless a -wal file with rows beside it says otherwise, and nothing can
    change it there: it is opened `immutable=1` (no locks, no -shm).
    """
    name = repr(str(path))
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                               isolation_level=None)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opens lazily
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            if exc.sqlite_errorcode != sqlite3.SQLITE_CANTOPEN:
                raise
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise ResultsFileError(
                f"results file {name} cannot be read where it is: its folder is read-only and "
                f"{wal.name} beside it holds rows not yet merged into it; copy both files to a "
                f"folder you can write and read the copy")
        return sqlite3.connect(uri + "?immutable=1", uri=True, isolation_level=None)
    except sqlite3.OperationalError as exc:
        raise ResultsFileError(f"results file {name} cannot be opened: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise ResultsFileError(f"results file {name} is corrupt or unreadable ({exc}); it was "
                               f"left as it is") from None


def _initialise_file(path: Path) -> None:
    """Create our tables and meta in `path` (a new or empty file); raises sqlite3.Error (the
    caller names the file: `path` may be a temporary one)."""
    from layerinv._version import __version__

    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                         [("magic", MAGIC), ("schema_version", str(SCHEMA_VERSION)),
                          ("created_at", _now()), ("created_by", f"layerinv {__version__}")])
        conn.execute("COMMIT")
    finally:
        conn.close()


def _create_atomically(path: Path) -> None:
    """A new results file appears complete or not at all: built aside, then linked into place.

    os.link fails if `path` appeared meanwhile (another run created it): that file is then
    checked like any existing one, never replaced.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        _initialise_file(temporary)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: no race protection, same result
            if not path.exists():
                os.replace(temporary, path)
    finally:
        for leftover in (temporary, temporary.with_name(temporary.name + "-wal"),
                         temporary.with_name(temporary.name + "-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def open_results(path: str | os.PathLike[str], *, create: bool = True) -> ResultsStore:
    """`ResultsStore(path, create=create)`."""
    return ResultsStore(path, create=create)


# ----------------------------------------------------------------------------------- checks
def check_results_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Check, read-only, that `path` is a readable layerinv results store; return its meta.

    Raises ResultsFileError naming the file otherwise. Nothing is written to the file.
    """
    path = Path(path)
    name = repr(str(path))
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise ResultsFileError(f"results file {name} cannot be read: {exc}") from None
    if header != SQLITE_HEADER:
        raise NotResultsFileError(
            f"{name} is not a layerinv results file: it is not an SQLite database (its first "
            f"bytes are {header[:16]!r}); refusing to touch it. Pass --db a new path or a file "
            f"written by `layerinv reproduce`.")
    conn = _connect_readonly(path)
    try:
        check = conn.execute("PRAGMA quick_check").fetchall()
        if [tuple(r) for r in check] != [("ok",)]:
            problems = "; ".join(str(r[0]) for r in check[:3])
            raise ResultsFileError(f"results file {name} is corrupt (SQLite integrity check: "
                                   f"{problems}); it was left as it is")
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            raise NotResultsFileError(
                f"{name} is an SQLite database but not a layerinv results file (no 'meta' "
                f"table; tables: {sorted(tables) or 'none'}); refusing to touch it")
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise NotResultsFileError(f"{name} is an SQLite database but not a layerinv results "
                                   f"file (its 'meta' table is not ours: {exc})") from None
        if meta.get("magic") != MAGIC:
            raise NotResultsFileError(
                f"{name} is an SQLite database but not a layerinv results file (meta magic "
                f"{meta.get('magic')!r}, expected {MAGIC!r}); refusing to touch it")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise ResultsFileError(f"results file {name} has an unreadable schema_version "
                                   f"{meta.get('schema_version')!r}") from None
        if version > SCHEMA_VERSION:
            raise NotResultsFileError(
                f"results file {name} was written by a newer layerinv (schema {version}; this "
                f"one reads up to {SCHEMA_VERSION}); it was left as it is")
        if "trials" not in tables:
            raise ResultsFileError(f"results file {name} has no 'trials' table: corrupt")
        columns = {r[1] for r in conn.execute("PRAGMA table_info(trials)")}
        missing = [c for c in TRIAL_COLUMNS if c not in columns]
        if missing:
            raise ResultsFileError(f"results file {name}: its 'trials' table lacks the "
                                   f"columns {missing}: corrupt or foreign")
        return meta
    except sqlite3.DatabaseError as exc:
        raise ResultsFileError(f"results file {name} is corrupt or unreadable ({exc}); it was "
                               f"left as it is") from None
    finally:
        conn.close()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values in which NaN equals NaN (for comparing stored metrics)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def comparable(rows: Iterable[TrialRow], timing_fields: Mapping[str, Iterable[str]]
               ) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows keyed by (experiment, trial_key), their metrics without the timing fields.

    `timing_fields` maps an experiment name to the metric names that are wall-clock times
    (they differ from run to run); the trial's own `seconds` column is always left out.
    """
    out = {}
    for row in rows:
        skip = set(timing_fields.get(row.experiment, ()))
        out[(row.experiment, row.trial_key)] = {k: v for k, v in row.metrics.items()
                                                if k not in skip}
    return out
