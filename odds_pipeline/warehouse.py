"""DuckDB access, once: connect in UTC with a bounded wait on a writer's lock, transactions, quoting.

Every module that touches the warehouse goes through here, so the lock behaviour (one
writing process per file, readers retry briefly) and the transaction semantics (join a
caller's open transaction instead of failing) are the same everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb


def connect(
    path: str | Path, *, read_only: bool = False, retries: int = 20, wait_s: float = 0.25
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse in UTC; readers retry briefly while a writer holds the lock."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    last_error: Exception | None = None
    for _ in range(max(1, retries)):
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            con.execute("SET TimeZone='UTC'")
            return con
        except duckdb.IOException as exc:  # lock held by another process
            last_error = exc
            time.sleep(wait_s)
    raise RuntimeError(f"could not open DuckDB warehouse {path}: {last_error}") from last_error


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection, *, commit: bool = True) -> Iterator[None]:
    """One transaction around the block, unless the caller already opened one (then theirs).

    ``commit=False`` rolls back at the end: a consistent snapshot for several reads.
    An exception always rolls back and propagates.
    """
    try:
        con.execute("BEGIN TRANSACTION")
    except duckdb.TransactionException:  # the caller's transaction: leave it to them
        yield
        return
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT" if commit else "ROLLBACK")


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
