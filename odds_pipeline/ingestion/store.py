"""The canonical odds store: four DuckDB tables written idempotently, one load at a time.

A *load* is what one file or one partition contributed (`load_id`, e.g.
`football_data:E0_2021-2022.csv` or `odds_api_live:2026-11-21`). Writing a load deletes
what that load wrote before and inserts the new rows in one transaction, so
re-materializing never duplicates and a failure leaves the previous state intact.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd

from odds_pipeline.market.quotes import (
    EVENT_COLUMNS,
    QUOTE_COLUMNS,
    REJECT_COLUMNS,
    RESULT_COLUMNS,
    ParseResult,
)
from odds_pipeline.warehouse import connect, transaction

__all__ = ["OddsStore", "LoadWriter", "ensure_schema"]

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS odds_quotes (
    source VARCHAR NOT NULL,
    load_id VARCHAR NOT NULL,
    event_id VARCHAR NOT NULL,
    bookmaker VARCHAR NOT NULL,
    market VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL,
    outcome_name VARCHAR,
    point DOUBLE,
    price DOUBLE NOT NULL,
    observed_at TIMESTAMPTZ NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    in_play BOOLEAN NOT NULL,
    last_update TIMESTAMPTZ,
    source_file VARCHAR,
    source_record VARCHAR
);
CREATE TABLE IF NOT EXISTS rejected_quotes (
    source VARCHAR NOT NULL,
    load_id VARCHAR NOT NULL,
    source_file VARCHAR,
    source_record VARCHAR,
    reason VARCHAR NOT NULL,
    event_id VARCHAR,
    bookmaker VARCHAR,
    market VARCHAR,
    outcome VARCHAR,
    price_raw VARCHAR,
    observed_at TIMESTAMPTZ,
    raw VARCHAR
);
CREATE TABLE IF NOT EXISTS events (
    event_id VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,
    sport VARCHAR,
    league VARCHAR,
    season VARCHAR,
    commence_time TIMESTAMPTZ,
    home_team VARCHAR,
    away_team VARCHAR,
    load_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    event_id VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,
    home_score DOUBLE,
    away_score DOUBLE,
    resolved_at TIMESTAMPTZ,
    load_id VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS loads (
    load_id VARCHAR PRIMARY KEY,
    source VARCHAR NOT NULL,
    prices_read BIGINT NOT NULL,
    quotes_accepted BIGINT NOT NULL,
    quotes_rejected BIGINT NOT NULL
);
"""

TABLES = ("odds_quotes", "rejected_quotes", "events", "results", "loads")


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA_SQL)


class LoadWriter:
    """Appends the chunks of one load inside an open transaction (see `OddsStore.load`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, load_id: str, source: str):
        self.con = con
        self.load_id = load_id
        self.source = source
        self.prices_read = 0
        self.accepted = 0
        self.rejected = 0

    def _insert(
        self, table: str, frame: pd.DataFrame, columns: list[str], verb: str = "INSERT"
    ) -> None:
        if frame.empty:
            return
        # DuckDB's replacement scan reads the local `incoming`. Not register()/unregister():
        # inside the load's open transaction a registered view, even once unregistered,
        # keeps its DataFrame alive until COMMIT, so memory grew with the whole load.
        incoming = frame  # noqa: F841
        cols = ", ".join(columns)
        self.con.execute(f"{verb} INTO {table} ({cols}) SELECT {cols} FROM incoming")

    def write(self, result: ParseResult) -> None:
        quotes = (
            result.quotes.assign(load_id=self.load_id) if not result.quotes.empty else result.quotes
        )
        rejected = (
            result.rejected.assign(load_id=self.load_id)
            if not result.rejected.empty
            else result.rejected
        )
        self._insert("odds_quotes", quotes, QUOTE_COLUMNS)
        self._insert("rejected_quotes", rejected, REJECT_COLUMNS)
        for table, frame, columns in (
            ("events", result.events, EVENT_COLUMNS),
            ("results", result.results, RESULT_COLUMNS),
        ):
            if frame.empty:
                continue
            frame = frame.drop_duplicates("event_id", keep="last").assign(load_id=self.load_id)
            self._insert(table, frame, [*columns, "load_id"], verb="INSERT OR REPLACE")
        self.prices_read += result.prices_read
        self.accepted += len(result.quotes)
        self.rejected += len(result.rejected)


class OddsStore:
    """The canonical store at one DuckDB file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @contextmanager
    def connection(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            con = connect(self.path, read_only=False)
            ensure_schema(con)
            con.close()
        con = connect(self.path, read_only=read_only)
        try:
            if not read_only:
                ensure_schema(con)
            yield con
        finally:
            con.close()

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.connection() as con, transaction(con):
            yield con

    @staticmethod
    @contextmanager
    def _replacing(
        con: duckdb.DuckDBPyConnection, load_id: str, source: str
    ) -> Iterator[LoadWriter]:
        """Inside an open transaction: forget what `load_id` wrote, take new chunks, record the load."""
        for table in TABLES:
            con.execute(f"DELETE FROM {table} WHERE load_id = ?", [load_id])
        writer = LoadWriter(con, load_id, source)
        yield writer
        con.execute(
            "INSERT INTO loads VALUES (?, ?, ?, ?, ?)",
            [load_id, source, writer.prices_read, writer.accepted, writer.rejected],
        )

    @contextmanager
    def load(self, load_id: str, source: str) -> Iterator[LoadWriter]:
        """Replace everything `load_id` wrote, atomically; chunks may be written in between."""
        with self._transaction() as con, self._replacing(con, load_id, source) as writer:
            yield writer

    def replace_load(self, load_id: str, source: str, result: ParseResult) -> None:
        with self.load(load_id, source) as writer:
            writer.write(result)

    def replace_loads(self, source: str, per_load: dict[str, ParseResult]) -> None:
        """Several loads (e.g. one per file) in one transaction: all land or none."""
        with self._transaction() as con:
            for load_id, result in per_load.items():
                with self._replacing(con, load_id, source) as writer:
                    writer.write(result)

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connection(read_only=True) as con:
            return con.execute(sql, params or []).df()
