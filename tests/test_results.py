"""The SQLite results store: rows, keys, resumability and refusing files that are not ours."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import numpy as np
import pytest

from layerinv import LayerinvError
from layerinv.reproduction.store import (
    MAGIC,
    SCHEMA_VERSION,
    ResultsFileError,
    ResultsStore,
    check_results_file,
    comparable,
    json_equal,
    trial_key,
)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_trial_key_is_canonical_json():
    a = trial_key({"method": "linf", "k": 10, "seed": 0})
    b = trial_key({"seed": 0, "k": 10, "method": "linf"})
    assert a == b == '{"k":10,"method":"linf","seed":0}'
    assert trial_key({"x": np.float64(0.5), "n": np.int64(3)}) == '{"n":3,"x":0.5}'
    with pytest.raises(TypeError, match="JSON"):
        trial_key({"x": float("nan")})
    with pytest.raises(TypeError, match="JSON"):
        trial_key({"x": object()})


def test_rows_are_written_read_back_and_deduplicated(tmp_path):
    path = tmp_path / "sub" / "r.sqlite"
    with ResultsStore(path) as store:
        meta = store.meta()
        assert meta["magic"] == MAGIC and meta["schema_version"] == str(SCHEMA_VERSION)
        assert "created_at" in meta
        params = {"method": "linf", "seed": 3, "k": 10}
        metrics = {"rel_error": np.float64(1e-9), "success": np.bool_(True),
                   "bound": float("inf"), "status": "optimal", "z": np.arange(3.0)}
        assert store.add("exp", params, metrics, 0.25, {"numpy": np.__version__})
        assert not store.add("exp", dict(reversed(list(params.items()))), {"other": 1}, 9.0)
        assert store.count() == store.count("exp") == 1
        assert store.done_keys("exp") == {trial_key(params)}
        assert store.done_keys("other") == set()
        (row,) = store.rows("exp")
        assert row.params == params and row.method == "linf" and row.seed == 3
        assert row.metrics == {"rel_error": 1e-9, "success": True, "bound": float("inf"),
                               "status": "optimal", "z": [0.0, 1.0, 2.0]}
        assert row.seconds == 0.25 and row.versions == {"numpy": np.__version__}
        assert row.record()["trial_seconds"] == 0.25 and row.record()["k"] == 10
    # Reopening finds the same rows; the journal is WAL.
    with ResultsStore(path) as store:
        assert store.count() == 1 and store.experiments() == ["exp"]
        mode = store._connection.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    conn = sqlite3.connect(path)
    columns = [r[1] for r in conn.execute("PRAGMA table_info(trials)")]
    conn.close()
    for name in ("experiment", "trial_key", "params", "metrics", "seconds", "versions",
                 "finished_at", "method", "seed"):
        assert name in columns


def test_a_file_that_is_not_sqlite_is_refused_and_untouched(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("my thesis notes, not a database\n" * 50)
    before = digest(path)
    with pytest.raises(ResultsFileError, match="not an SQLite database") as info:
        ResultsStore(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, LayerinvError)
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"]


def test_a_foreign_sqlite_database_is_refused_and_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.execute("INSERT INTO people VALUES ('ada')")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(ResultsFileError, match="not a layerinv results file") as info:
        ResultsStore(path)
    assert str(path) in str(info.value)
    assert digest(path) == before
    # A 'meta' table that is not ours is refused too.
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('magic', 'somebody-else')")
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(ResultsFileError, match="not a layerinv results file"):
        ResultsStore(path)
    assert digest(path) == before


def test_a_corrupt_results_file_is_refused_and_untouched(tmp_path):
    path = tmp_path / "r.sqlite"
    with ResultsStore(path) as store:
        for i in range(300):
            store.add("exp", {"i": i, "seed": 0, "method": "linf"}, {"x": "y" * 200}, 0.1)
    # Fold the WAL into the file, then damage pages in the middle (the header stays valid).
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    for offset in range(4096, len(data) - 100, 1500):
        data[offset:offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(ResultsFileError, match="corrupt") as info:
        ResultsStore(path)
    assert str(path) in str(info.value)
    assert digest(path) == before


def test_truncated_file_with_sqlite_header_is_refused(tmp_path):
    path = tmp_path / "t.sqlite"
    with ResultsStore(path) as store:
        store.add("exp", {"i": 1, "seed": 0}, {"x": 1}, 0.1)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = path.read_bytes()
    path.write_bytes(data[:100])
    before = digest(path)
    with pytest.raises(ResultsFileError):
        ResultsStore(path)
    assert digest(path) == before


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                 (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(ResultsFileError, match="newer layerinv"):
        ResultsStore(path)


def test_missing_or_empty_files(tmp_path):
    with pytest.raises(ResultsFileError, match="does not exist"):
        ResultsStore(tmp_path / "none.sqlite", create=False)
    assert not (tmp_path / "none.sqlite").exists()
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(ResultsFileError, match="is empty"):
        ResultsStore(empty, create=False)
    with ResultsStore(empty) as store:  # nothing to lose: it becomes a new store
        assert store.count() == 0
    assert check_results_file(empty)["magic"] == MAGIC
    with pytest.raises(ResultsFileError, match="directory"):
        ResultsStore(tmp_path)


def test_comparable_leaves_out_timing_fields(tmp_path):
    with ResultsStore(tmp_path / "a.sqlite") as a, ResultsStore(tmp_path / "b.sqlite") as b:
        a.add("e", {"i": 1}, {"err": float("nan"), "seconds": 0.1, "s": "ok"}, 1.0)
        b.add("e", {"i": 1}, {"err": float("nan"), "seconds": 0.3, "s": "ok"}, 2.0)
        ra = comparable(a.rows(), {"e": ("seconds",)})
        rb = comparable(b.rows(), {"e": ("seconds",)})
    assert ra.keys() == rb.keys()
    assert all(json_equal(ra[k], rb[k]) for k in ra)
    assert not json_equal({"x": 1.0}, {"x": 1.0 + 1e-15})
    assert json.loads(next(iter(ra))[1]) == {"i": 1}
