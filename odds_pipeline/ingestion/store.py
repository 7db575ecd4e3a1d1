"""The canonical odds store: four DuckDB tables written idempotently, one load at a time.

A *load* is what one file or one partition contributed (`load_id`, e.g.
`football_data:data/samples/football_data/E0_2021-2022.csv` or `odds_api_live:2026-11-21`).
Writing a load deletes what that load wrote before and inserts the new rows in one
transaction, so re-materializing never duplicates and a failure leaves the previous state
intact. `loads` lists the loads and `drop_load` removes one (`odds-pipeline loads` /
`drop-load`).

The store owns the ids of file loads (`load_id_for`: the path, not just the name, so the
`E0.csv` of every season folder is its own load) and records each file's content hash, so
a copy of a file under another name is recognised and skipped instead of stored twice
(`OddsStore.replace_loads`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
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
from odds_pipeline.paths import PROJECT_ROOT
from odds_pipeline.warehouse import (
    close,
    connect,
    readers_waiting,
    table_exists,
    transaction,
    wait_for_readers,
)

__all__ = [
    "FileLoad",
    "LoadWriter",
    "LoadsReport",
    "OddsStore",
    "content_sha256",
    "ensure_schema",
    "legacy_load_id",
    "load_id_for",
]

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
    quotes_rejected BIGINT NOT NULL,
    content_sha256 VARCHAR
);
-- Warehouses created before content hashes were recorded (their loads keep NULL).
ALTER TABLE loads ADD COLUMN IF NOT EXISTS content_sha256 VARCHAR;
"""

TABLES = ("odds_quotes", "rejected_quotes", "events", "results", "loads")
# Other tables that carry the load_id of the load that wrote them, when they exist:
# `drop_load` removes a load's rows there too (withdrawals of a change-log load).
OPTIONAL_LOAD_TABLES = ("quote_removals",)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA_SQL)


# ------------------------------------------------------------------ file load identity


def load_id_for(source: str, path: str | Path, *, root: Path = PROJECT_ROOT) -> str:
    """The one id of a file's load: `source:` + its path relative to `root`, else absolute.

    Why the path and not the name: football-data.co.uk names every season `E0.csv` under a
    season folder, and keyed by name the second season replaced the first. Relative to the
    project (where relative `paths` config is resolved), the bundled samples read
    `football_data:data/samples/football_data/E0_2021-2022.csv` on every machine; a file
    outside it gets its resolved absolute path. The path is resolved first, so a relative
    and an absolute name of one file give one id. Adapters, `ingest` and the store all use
    this function (an adapter's rejected rows carry it too).
    """
    resolved = Path(path).expanduser().resolve()
    try:
        where = resolved.relative_to(root.resolve())
    except ValueError:
        where = resolved
    return f"{source}:{where.as_posix()}"


def legacy_load_id(source: str, path: str | Path) -> str:
    """The id name-keyed code gave a file (`source:E0.csv`), found in older warehouses."""
    return f"{source}:{Path(path).name}"


def content_sha256(path: str | Path) -> str:
    """sha256 of the file's bytes: the same content under another name is the same load."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True)
class FileLoad:
    """What the store needs of a load that is one file: its id, content and old-style id."""

    path: Path
    load_id: str
    content_sha256: str
    legacy_id: str

    @classmethod
    def of(cls, source: str, path: str | Path, *, root: Path = PROJECT_ROOT) -> FileLoad:
        return cls(
            path=Path(path),
            load_id=load_id_for(source, path, root=root),
            content_sha256=content_sha256(path),
            legacy_id=legacy_load_id(source, path),
        )


@dataclass
class LoadsReport:
    """What `replace_loads` did beyond writing, so a skipped copy is said, not silent."""

    written: list[str] = field(default_factory=list)
    # Skipped file load -> the load that holds the same content.
    duplicates: dict[str, str] = field(default_factory=dict)
    # Load deleted because another now holds its file -> that load (old-style ids, stale copies).
    replaced: dict[str, str] = field(default_factory=dict)


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
    """The canonical store at one DuckDB file.

    ``holder`` is written into the warehouse's writer sidecar while this store writes, so a
    reader kept out can say who holds the file (`odds_pipeline.warehouse.WarehouseBusy`).
    """

    def __init__(self, path: str | Path, *, holder: str | None = None):
        self.path = Path(path)
        self.holder = holder

    @contextmanager
    def connection(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            close(self._open_writer())
        con = self._open_writer() if not read_only else connect(self.path, read_only=True)
        try:
            yield con
        finally:
            close(con)

    def _open_writer(self) -> duckdb.DuckDBPyConnection:
        con = connect(self.path, holder=self.holder)
        try:
            ensure_schema(con)
        except BaseException:
            close(con)
            raise
        return con

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.connection() as con, transaction(con):
            yield con

    @staticmethod
    @contextmanager
    def _replacing(
        con: duckdb.DuckDBPyConnection, load_id: str, source: str, sha256: str | None = None
    ) -> Iterator[LoadWriter]:
        """Inside an open transaction: forget what `load_id` wrote, take new chunks, record the load."""
        for table in TABLES:
            con.execute(f"DELETE FROM {table} WHERE load_id = ?", [load_id])
        writer = LoadWriter(con, load_id, source)
        yield writer
        con.execute(
            """INSERT INTO loads (load_id, source, prices_read, quotes_accepted,
                                  quotes_rejected, content_sha256)
               VALUES (?, ?, ?, ?, ?, ?)""",
            [load_id, source, writer.prices_read, writer.accepted, writer.rejected, sha256],
        )

    @staticmethod
    def _content_holders(
        con: duckdb.DuckDBPyConnection, source: str, files: list[FileLoad]
    ) -> dict[str, str]:
        """Content hash -> the load that keeps that content after this run.

        A stored load of the source outside this run keeps its content (unless it is the
        old-style id of a run file with that content: that one is replaced, `_forget_legacy`);
        then a file of the run whose stored content is unchanged keeps its own (so re-runs are
        stable); then the first file in the run's order. Every other file with that hash is a
        copy.
        """
        stored = con.execute(
            """SELECT load_id, content_sha256 FROM loads
               WHERE source = ? AND content_sha256 IS NOT NULL ORDER BY load_id""",
            [source],
        ).fetchall()
        in_run = {f.load_id for f in files}
        old_ids = {(f.legacy_id, f.content_sha256) for f in files}
        holders: dict[str, str] = {}
        for load_id, sha in stored:
            if load_id not in in_run and (load_id, sha) not in old_ids:
                holders.setdefault(sha, load_id)
        previous = dict(stored)
        for f in files:
            if previous.get(f.load_id) == f.content_sha256:
                holders.setdefault(f.content_sha256, f.load_id)
        for f in files:
            holders.setdefault(f.content_sha256, f.load_id)
        return holders

    @classmethod
    def _forget(cls, con: duckdb.DuckDBPyConnection, load_id: str) -> bool:
        """Delete what `load_id` wrote (inside an open transaction); did it hold anything?"""
        counts = cls._footprint(con, load_id)
        for table, n in counts.items():
            if n:
                con.execute(f"DELETE FROM {table} WHERE load_id = ?", [load_id])
        return any(counts.values())

    @classmethod
    def _forget_legacy(
        cls, con: duckdb.DuckDBPyConnection, file: FileLoad, run_ids: set[str], holder: str
    ) -> bool:
        """Delete the old-style load of `file` (`source:<name>`) when it is this file's.

        The rule: the old id `f"{source}:{name}"` is deleted when its recorded content hash
        equals the file's, or when it has none (loads written before hashes were recorded,
        or rows without a `loads` row). Then re-ingesting an old warehouse under the new ids
        does not store those files twice. A hash that differs means another file's content:
        kept. Caveat of the no-hash case: an old `source:E0.csv` may hold another season's
        `E0.csv` (name-keyed code kept one of them); it is deleted all the same, as that code
        would have replaced it, so ingest every season folder in one run (the usual glob) to
        get each back under its own id. A load of this run (`run_ids`) and the load holding
        this content (`holder`) are never deleted.
        """
        old = file.legacy_id
        if old == file.load_id or old == holder or old in run_ids:
            return False
        row = con.execute("SELECT content_sha256 FROM loads WHERE load_id = ?", [old]).fetchone()
        if row is not None and row[0] is not None and row[0] != file.content_sha256:
            return False
        return cls._forget(con, old)

    @contextmanager
    def load(self, load_id: str, source: str) -> Iterator[LoadWriter]:
        """Replace everything `load_id` wrote, atomically; chunks may be written in between."""
        with self._transaction() as con, self._replacing(con, load_id, source) as writer:
            yield writer

    def replace_load(self, load_id: str, source: str, result: ParseResult) -> None:
        with self.load(load_id, source) as writer:
            writer.write(result)

    def replace_loads(
        self,
        source: str,
        per_load: Mapping[str, ParseResult],
        *,
        files: Mapping[str, FileLoad] | None = None,
    ) -> LoadsReport:
        """Several loads (e.g. one per file), each atomic in its own transaction.

        `files` (load id -> `FileLoad`) marks the loads that are files: their content hash is
        recorded, a file whose content an existing load of the source already holds under
        another id is skipped (`LoadsReport.duplicates`; whatever its own id held before is
        deleted, that content being gone from the file), and its old-style load is replaced
        (`_forget_legacy`). A file whose content changed replaces its load as any load does.

        Why not one transaction for all: DuckDB's file lock belongs to the open connection,
        so a season of files written in one transaction kept every reader (checks, sensors,
        `odds-pipeline summary`) out for the whole ingestion, and they failed on the lock.
        Now each load commits on its own, and when a reader is waiting (it leaves a marker,
        `readers_waiting`) the connection is closed after the current load until the reader
        is in, then reopened; with nobody waiting it stays open (no reopen per file).

        The trade-off: a failure part-way leaves the loads before it written (each complete
        and consistent: its quotes, rejects, events, results and `loads` row) and the failing
        load and those after it as they were. Re-running is idempotent (each load replaces
        itself), and parsing happens before any write (`ingest.ingest_paths`), so a malformed
        file still writes nothing. A reader may see some files of a run and not others.
        """
        files = files or {}
        in_run = [files[load_id] for load_id in per_load if load_id in files]
        run_ids = set(per_load)
        holders: dict[str, str] | None = None
        report = LoadsReport()
        con: duckdb.DuckDBPyConnection | None = None
        try:
            for load_id, result in per_load.items():
                if con is not None and readers_waiting(self.path):
                    close(con)
                    con = None
                    wait_for_readers(self.path)
                if con is None:
                    con = self._open_writer()
                if holders is None:  # no file loads (a partition, the simulator): no query
                    holders = self._content_holders(con, source, in_run) if in_run else {}
                file = files.get(load_id)
                holder = holders[file.content_sha256] if file is not None else load_id
                with transaction(con):
                    if holder != load_id:
                        report.duplicates[load_id] = holder
                        if self._forget(con, load_id):
                            report.replaced[load_id] = holder
                    else:
                        sha = file.content_sha256 if file is not None else None
                        with self._replacing(con, load_id, source, sha) as writer:
                            writer.write(result)
                        report.written.append(load_id)
                    if file is not None and self._forget_legacy(con, file, run_ids, holder):
                        report.replaced[file.legacy_id] = holder
        finally:
            if con is not None:
                close(con)
        return report

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connection(read_only=True) as con:
            return con.execute(sql, params or []).df()

    # ------------------------------------------------------------------ recovery

    def loads(self) -> pd.DataFrame:
        """Every load with its counts as written and the quote rows it holds now.

        Quote rows whose load has no `loads` row (written outside this store) are listed
        too, with empty counts, so nothing in `odds_quotes` is unaccounted for.
        """
        return self.query(
            """
            WITH held AS (
                SELECT load_id, any_value(source) AS source, count(*) AS quote_rows
                FROM odds_quotes GROUP BY load_id
            )
            SELECT load_id, coalesce(l.source, h.source) AS source, l.prices_read,
                   l.quotes_accepted, l.quotes_rejected, coalesce(h.quote_rows, 0) AS quote_rows
            FROM loads AS l FULL OUTER JOIN held AS h USING (load_id)
            ORDER BY load_id
            """
        )

    @staticmethod
    def _load_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
        return [*TABLES, *(t for t in OPTIONAL_LOAD_TABLES if table_exists(con, t))]

    @classmethod
    def _footprint(cls, con: duckdb.DuckDBPyConnection, load_id: str) -> dict[str, int]:
        sql = "SELECT count(*) FROM {} WHERE load_id = ?"
        return {
            table: int(con.execute(sql.format(table), [load_id]).fetchone()[0])
            for table in cls._load_tables(con)
        }

    def load_footprint(self, load_id: str) -> dict[str, int]:
        """Rows per table that `load_id` wrote (what `drop_load` would delete)."""
        with self.connection(read_only=True) as con:
            return self._footprint(con, load_id)

    def drop_load(self, load_id: str) -> dict[str, int]:
        """Delete everything `load_id` wrote, in one transaction; rows deleted per table.

        Events and results belong to the load that wrote them last (`INSERT OR REPLACE`),
        so an event another load also wrote goes with it; re-ingest that load to restore it.
        All counts 0 means no such load (nothing changed).
        """
        with self._transaction() as con:
            counts = self._footprint(con, load_id)
            for table in counts:
                con.execute(f"DELETE FROM {table} WHERE load_id = ?", [load_id])
        return counts
