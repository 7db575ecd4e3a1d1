"""The warehouse lock: readers wait a bounded time, then fail with one line naming the writer."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from odds_pipeline import warehouse
from odds_pipeline.warehouse import WarehouseBusy, writer_lock_info

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_ID = "0a1b2c3d-run-holding-the-lock"

_HOLDER = textwrap.dedent(
    """
    import sys, time
    from odds_pipeline.warehouse import connect
    con = connect(sys.argv[1], holder="test writer")
    con.execute("CREATE TABLE IF NOT EXISTS t (a INTEGER)")
    con.execute("CHECKPOINT")
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)


@contextmanager
def hold_writer(
    path: Path, seconds: float = 30.0, run_id: str | None = RUN_ID
) -> Iterator[subprocess.Popen]:
    """Another process holding `path` open for writing (killed on exit; bounded by `seconds`)."""
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_RUN_ID"}
    if run_id:
        env["DAGSTER_RUN_ID"] = run_id
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(seconds)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def dead_pid() -> int:
    """The pid of a process that has exited (a writer killed hard leaves such a sidecar)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def test_reader_waits_then_raises_one_line_naming_the_run(tmp_path):
    db = tmp_path / "w.duckdb"
    with hold_writer(db) as proc:
        info = writer_lock_info(db)
        assert info is not None and info["pid"] == proc.pid and info["run_id"] == RUN_ID
        start = time.monotonic()
        with pytest.raises(WarehouseBusy) as caught:
            warehouse.connect(db, read_only=True, timeout_s=1.0)
        waited = time.monotonic() - start
    message = str(caught.value)
    assert 1.0 <= waited < 4.0, waited
    assert len(message.splitlines()) == 1
    assert str(db) in message and "being written" in message
    assert RUN_ID in message and str(proc.pid) in message
    assert isinstance(caught.value, RuntimeError)


def test_reader_gets_in_once_the_writer_closes(tmp_path):
    db = tmp_path / "w.duckdb"
    with hold_writer(db, seconds=1.5):
        con = warehouse.connect(db, read_only=True, timeout_s=30.0)
    try:
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    finally:
        con.close()


def test_writer_sidecar_names_pid_run_and_holder_and_goes_on_close(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_RUN_ID", "run-42")
    db = tmp_path / "w.duckdb"
    with warehouse.connection(db, holder="odds-pipeline drop-load") as con:
        con.execute("CREATE TABLE t (a INTEGER)")
        sidecar = json.loads(Path(f"{db}.writer.json").read_text())
        assert sidecar["pid"] == os.getpid()
        assert sidecar["run_id"] == "run-42"
        assert sidecar["holder"] == "odds-pipeline drop-load"
        assert "started_at" in sidecar
        assert writer_lock_info(db) == sidecar
    assert not Path(f"{db}.writer.json").exists()
    assert writer_lock_info(db) is None


def test_raw_connect_keeps_its_api_and_cleans_up(tmp_path):
    db = tmp_path / "w.duckdb"
    con = warehouse.connect(db)
    assert isinstance(con, duckdb.DuckDBPyConnection)
    assert con.execute("SELECT current_setting('TimeZone')").fetchone()[0] == "UTC"
    assert writer_lock_info(db)["pid"] == os.getpid()
    warehouse.close(con)
    assert writer_lock_info(db) is None
    con = warehouse.connect(db)  # closed the plain way, then collected: sidecar goes too
    con.close()
    del con
    gc.collect()
    assert not Path(f"{db}.writer.json").exists()


def test_nested_writers_in_one_process_keep_the_sidecar_until_the_last_closes(tmp_path):
    db = tmp_path / "w.duckdb"
    outer = warehouse.connect(db)
    inner = warehouse.connect(db)
    warehouse.close(inner)
    assert writer_lock_info(db) is not None
    warehouse.close(outer)
    assert writer_lock_info(db) is None


def test_sidecar_of_a_dead_process_is_ignored(tmp_path):
    db = tmp_path / "w.duckdb"
    Path(f"{db}.writer.json").write_text(json.dumps({"pid": dead_pid(), "run_id": "gone"}))
    assert writer_lock_info(db) is None


def test_message_without_a_sidecar_still_names_the_process(tmp_path):
    db = tmp_path / "w.duckdb"
    with hold_writer(db, run_id=None) as proc:
        Path(f"{db}.writer.json").unlink()
        with pytest.raises(WarehouseBusy) as caught:
            warehouse.connect(db, read_only=True, timeout_s=0.3)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and str(db) in message and str(proc.pid) in message


def test_other_errors_are_not_retried(tmp_path):
    start = time.monotonic()
    with pytest.raises(duckdb.IOException, match="does not exist"):
        warehouse.connect(tmp_path / "missing.duckdb", read_only=True, timeout_s=10.0)
    assert time.monotonic() - start < 2.0


def test_default_reader_wait_is_configurable(monkeypatch):
    monkeypatch.delenv(warehouse.READ_WAIT_ENV, raising=False)
    assert warehouse.default_wait_s(read_only=True) == pytest.approx(10.0)
    monkeypatch.setenv(warehouse.READ_WAIT_ENV, "0.5")
    assert warehouse.default_wait_s(read_only=True) == pytest.approx(0.5)
    assert warehouse.default_wait_s(read_only=False) >= 10.0


def test_nested_transactions_join_the_outer_one_instead_of_aborting_it():
    """DuckDB 2.0 aborts the open transaction when a second BEGIN fails: the helper must not try."""
    import duckdb

    from odds_pipeline.warehouse import transaction

    con = duckdb.connect()
    con.execute("CREATE TABLE t (x INTEGER)")
    with transaction(con):
        con.execute("INSERT INTO t VALUES (1)")
        with transaction(con):
            con.execute("INSERT INTO t VALUES (2)")
        con.execute("INSERT INTO t VALUES (3)")
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 3
    try:
        with transaction(con):
            con.execute("INSERT INTO t VALUES (4)")
            with transaction(con):
                raise RuntimeError("inner failure")
    except RuntimeError:
        pass
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 3  # the whole outer rolled back
