"""DuckDB access, once: connect in UTC with a bounded wait on a writer's lock, transactions, quoting.

Every module that touches the warehouse goes through here, so the lock behaviour and the
transaction semantics (join a caller's open transaction instead of failing) are the same
everywhere.

The lock: DuckDB lets one process open a file for writing, and a writing process excludes
every reader for as long as its connection is open. So:

* a connection that finds the file locked waits with exponential backoff up to a bounded
  total (readers 10 s, writers 120 s by default; ``$ODDS_PIPELINE_READ_WAIT_S`` and
  ``$ODDS_PIPELINE_WRITE_WAIT_S``), then raises `WarehouseBusy`: one line naming the file and
  who holds it, which the CLI prints without a traceback;
* a writer leaves ``<db>.writer.json`` (pid, start, ``$DAGSTER_RUN_ID``, holder) beside the
  file while it is open, so that line can say *which run* is writing;
* a waiting reader leaves ``<db>.reader-waiting.<pid>.<n>`` so a long multi-load writer
  (`OddsStore.replace_loads`) can close between loads and let it in (`readers_waiting`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

READ_WAIT_ENV = "ODDS_PIPELINE_READ_WAIT_S"
WRITE_WAIT_ENV = "ODDS_PIPELINE_WRITE_WAIT_S"
RUN_ID_ENV = "DAGSTER_RUN_ID"
DEFAULT_READ_WAIT_S = 10.0
# Writers queue behind readers (checks, sensors, the CLI) that hold the file for seconds, and
# behind each other only outside Dagster (inside, the `duckdb_writer` pool serialises them).
DEFAULT_WRITE_WAIT_S = 120.0
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 0.5  # short enough that a reader notices a writer's pause between loads

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


class WarehouseBusy(RuntimeError):
    """The warehouse stayed locked by another process for the whole wait.

    ``str()`` is one line for an on-call engineer: the file, who holds it (the Dagster run
    when known), and how long we waited.
    """

    def __init__(
        self,
        path: Path,
        *,
        waited_s: float,
        read_only: bool,
        writer: dict[str, Any] | None = None,
        lock_pid: int | None = None,
    ):
        self.path = path
        self.waited_s = waited_s
        self.writer = writer
        self.lock_pid = lock_pid
        super().__init__(self._message(read_only))

    def _message(self, read_only: bool) -> str:
        gave_up = f"gave up after {self.waited_s:.1f} s"
        if self.writer:
            who = []
            if self.writer.get("run_id"):
                who.append(f"Dagster run {self.writer['run_id']}")
            details = [f"pid {self.writer['pid']}"]
            if self.writer.get("holder"):
                details.append(str(self.writer["holder"]))
            if self.writer.get("started_at"):
                details.append(f"since {self.writer['started_at']}")
            who.append(f"({', '.join(details)})")
            return (
                f"warehouse {self.path} is being written by {' '.join(who)}; {gave_up}: "
                "retry when it finishes"
            )
        pid = f" (pid {self.lock_pid})" if self.lock_pid else ""
        state = (
            "is being written by another process" if read_only else "is in use by another process"
        )
        return f"warehouse {self.path} {state}{pid}; {gave_up}: retry when it finishes"


def default_wait_s(read_only: bool) -> float:
    """How long a connection waits for the lock before `WarehouseBusy` (env overrides)."""
    env, default = (
        (READ_WAIT_ENV, DEFAULT_READ_WAIT_S)
        if read_only
        else (WRITE_WAIT_ENV, DEFAULT_WRITE_WAIT_S)
    )
    raw = os.environ.get(env, "").strip()
    try:
        return max(0.0, float(raw)) if raw else default
    except ValueError:
        return default


def connect(
    path: str | Path,
    *,
    read_only: bool = False,
    timeout_s: float | None = None,
    holder: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse in UTC, waiting (bounded, with backoff) while another process holds it.

    Returns the plain DuckDB connection. A writer's sidecar goes when `close` is called, when
    the connection is garbage-collected or at interpreter exit; prefer `connection` (a context
    manager) or `close` over ``con.close()`` so it goes at once. ``holder`` says in the sidecar
    what holds the lock (e.g. ``"odds-pipeline drop-load"``). Errors other than a lock held
    elsewhere (missing file, same-process configuration clash) are raised at once.
    """
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    budget = default_wait_s(read_only) if timeout_s is None else max(0.0, timeout_s)
    start = time.monotonic()
    delay = FIRST_BACKOFF_S
    waiting: Path | None = None
    try:
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                held = _LOCK_HOLDER.search(str(exc))
                if held is None and "Could not set lock" not in str(exc):
                    raise
                waited = time.monotonic() - start
                if waited >= budget:
                    lock_pid = int(held["pid"]) if held else None
                    writer = writer_lock_info(path)
                    if writer is not None and lock_pid is not None and writer["pid"] != lock_pid:
                        writer = None  # left by a process that no longer holds the file
                    raise WarehouseBusy(
                        path, waited_s=waited, read_only=read_only, writer=writer, lock_pid=lock_pid
                    ) from exc
                if read_only and waiting is None:
                    waiting = _announce_waiting_reader(path)
                time.sleep(min(delay * random.uniform(0.8, 1.2), budget - waited))
                delay = min(delay * 2, MAX_BACKOFF_S)
    finally:
        if waiting is not None:
            waiting.unlink(missing_ok=True)
    con.execute("SET TimeZone='UTC'")
    if not read_only and _on_disk(path):
        _track_writer(con, path, holder)
    return con


def close(con: duckdb.DuckDBPyConnection) -> None:
    """Close a connection from `connect` and, for the last writer of this process, its sidecar."""
    finalizer = _FINALIZERS.get(id(con))
    con.close()
    if finalizer is not None:
        finalizer()


@contextmanager
def connection(
    path: str | Path,
    *,
    read_only: bool = False,
    timeout_s: float | None = None,
    holder: str | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """`connect` for the length of a block; closed (and the sidecar removed) on the way out."""
    con = connect(path, read_only=read_only, timeout_s=timeout_s, holder=holder)
    try:
        yield con
    finally:
        close(con)


# ---------------------------------------------------------------- who holds the lock


def sidecar_path(path: str | Path) -> Path:
    """``<db>.writer.json`` beside the file (resolved, so every spelling of a path agrees)."""
    return Path(f"{Path(path).resolve()}.writer.json")


def writer_lock_info(path: str | Path) -> dict[str, Any] | None:
    """The writer's sidecar (pid, started_at, run_id, holder, host) if its process is alive."""
    try:
        info = json.loads(sidecar_path(path).read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if info.get("host") not in (None, socket.gethostname()):
        return info  # another machine's process: cannot check, trust the file
    try:
        since = datetime.fromisoformat(info["started_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        since = None
    return info if pid_alive(pid, since=since) else None


def pid_alive(pid: int, *, since: float | None = None) -> bool:
    """Whether process ``pid`` runs; with ``since`` (epoch s), also that it started by then.

    The start-time check (Linux ``/proc``) tells a reused pid from the original process.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    if since is not None:
        started = _process_start(pid)
        if started is not None and started > since + 2.0:  # /proc's boot time is whole seconds
            return False
    return True


def _process_start(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _on_disk(path: Path) -> bool:
    return str(path) not in ("", ":memory:") and not str(path).startswith(":memory:")


# Open writer connections per sidecar in this process: the sidecar goes with the last one.
_WRITERS: dict[str, int] = {}
_FINALIZERS: dict[int, weakref.finalize] = {}
_REGISTRY_LOCK = threading.RLock()  # re-entrant: a finalizer may run during a GC inside it


def _track_writer(con: duckdb.DuckDBPyConnection, path: Path, holder: str | None) -> None:
    key = str(sidecar_path(path))
    with _REGISTRY_LOCK:
        if _WRITERS.get(key, 0) == 0:
            info = {
                "pid": os.getpid(),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "run_id": os.environ.get(RUN_ID_ENV) or None,
                "holder": holder,
                "host": socket.gethostname(),
            }
            tmp = Path(f"{key}.{os.getpid()}.tmp")
            with contextlib.suppress(OSError):  # the sidecar is advice; never fail a write on it
                tmp.write_text(json.dumps(info))
                tmp.replace(key)
        _WRITERS[key] = _WRITERS.get(key, 0) + 1
        _FINALIZERS[id(con)] = weakref.finalize(con, _release_writer, key, id(con))


def _release_writer(key: str, con_id: int) -> None:
    with _REGISTRY_LOCK:
        _FINALIZERS.pop(con_id, None)
        left = _WRITERS.get(key, 1) - 1
        if left > 0:
            _WRITERS[key] = left
            return
        _WRITERS.pop(key, None)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if json.loads(Path(key).read_text())["pid"] == os.getpid():  # not a later writer's
                Path(key).unlink()


# ---------------------------------------------------------------- readers waiting

_WAITING_SUFFIX = ".reader-waiting."
_waiting_ids = itertools.count()


def _announce_waiting_reader(path: Path) -> Path | None:
    marker = Path(f"{path}{_WAITING_SUFFIX}{os.getpid()}.{next(_waiting_ids)}")
    try:
        marker.touch()
    except OSError:
        return None
    return marker


def readers_waiting(path: str | Path) -> int:
    """How many live processes wait to read ``path`` (markers of dead ones are removed)."""
    path = Path(path)
    count = 0
    for marker in path.parent.glob(f"{path.name}{_WAITING_SUFFIX}*"):
        try:
            pid = int(marker.name[len(path.name) + len(_WAITING_SUFFIX) :].split(".")[0])
        except ValueError:
            continue
        if pid_alive(pid):
            count += 1
        else:
            marker.unlink(missing_ok=True)
    return count


def wait_for_readers(path: str | Path, max_wait_s: float = 5.0) -> None:
    """After a writer closed: give waiting readers up to ``max_wait_s`` to open the file."""
    deadline = time.monotonic() + max_wait_s
    while readers_waiting(path) and time.monotonic() < deadline:
        time.sleep(0.02)


# ---------------------------------------------------------------- transactions, SQL


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection, *, commit: bool = True) -> Iterator[None]:
    """One transaction around the block, unless this helper already opened one on ``con``.

    ``commit=False`` rolls back at the end: a consistent snapshot for several reads. An
    exception always rolls back and propagates. Nesting joins the outer transaction without
    sending a second BEGIN: DuckDB 2.0 aborts the open transaction when a BEGIN fails inside it.
    """
    key = id(con)
    if key in _OPEN_TRANSACTIONS:
        yield
        return
    con.execute("BEGIN TRANSACTION")
    _OPEN_TRANSACTIONS.add(key)
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        _OPEN_TRANSACTIONS.discard(key)
    con.execute("COMMIT" if commit else "ROLLBACK")


# Connections inside `transaction` (by id; removed on exit, so a reused id is never stale).
_OPEN_TRANSACTIONS: set[int] = set()


def sql_string(value: str) -> str:
    """A SQL string literal (for the few places a parameter cannot go, e.g. DDL)."""
    return "'" + value.replace("'", "''") + "'"


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? "
            "AND table_schema = 'main'",
            [name],
        ).fetchone()[0]
    )
