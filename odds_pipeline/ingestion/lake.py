"""The canonical tables as day-partitioned Parquet: the way out of one DuckDB file.

``<root>/<table>/day=YYYY-MM-DD/data.parquet``, one file per table and UTC day (hive layout),
rows sorted by their keys. DuckDB queries it in place (`read_lake`), and so does any engine
that reads Parquet (Spark, Trino, pyarrow, polars), from a local folder or, with DuckDB's
httpfs and an `s3://` root, from object storage. A day is written to a temporary file beside
its target and renamed over it (atomic on one filesystem): a reader sees the old day or the
new one, a killed export leaves the old day intact, and exporting a day twice gives the same
rows. Which day a row belongs to is fixed per table in `DAY_OF`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb

from odds_pipeline.ingestion.removals import QUOTE_REMOVALS_TABLE
from odds_pipeline.warehouse import table_exists

# The UTC day a row belongs to, and the order rows are written in (deterministic files).
DAY_OF: dict[str, tuple[str, str]] = {
    "odds_quotes": (
        "observed_at",
        "event_id, bookmaker, market, outcome, point, observed_at, ingested_at, load_id",
    ),
    QUOTE_REMOVALS_TABLE: (
        "removed_at",
        "event_id, bookmaker, market, outcome, point, removed_at, load_id",
    ),
    "events": ("commence_time", "event_id"),
    "results": ("resolved_at", "event_id"),
}
LAKE_TABLES: tuple[str, ...] = tuple(DAY_OF)
FILE_NAME = "data.parquet"


def _day_expr(column: str) -> str:
    return f"strftime(timezone('UTC', {column}), '%Y-%m-%d')"


def day_file(root: str | Path, table: str, day: str) -> Path:
    return Path(root) / table / f"day={day}" / FILE_NAME


def days_in(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """Every UTC day `table` has rows for (rows without a timestamp have no day)."""
    column, _ = DAY_OF[table]
    rows = con.execute(
        f"SELECT DISTINCT {_day_expr(column)} AS day FROM {table} "
        f"WHERE {column} IS NOT NULL ORDER BY day"
    ).fetchall()
    return [r[0] for r in rows]


def export_days(
    con: duckdb.DuckDBPyConnection,
    root: str | Path,
    days: Iterable[str],
    tables: Sequence[str] = LAKE_TABLES,
) -> dict[str, dict[str, int]]:
    """Write each table's rows of each day to its Parquet file, replacing the day's file.

    A day without rows removes its file (the warehouse no longer has that day). Returns
    {table: {day: rows written}}. One day at a time: memory follows the day's rows (each
    day's query still filters the whole table on its day column). Rows without a
    timestamp have no day and are not exported: `undated_rows` counts them.
    """
    written: dict[str, dict[str, int]] = {}
    for table in tables:
        if table not in DAY_OF:
            raise ValueError(f"{table!r} has no day partitioning; known: {sorted(DAY_OF)}")
        written[table] = {}
        if not table_exists(con, table):
            continue
        column, order = DAY_OF[table]
        for day in sorted(set(days)):
            target = day_file(root, table, day)
            where = f"{column} >= ?::TIMESTAMPTZ AND {column} < ?::TIMESTAMPTZ + INTERVAL 1 DAY"
            bounds = [f"{day} 00:00:00+00", f"{day} 00:00:00+00"]
            n = con.execute(f"SELECT count(*) FROM {table} WHERE {where}", bounds).fetchone()[0]
            written[table][day] = int(n)
            if n == 0:
                target.unlink(missing_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
            try:
                con.execute(
                    f"COPY (SELECT * FROM {table} WHERE {where} ORDER BY {order}) "
                    f"TO '{_quoted(tmp)}' (FORMAT parquet, COMPRESSION zstd)",
                    bounds,
                )
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    return written


def undated_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Rows of `table` without the timestamp that names their day (e.g. a result with no
    resolution time): kept in the warehouse, absent from the lake."""
    if not table_exists(con, table):
        return 0
    column, _ = DAY_OF[table]
    return int(con.execute(f"SELECT count(*) FROM {table} WHERE {column} IS NULL").fetchone()[0])


def read_lake(
    con: duckdb.DuckDBPyConnection, root: str | Path, table: str, *, view: str | None = None
) -> str:
    """Create (or replace) a view over the table's Parquet files, queried in place; `day`
    is a column (hive partitioning), so `WHERE day = '...'` reads one file. Returns the
    view's name (default ``lake_<table>``)."""
    name = view or f"lake_{table}"
    pattern = Path(root) / table / "day=*" / FILE_NAME
    con.execute(
        f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{_quoted(pattern)}', "
        "hive_partitioning = true, hive_types = {'day': VARCHAR})"
    )
    return name


def _quoted(path: Path | str) -> str:
    return str(path).replace("'", "''")
