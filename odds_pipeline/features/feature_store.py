"""Point-in-time feature retrieval over DuckDB: the only way features reach datasets.

The promise (DESIGN §3). For an entity row asking at time ``t`` (its ``as_of``), a feature
view contributes the values of the *latest* row of the same entity key with

* ``observed_at <= t - source_delay`` (inclusive),
* ``observed_at >= t - ttl`` when a TTL is given (a filter applied after the join),
* ``ingested_at <= t`` as well in ``knowledge="ingested"`` mode ("as known": late or
  backfilled rows never leak backwards); ``knowledge="observed"`` is for bulk history.

"Latest" is a total order, so the same question always gets the same answer:
``observed_at``, then ``ingested_at`` (NULL lowest), then the view's ``sequence`` column
(NULL lowest), then the row's ``rowid`` for base tables, or, for relations without a rowid
(views over parquet...), the feature values themselves (NULL lowest) so that only rows
that are identical in every retrieved column can remain tied.

How (and why it is fast). DuckDB's ASOF JOIN picks an arbitrary row among rows that tie on
the inequality column, so instead of joining on ``observed_at`` we join on an *order key*
that is unique per row and sorts exactly like the rule above: a HUGEINT packing
(observed_at, ingested_at, sequence, rowid) into bit fields sized from the data's ranges,
or a STRUCT when the ranges do not fit in 126 bits or no rowid exists. The probe side asks
for ``(t - source_delay, +inf, +inf, ...)``. That is the same as deduplicating to the winner
per ``(key, observed_at)`` before an ASOF join on ``observed_at``, but it costs one sort
instead of a window/aggregate pass plus a sort (about 2x faster on 10M rows). The equality
side of the join is a 64-bit hash of the entity key columns (NULL equals NULL, ``-0.0``
equals ``0.0``, NaN counts as NULL): DuckDB's ASOF sorts on string keys are several times
slower than on one integer. Two distinct keys colliding on 64 bits has probability about
``n_entity_keys * n_feature_keys / 2**64`` (~1e-9 for 1e5 x 1e6 keys).

``knowledge="ingested"`` is a two-dimensional question (both times bounded), answered
exactly with two one-dimensional ASOF joins over a split of the rows. Rows ingested within
``source_delay`` of their observation (class A: ``ingested_at <= observed_at + delay``)
satisfy the ingestion rule whenever they satisfy the observation rule, so an ASOF on the
order key finds them. For the others (class B, late rows) the observation rule follows from
``ingested_at <= t``, so the best class-B row known at ``t`` is a running maximum of the
order key along ``ingested_at``, found with an ASOF on ``ingested_at``. The answer is the
larger of the two candidates. No OR is ever put inside an ASOF condition.

Out of core. ``write_historical_features`` answers an entity set larger than memory: parquet
file(s) (or a relation) streamed by DuckDB on a cursor and regrouped into Arrow tables of
``chunk_rows`` rows, so Python holds one chunk and its answer at a time. Every chunk goes
through the same per-view join as ``get_historical_features`` (``_answer``), inside the one
transaction whose order-key ranges the packing relies on, and is appended as row groups to
a single parquet file written under a temporary name and renamed at the end (all or
nothing). Output rows keep the input order, checked on DuckDB's ``file_index`` and
``file_row_number`` (a table's ``rowid``). Chunks reach DuckDB as relations
(``from_arrow(...).query``), never ``register``-ed: inside a transaction DuckDB keeps each
unregistered object alive until the transaction ends, which would keep every chunk.

Output columns: the entity frame's columns unchanged, then one column per requested feature
named after the feature's column (``implied_prob``); when the same column name is requested
from two views, or clashes with an entity column, those features are named
``<view>__<column>`` instead (``full_feature_names=True`` names every feature that way).
``include_timestamps=True`` adds ``<view>__observed_at`` and ``<view>__ingested_at`` of the
row used. A NULL in the latest qualifying row is returned as NULL: a removed quote is a
fact, not a gap to fill from an older row.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from odds_pipeline.warehouse import connect, transaction

KEY_COLUMNS: tuple[str, ...] = ("event_id", "bookmaker", "market", "outcome", "point")
AS_OF = "as_of"
DEFAULT_CHUNK_ROWS = 2_000_000
ONLINE_PREFIX = "online_features_"

Knowledge = Literal["observed", "ingested"]

# Comparison used between the probe (entity) order key and the feature order key in the
# ASOF join. Tests monkeypatch it to "<=" to prove that a join reaching into the future is
# caught by the reference comparison; nothing else should touch it.
_ASOF_PROBE_OP = ">="
# Widest bit budget for the packed HUGEINT order key (HUGEINT is signed 128-bit).
_PACK_BITS = 126
# Prune the view to the chunk's keys (a hash semi-join) only when the view has this many
# times more rows than the chunk: below that the pruning costs more than it saves.
_SEMI_JOIN_RATIO = 16
# Stands for NULL in BIGINT fields of a STRUCT order key (NULL must sort lowest there).
_LOWEST = -(2**63) + 1

_FLOAT_TYPES = {"DOUBLE", "FLOAT", "REAL"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Helper columns of a streamed entity chunk (never written out).
_PIT_AS_OF = "__pit_as_of"
_PIT_POS = "__pit_pos"

_R = TypeVar("_R")


def _q(name: str) -> str:
    """Quote an identifier so any column name is safe inside generated SQL."""
    return '"' + name.replace('"', '""') + '"'


def _relation(name: str) -> str:
    """Quote a possibly schema-qualified relation name part by part."""
    return ".".join(_q(part) for part in name.split("."))


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _ts_literal(us: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return f"TIMESTAMPTZ '{moment.isoformat()}'"


@dataclass(frozen=True)
class FeatureView:
    """A relation of timestamped feature rows keyed by some of the entity key columns."""

    name: str
    table: str
    keys: tuple[str, ...]
    timestamp: str = "observed_at"
    ingested: str | None = "ingested_at"
    sequence: str | None = None
    features: tuple[str, ...] = ()
    types: dict[str, str] = field(default_factory=dict, compare=False)
    has_rowid: bool = True

    @property
    def online_table(self) -> str:
        return ONLINE_PREFIX + self.name


@dataclass(frozen=True)
class _Order:
    """How the total order of one view's rows is expressed in SQL for one query."""

    packed: bool
    key_sql: str  # order key of a feature row (over the projected columns of `_base`)
    o_min: int = 0
    o_max: int = 0
    shift_o: int = 0  # bits below the observed_at field (packed only)
    struct_type: str = ""  # STRUCT type of the key (struct only)
    struct_names: tuple[str, ...] = ()
    rows: int = 0  # rows of the view when the order was read
    r_min: int = 0  # rowid field: the lowest bits of a packed key (packed only)
    r_bits: int = 0

    def probe_sql(self, cutoff_sql: str) -> str:
        """Order key of (cutoff, +inf, +inf, ...): greater than every row observed <= cutoff."""
        if self.packed:
            # least/greatest skip NULLs: a NULL as_of must stay NULL (no match)
            clamped = (
                f"CASE WHEN {cutoff_sql} IS NOT NULL "
                f"THEN greatest(least({cutoff_sql}, {self.o_max}), {self.o_min - 1}) END"
            )
            # times 2**shift, not <<: DuckDB refuses to shift the -1 of "before any row"
            scale = f"'{1 << self.shift_o}'::HUGEINT"
            return f"((({clamped}) - {self.o_min})::HUGEINT * {scale} + ({scale} - 1))"
        # NULL fields sort above every value in DuckDB's nested comparisons.
        names = self.struct_names
        parts = [f"{names[0]}: {cutoff_sql}"] + [f"{n}: NULL" for n in names[1:]]
        probe = "{" + ", ".join(parts) + "}" + f"::{self.struct_type}"
        return f"CASE WHEN {cutoff_sql} IS NOT NULL THEN {probe} END"


# One view's part of a query: the view, its keys shared with the entities, the requested
# columns, and its order key (read once per transaction).
_Plan = tuple[FeatureView, list[str], list[str], _Order]


@dataclass(frozen=True)
class _Query:
    """The validated time rules of one retrieval, shared by every chunk."""

    knowledge: Knowledge
    ttl_us: int | None
    delay_us: int
    with_times: bool

    @classmethod
    def make(
        cls,
        ttl: timedelta | None,
        source_delay: timedelta,
        knowledge: Knowledge,
        chunk_rows: int,
        with_times: bool,
    ) -> _Query:
        if knowledge not in ("observed", "ingested"):
            raise ValueError(f"knowledge must be 'observed' or 'ingested', not {knowledge!r}")
        if ttl is not None and ttl < timedelta(0):
            raise ValueError("ttl must be >= 0")
        if source_delay < timedelta(0):
            raise ValueError("source_delay must be >= 0")
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        return cls(
            knowledge=knowledge,
            ttl_us=None if ttl is None else _us(ttl),
            delay_us=_us(source_delay),
            with_times=with_times,
        )


class FeatureStore:
    """Point-in-time (offline) and latest-value (online) feature retrieval from DuckDB.

    ``database`` is a DuckDB file path (a connection is opened per call, read-only for
    reads, so Dagster writers are never blocked for long) or an open connection (used as
    is, never closed). ``memory_limit``/``threads`` apply to connections opened here.
    """

    def __init__(
        self,
        database: str | Path | duckdb.DuckDBPyConnection,
        *,
        memory_limit: str | None = None,
        threads: int | None = None,
    ):
        self._con = database if isinstance(database, duckdb.DuckDBPyConnection) else None
        self._path = None if self._con is not None else Path(database)
        self._memory_limit = memory_limit
        self._threads = threads
        self._views: dict[str, FeatureView] = {}

    # ------------------------------------------------------------------ connections
    @contextmanager
    def _connection(self, *, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._con is not None:
            yield self._con
            return
        con = connect(self._path, read_only=read_only)
        try:
            if self._memory_limit:
                con.execute(f"SET memory_limit='{self._memory_limit}'")
            if self._threads:
                con.execute(f"SET threads={int(self._threads)}")
            yield con
        finally:
            con.close()

    # ------------------------------------------------------------------ views
    def register_view(
        self,
        name: str,
        table: str,
        keys: Sequence[str] | None = None,
        timestamp: str = "observed_at",
        ingested: str | None = "ingested_at",
        sequence: str | None = None,
        features: Sequence[str] | None = None,
    ) -> FeatureView:
        """Declare ``table`` (a DuckDB table or view) as feature view ``name``.

        ``keys`` defaults to the entity key columns the relation has; ``features`` to every
        other column except the timestamps and the sequence.
        """
        if not _IDENT.match(name):
            raise ValueError(f"feature view name {name!r} must be a plain identifier")
        with self._connection() as con:
            view = self._describe(con, name, table, keys, timestamp, ingested, sequence, features)
        self._views[name] = view
        return view

    def _describe(
        self,
        con: duckdb.DuckDBPyConnection,
        name: str,
        table: str,
        keys: Sequence[str] | None,
        timestamp: str,
        ingested: str | None,
        sequence: str | None,
        features: Sequence[str] | None,
    ) -> FeatureView:
        try:
            described = con.execute(f"DESCRIBE SELECT * FROM {_relation(table)}").fetchall()
        except duckdb.Error as exc:
            raise KeyError(f"feature view {name!r}: relation {table!r} not found: {exc}") from exc
        types = {row[0]: str(row[1]) for row in described}
        if keys is None:
            keys = [k for k in KEY_COLUMNS if k in types]
        reserved = {timestamp, ingested, sequence} - {None}
        missing = [c for c in [*keys, *reserved] if c not in types]
        if missing:
            raise ValueError(f"feature view {name!r}: {table!r} lacks columns {missing}")
        if not types[timestamp].startswith("TIMESTAMP"):
            raise ValueError(f"feature view {name!r}: {timestamp!r} is {types[timestamp]}")
        if features is None:
            features = [
                c for c in types if c not in set(keys) | reserved and not c.startswith("__")
            ]
        unknown = [c for c in features if c not in types or c.startswith("__")]
        if unknown:
            raise ValueError(
                f"feature view {name!r}: unknown feature columns {unknown} "
                "(names starting with '__' are reserved)"
            )
        try:
            con.execute(f"SELECT rowid FROM {_relation(table)} LIMIT 0")
            has_rowid = True
        except duckdb.Error:
            has_rowid = False
        return FeatureView(
            name=name,
            table=table,
            keys=tuple(keys),
            timestamp=timestamp,
            ingested=ingested,
            sequence=sequence,
            features=tuple(features),
            types=types,
            has_rowid=has_rowid,
        )

    def view(self, name: str) -> FeatureView:
        """A registered view, or a relation named ``name`` registered with the defaults."""
        if name not in self._views:
            with self._connection() as con:
                ingested = "ingested_at"
                try:
                    cols = {r[0] for r in con.execute(f"DESCRIBE {_relation(name)}").fetchall()}
                except duckdb.Error as exc:
                    raise KeyError(
                        f"unknown feature view {name!r}: register it with register_view()"
                    ) from exc
                if ingested not in cols:
                    ingested = None
                self._views[name] = self._describe(
                    con, name, name, None, "observed_at", ingested, None, None
                )
        return self._views[name]

    @property
    def views(self) -> dict[str, FeatureView]:
        return dict(self._views)

    def _resolve(self, features: str | Sequence[str]) -> dict[str, list[str]]:
        """Parse "view:column" / "view:*" references into {view: [columns]} in order."""
        if isinstance(features, str):
            features = [features]
        wanted: dict[str, list[str]] = {}
        for ref in features:
            view_name, sep, column = ref.partition(":")
            if not sep or not view_name or not column:
                raise ValueError(f"feature reference {ref!r} must look like 'view:column'")
            view = self.view(view_name)
            columns = list(view.features) if column == "*" else [column]
            for col in columns:
                if col not in view.features:
                    raise ValueError(
                        f"{view_name!r} has no feature {col!r}; it has {list(view.features)}"
                    )
                if col not in wanted.setdefault(view_name, []):
                    wanted[view_name].append(col)
        if not wanted:
            raise ValueError("no features requested")
        return wanted

    @staticmethod
    def _output_names(
        wanted: dict[str, list[str]], entity_columns: Sequence[str], full: bool
    ) -> dict[tuple[str, str], str]:
        counts: dict[str, int] = {}
        for cols in wanted.values():
            for col in cols:
                counts[col] = counts.get(col, 0) + 1
        taken = set(entity_columns)
        return {
            (v, c): f"{v}__{c}" if full or counts[c] > 1 or c in taken else c
            for v, cols in wanted.items()
            for c in cols
        }

    # ------------------------------------------------------------------ SQL pieces
    def _key_hash(self, view: FeatureView, keys: Sequence[str], alias: str, cast: bool) -> str:
        """64-bit hash of the key columns; NaN and NULL alike, -0.0 equal to 0.0."""
        if not keys:
            return "0::UBIGINT"
        parts = []
        for k in keys:
            col = f"{alias}.{_q(k)}"
            typ = view.types[k]
            if cast:
                col = f"CAST({col} AS {typ})"
            if typ in _FLOAT_TYPES:
                col = f"(CASE WHEN isnan({col}) THEN NULL ELSE {col} + 0.0 END)"
            parts.append(col)
        return f"hash({', '.join(parts)})"

    def _order(
        self, con: duckdb.DuckDBPyConnection, view: FeatureView, *, force_struct: bool = False
    ) -> _Order:
        """The unique, rule-following order key of the view's rows (see module docstring)."""
        rel = _relation(view.table)
        o = f"epoch_us({_q(view.timestamp)})"
        i = f"epoch_us({_q(view.ingested)})" if view.ingested else "NULL::BIGINT"
        s = f"CAST({_q(view.sequence)} AS BIGINT)" if view.sequence else "NULL::BIGINT"
        r = "rowid" if view.has_rowid else "NULL::BIGINT"
        stats = con.execute(
            f"SELECT min({o}), max({o}), min({i}), max({i}), min({s}), max({s}), "
            f"min({r}), max({r}), count(*) FROM {rel}"
        ).fetchall()[0]
        o_min, o_max, i_min, i_max, s_min, s_max, r_min, r_max, rows = stats
        # The key is written over the base projection's __o, __i, __s, __r columns.
        if view.has_rowid and not force_struct and o_min is not None:
            fields = []  # (expression >= 0, bits), most significant first, below observed_at
            if i_min is not None:
                i_bits = int(i_max - i_min + 1).bit_length()
                fields.append((f"coalesce(__i::HUGEINT - ({i_min}) + 1, 0)", i_bits))
            if view.sequence and s_min is not None:
                s_bits = int(s_max - s_min + 1).bit_length()
                fields.append((f"coalesce(__s::HUGEINT - ({s_min}) + 1, 0)", s_bits))
            r_bits = max(1, int(r_max - r_min).bit_length())
            fields.append((f"(__r::HUGEINT - ({r_min}))", r_bits))
            o_bits = max(1, int(o_max - o_min).bit_length())
            if o_bits + sum(bits for _, bits in fields) <= _PACK_BITS:
                terms, shift = [], 0
                for expr, bits in reversed(fields):
                    terms.append(f"(({expr}) << {shift})")
                    shift += bits
                terms.append(f"((__o::HUGEINT - ({o_min})) << {shift})")
                return _Order(
                    True,
                    " + ".join(reversed(terms)),
                    o_min,
                    o_max,
                    shift,
                    rows=rows,
                    r_min=r_min,
                    r_bits=r_bits,
                )
        # STRUCT order key: NULL must sort lowest, DuckDB sorts NULL fields highest.
        names = ["o", "i"]
        exprs = ["__o", f"coalesce(__i, {_LOWEST})"]
        types = ["BIGINT", "BIGINT"]
        if view.sequence:
            names.append("s")
            exprs.append(f"coalesce(__s, {_LOWEST})")
            types.append("BIGINT")
        if view.has_rowid:
            names.append("r")
            exprs.append("__r")
            types.append("BIGINT")
        else:
            for n, f in enumerate(view.features):
                names.append(f"c{n}")
                exprs.append(f"{{n: {_q(f)} IS NOT NULL, v: {_q(f)}}}")
                types.append(f"STRUCT(n BOOLEAN, v {view.types[f]})")
        struct_type = (
            "STRUCT(" + ", ".join(f"{n} {t}" for n, t in zip(names, types, strict=True)) + ")"
        )
        key = (
            "{"
            + ", ".join(f"{n}: {e}" for n, e in zip(names, exprs, strict=True))
            + "}::"
            + struct_type
        )
        return _Order(False, key, struct_type=struct_type, struct_names=tuple(names), rows=rows)

    def _decode_o(self, order: _Order, k: str) -> str:
        """observed_at (µs) back out of an order key, to apply the TTL without a payload."""
        if order.packed:
            return f"(({k} >> {order.shift_o}) + {order.o_min})::BIGINT"
        return f"{k}.o"

    def _view_sql(
        self,
        view: FeatureView,
        keys: Sequence[str],
        columns: Sequence[str],
        order: _Order,
        *,
        knowledge: Knowledge,
        ttl_us: int | None,
        delay_us: int,
        bounds: tuple[int | None, int | None],
        with_times: bool,
        semi_join: bool = True,
    ) -> str:
        """One query answering the chunk named ``__pit_entity`` for one view.

        Result: ``__row`` then the requested columns (and ``__o``/``__i`` of the row used
        when ``with_times``), one row per entity row, ordered by ``__row``.
        """
        rel = _relation(view.table)
        ts = _q(view.timestamp)
        max_t, min_t = bounds
        # Rows that cannot qualify for any entity row of the chunk are pruned early; on a
        # TIMESTAMPTZ column the literal lets DuckDB skip row groups by their zonemaps.
        tz = view.types[view.timestamp] == "TIMESTAMP WITH TIME ZONE"
        where = [f"{ts} IS NOT NULL"]
        limits = []
        if max_t is not None:
            limits.append(("<=", max_t - delay_us))
        if ttl_us is not None and min_t is not None:
            limits.append((">=", min_t - ttl_us))
        for cmp, us in limits:
            if tz:
                try:
                    where.append(f"{ts} {cmp} {_ts_literal(us)}")
                except OverflowError:  # a bound beyond year 1..9999 prunes nothing
                    continue
            else:
                where.append(f"epoch_us({ts}) {cmp} {us}")
        # Columns the join carries: requested features, every feature when the content is
        # the last tie-break (no rowid), the times of the row used when asked for.
        needed = list(columns)
        if not view.has_rowid:
            needed += [c for c in view.features if c not in needed]
        carried = [_q(c) for c in columns] + (["__o", "__i"] if with_times else [])
        base_cols = [
            f"{self._key_hash(view, keys, 't', cast=False)} AS __h",
            f"epoch_us(t.{ts}) AS __o",
            f"epoch_us(t.{_q(view.ingested)}) AS __i" if view.ingested else "NULL::BIGINT AS __i",
        ]
        if view.sequence:
            base_cols.append(f"CAST(t.{_q(view.sequence)} AS BIGINT) AS __s")
        if view.has_rowid:
            base_cols.append("t.rowid AS __r")
        base_cols += [f"t.{_q(c)}" for c in needed]
        entity = (
            "SELECT __row, epoch_us(__as_of) AS __t, "
            f"{self._key_hash(view, keys, 'x', cast=True)} AS __h FROM __pit_entity x"
        )
        base = f"SELECT {', '.join(base_cols)} FROM {rel} t WHERE {' AND '.join(where)}"
        if semi_join:
            # Only keys the chunk asks about reach the ASOF join's sort: a small entity
            # frame against a large view then costs a scan, not a sort of the whole view.
            base = f"SELECT * FROM ({base}) WHERE __h IN (SELECT __h FROM e)"
        keyed = ", ".join(["__h", "__i", f"{order.key_sql} AS __k", *carried])
        probe = order.probe_sql(f"(e.__t - {delay_us})")
        op = _ASOF_PROBE_OP
        # base is read by two joins in "ingested" mode: re-scan it rather than materialize
        ctes = [f"e AS ({entity})", f"base AS NOT MATERIALIZED ({base})"]
        outs_from = ", ".join(f"a.{c}" for c in carried)
        if knowledge == "observed":
            ctes.append(f"fa AS (SELECT {keyed} FROM base)")
            joined = (
                f"SELECT e.__row, e.__t, a.__k{', ' + outs_from if carried else ''} "
                f"FROM (SELECT *, {probe} AS __p FROM e) e "
                f"ASOF LEFT JOIN fa a ON e.__h = a.__h AND e.__p {op} a.__k"
            )
        else:
            if not view.ingested:
                raise ValueError(f"view {view.name!r} has no ingested column: use 'observed'")
            # class A: known once observable; class B: late, known once ingested
            late = f"__i > __o + {delay_us}"
            known_b = f" AND __i <= {max_t}" if max_t is not None else ""
            running = (
                "WINDOW w AS (PARTITION BY __h ORDER BY __i "
                "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
            )
            probe_e = f"(SELECT *, {probe} AS __p FROM e) e"
            asof_a = f"ASOF LEFT JOIN fa a ON e.__h = a.__h AND e.__p {op} a.__k"
            asof_b = "ASOF LEFT JOIN fb b ON e.__h = b.__h AND e.__t >= b.__i"
            if order.packed:
                # Keys only through both joins; the winner's columns are then fetched by the
                # rowid in the key's lowest bits (a window arg_max over a payload struct
                # costs about twice as much on 10M rows).
                key_only = f"__h, __i, {order.key_sql} AS __k"
                ctes.append(
                    f"fa AS (SELECT {key_only} FROM base WHERE __i IS NOT NULL AND NOT ({late}))"
                )
                ctes.append(
                    f"fb AS (SELECT __h, __i, max(__k) OVER w AS __k FROM (SELECT {key_only} "
                    f"FROM base WHERE __i IS NOT NULL AND {late}{known_b}) {running})"
                )
                ctes.append(
                    f"m AS (SELECT e.__row, e.__t, greatest(a.__k, b.__k) AS __k "
                    f"FROM {probe_e} {asof_a} {asof_b})"
                )
                fetched = [f"t.{_q(c)}" for c in columns]
                if with_times:
                    fetched += [
                        f"epoch_us(t.{ts}) AS __o",
                        f"epoch_us(t.{_q(view.ingested)}) AS __i",
                    ]
                rowid = f"((__k & {(1 << order.r_bits) - 1}) + {order.r_min})::BIGINT"
                joined = (
                    f"SELECT m.__row, m.__t, m.__k{''.join(f', f.{c}' for c in carried)} "
                    f"FROM (SELECT *, {rowid} AS __r FROM m) m LEFT JOIN "
                    f"(SELECT t.rowid AS __r, {', '.join(fetched)} FROM {rel} t "
                    f"WHERE {' AND '.join(where)}) f ON m.__r = f.__r"
                )
            else:
                ctes.append(
                    f"fa AS (SELECT {keyed} FROM base WHERE __i IS NOT NULL AND NOT ({late}))"
                )
                payload = "{" + ", ".join(f"c{n}: {c}" for n, c in enumerate(carried)) + "}"
                ctes.append(
                    f"fb AS (SELECT __h, __i, max(__k) OVER w AS __k, "
                    f"arg_max({payload}, __k) OVER w AS __v FROM (SELECT {keyed} FROM base "
                    f"WHERE __i IS NOT NULL AND {late}{known_b}) {running})"
                )
                pick = "(b.__k IS NOT NULL AND (a.__k IS NULL OR b.__k > a.__k))"
                chosen = [
                    f"CASE WHEN {pick} THEN struct_extract(b.__v, 'c{n}') ELSE a.{c} END AS {c}"
                    for n, c in enumerate(carried)
                ]
                joined = (
                    f"SELECT e.__row, e.__t, CASE WHEN {pick} THEN b.__k ELSE a.__k END AS __k"
                    f"{', ' + ', '.join(chosen) if chosen else ''} "
                    f"FROM {probe_e} {asof_a} {asof_b}"
                )
        ctes.append(f"j AS ({joined})")
        o_expr = self._decode_o(order, "__k")
        keep = "__k IS NOT NULL"
        if ttl_us is not None:  # the TTL is a filter after the join, never inside it
            keep += f" AND {o_expr} >= __t - {ttl_us}"
        outs = [f"CASE WHEN {keep} THEN {c} END AS {c}" for c in carried]
        return f"WITH {', '.join(ctes)} SELECT __row, {', '.join(outs)} FROM j ORDER BY __row"

    # ------------------------------------------------------------------ offline
    def get_historical_features(
        self,
        entity_df: pd.DataFrame,
        features: str | Sequence[str],
        *,
        ttl: timedelta | None = None,
        source_delay: timedelta = timedelta(0),
        knowledge: Knowledge = "observed",
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        full_feature_names: bool = False,
        include_timestamps: bool = False,
    ) -> pd.DataFrame:
        """Point-in-time correct features for every row of ``entity_df`` (same order, index).

        ``entity_df`` holds ``as_of`` (tz-aware, or naive read as UTC) and any of the entity
        key columns; each view joins on the key columns it shares with the frame (NULL
        matches NULL). Rows with nothing qualifying get NULLs. The frame is processed
        ``chunk_rows`` at a time so DuckDB's working memory stays bounded; for an entity
        set that does not fit in memory use ``write_historical_features``.
        """
        if AS_OF not in entity_df.columns:
            raise ValueError(
                f"entity_df needs an {AS_OF!r} column (the time each row asks at); "
                f"it has {list(entity_df.columns)}"
            )
        query = _Query.make(ttl, source_delay, knowledge, chunk_rows, include_timestamps)
        wanted = self._resolve(features)
        names = self._output_names(wanted, entity_df.columns, full_feature_names)
        as_of = _as_utc(entity_df[AS_OF])
        n = len(entity_df)
        parts: list[pd.DataFrame] = []
        with self._connection() as con, transaction(con, commit=False):
            plans = self._plans(con, wanted, entity_df.columns, "entity_df")
            for start in range(0, max(n, 1), chunk_rows):
                stop = min(start + chunk_rows, n)
                parts.append(
                    self._chunk(
                        con,
                        entity_df.iloc[start:stop],
                        as_of.iloc[start:stop],
                        plans,
                        names,
                        query,
                    )
                )
        result = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return _attach(entity_df, result)

    def write_historical_features(
        self,
        entities: str | Path | Sequence[str | Path],
        features: str | Sequence[str],
        out_path: str | Path,
        *,
        ttl: timedelta | None = None,
        source_delay: timedelta = timedelta(0),
        knowledge: Knowledge = "observed",
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        full_feature_names: bool = False,
        include_timestamps: bool = False,
    ) -> dict[str, object]:
        """``get_historical_features`` for an entity set larger than memory, into a parquet file.

        ``entities`` is a parquet file, a directory of ``*.parquet`` files, a glob, a list
        of those, or the name of a relation in the store's database (read as committed);
        its ``as_of`` must be a timestamp (naive is UTC) or a date. It is streamed by
        DuckDB and answered ``chunk_rows`` rows at a time by the same join as
        ``get_historical_features`` (same answers, same columns), so only one chunk is ever
        held in Python. ``out_path`` becomes one parquet file with the rows in input order
        (files sorted by name, rows in file order; a relation in scan order). It is written
        under a temporary name and renamed at the end: an existing file is replaced
        atomically, and a failure leaves it (or its absence) untouched.

        Returns ``{"path", "rows", "chunks", "seconds"}``.
        """
        started = time.perf_counter()
        query = _Query.make(ttl, source_delay, knowledge, chunk_rows, include_timestamps)
        wanted = self._resolve(features)
        out_path = Path(out_path)
        if out_path.is_dir():
            raise IsADirectoryError(f"out_path {out_path} is a directory; name a parquet file")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex}.tmp")
        rows = chunks = 0
        with self._connection() as con, transaction(con, commit=False):
            source = _EntitySource.open(con, entities)
            names = self._output_names(wanted, source.columns, full_feature_names)
            plans = self._plans(con, wanted, source.columns, "entities")
            # The scan streams on a cursor (its own connection): a query on `con` would end
            # it. The joins stay on `con`, inside the one transaction that read the ranges.
            cursor = con.cursor()
            writer: pq.ParquetWriter | None = None
            try:
                for chunk in source.chunks(cursor, chunk_rows):
                    table = self._chunk_arrow(con, chunk, source.columns, plans, names, query)
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema)
                    elif not table.schema.equals(writer.schema):
                        table = table.cast(writer.schema)
                    writer.write_table(table)
                    rows += table.num_rows
                    chunks += 1
                if writer is not None:
                    writer.close()
                    writer = None
                tmp.replace(out_path)
            except BaseException:
                if writer is not None:
                    with suppress(Exception):
                        writer.close()
                tmp.unlink(missing_ok=True)
                raise
            finally:
                cursor.close()
        return {
            "path": str(out_path),
            "rows": rows,
            "chunks": chunks,
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _plans(
        self,
        con: duckdb.DuckDBPyConnection,
        wanted: dict[str, list[str]],
        entity_columns: Sequence[str],
        what: str,
    ) -> list[_Plan]:
        """Per view: the keys it shares with the entities and its order key, read once."""
        plans = []
        for view_name, columns in wanted.items():
            view = self.view(view_name)
            keys = [k for k in view.keys if k in entity_columns]
            if view.keys and not keys:
                raise ValueError(
                    f"{what} shares no key column with view {view_name!r} (keys {list(view.keys)})"
                )
            plans.append((view, keys, columns, self._order(con, view)))
        return plans

    def _answer(
        self,
        probe: duckdb.DuckDBPyRelation,
        n: int,
        plans: list[_Plan],
        query: _Query,
        fetch: Callable[[duckdb.DuckDBPyRelation], _R],
    ) -> list[tuple[FeatureView, list[str], _R]]:
        """The join for one chunk, whatever holds it: one ASOF query per view.

        ``probe`` (over pandas or Arrow, on the transaction's connection) has the shared key
        columns, ``__as_of`` and ``__row`` (0..n-1); it is named ``__pit_entity`` for each
        query only. ``con.register`` would do, but inside a transaction DuckDB keeps every
        unregistered object alive until the end: all chunks would stay in memory.
        Each result is ``fetch``-ed with ``__row`` then the columns, in entity order.
        """
        name = "__pit_entity"
        max_t, min_t = probe.query(
            name, f"SELECT max(epoch_us(__as_of)), min(epoch_us(__as_of)) FROM {name}"
        ).fetchall()[0]
        results = []
        for view, keys, columns, order in plans:
            sql = self._view_sql(
                view,
                keys,
                columns,
                order,
                knowledge=query.knowledge,
                ttl_us=query.ttl_us,
                delay_us=query.delay_us,
                bounds=(max_t, min_t),
                with_times=query.with_times,
                semi_join=n * _SEMI_JOIN_RATIO < order.rows,
            )
            res = fetch(probe.query(name, sql))
            if len(res) != n:  # pragma: no cover - guards the one-row promise
                raise RuntimeError(f"{view.name}: {len(res)} rows for {n} entities")
            results.append((view, columns, res))
        return results

    def _chunk(
        self,
        con: duckdb.DuckDBPyConnection,
        chunk: pd.DataFrame,
        as_of: pd.Series,
        plans: list[_Plan],
        names: dict[tuple[str, str], str],
        query: _Query,
    ) -> pd.DataFrame:
        """Answer one in-memory chunk as pandas columns, in request order."""
        key_cols = sorted({k for _, keys, _, _ in plans for k in keys})
        frame = pd.DataFrame({k: chunk[k].to_numpy() for k in key_cols})
        frame["__as_of"] = as_of.dt.tz_localize(None).to_numpy()  # naive UTC, µs kept
        frame["__row"] = np.arange(len(chunk), dtype=np.int64)
        out: dict[str, object] = {}
        answers = self._answer(con.from_df(frame), len(chunk), plans, query, _fetch_df)
        for view, columns, res in answers:
            for c in columns:
                out[names[(view.name, c)]] = res[c].array
            if query.with_times:
                for what in ("observed", "ingested"):
                    out[f"{view.name}__{what}_at"] = (
                        pd.to_datetime(  # cache=False: pandas 2.3 cache breaks on Int64 with NA
                            res[f"__{what[0]}"], unit="us", utc=True, cache=False
                        ).array
                    )
        return pd.DataFrame(out, index=pd.RangeIndex(len(chunk)))

    def _chunk_arrow(
        self,
        con: duckdb.DuckDBPyConnection,
        chunk: pa.Table,
        entity_columns: Sequence[str],
        plans: list[_Plan],
        names: dict[tuple[str, str], str],
        query: _Query,
    ) -> pa.Table:
        """Answer one streamed chunk: its entity columns, then the features, as Arrow."""
        n = chunk.num_rows
        key_cols = sorted({k for _, keys, _, _ in plans for k in keys})
        probe = pa.table(
            {
                **{k: chunk[k] for k in key_cols},
                "__as_of": chunk[_PIT_AS_OF],
                "__row": pa.array(np.arange(n, dtype=np.int64)),
            }
        )
        out = {c: chunk[c] for c in entity_columns}
        answers = self._answer(con.from_arrow(probe), n, plans, query, _fetch_arrow)
        for view, columns, res in answers:
            for c in columns:
                out[names[(view.name, c)]] = res[c]
            if query.with_times:
                for what in ("observed", "ingested"):
                    out[f"{view.name}__{what}_at"] = pc.cast(
                        res[f"__{what[0]}"], pa.timestamp("us", tz="UTC")
                    )
        return pa.table(out)

    # ------------------------------------------------------------------ online
    def materialize_online(self, view_name: str) -> int:
        """(Re)build ``online_features_<view>``: the latest row per full entity key.

        Same total order as the offline join (observed, ingested, sequence, rowid/values),
        computed set-based with arg_max; replaces the table atomically.
        """
        view = self.view(view_name)
        with self._connection(read_only=False) as con:
            order = self._order(con, view, force_struct=True)
            rel = _relation(view.table)
            keys = [_q(k) for k in view.keys]
            cols = [view.timestamp, *([view.ingested] if view.ingested else []), *view.features]
            base = (
                "SELECT *, "
                f"epoch_us({_q(view.timestamp)}) AS __o, "
                + (
                    f"epoch_us({_q(view.ingested)}) AS __i, "
                    if view.ingested
                    else "NULL::BIGINT AS __i, "
                )
                + (f"CAST({_q(view.sequence)} AS BIGINT) AS __s, " if view.sequence else "")
                + ("rowid AS __r " if view.has_rowid else "NULL AS __none ")
                + f"FROM {rel} WHERE {_q(view.timestamp)} IS NOT NULL"
            )
            aggs = ", ".join(f"arg_max({_q(c)}, {order.key_sql}) AS {_q(c)}" for c in cols)
            group = f" GROUP BY {', '.join(keys)}" if keys else ""
            select_keys = ", ".join(keys) + ", " if keys else ""
            table = _q(view.online_table)
            with transaction(con, commit=True):
                con.execute(
                    f"CREATE OR REPLACE TABLE {table} AS "
                    f"SELECT {select_keys}{aggs} FROM ({base}){group}"
                )
            return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])

    def get_online_features(
        self,
        keys: pd.DataFrame,
        features: str | Sequence[str],
        *,
        full_feature_names: bool = False,
        include_timestamps: bool = False,
    ) -> pd.DataFrame:
        """Latest known value per key from the ``online_features_<view>`` tables.

        ``keys`` must hold every key column of each requested view (NULL matches NULL);
        one output row per input row, in order. Run ``materialize_online`` (the
        ``online_features`` asset) first.
        """
        wanted = self._resolve(features)
        names = self._output_names(wanted, keys.columns, full_feature_names)
        out: dict[str, object] = {}
        with self._connection() as con:
            for view_name, columns in wanted.items():
                view = self.view(view_name)
                missing = [k for k in view.keys if k not in keys.columns]
                if missing:
                    raise ValueError(f"keys lacks {missing} needed by view {view_name!r}")
                table = view.online_table
                exists = con.execute(
                    "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
                ).fetchall()[0][0]
                if not exists:
                    raise LookupError(
                        f"{table} does not exist: materialize the online_features asset "
                        f"(FeatureStore.materialize_online({view_name!r})) first"
                    )
                frame = pd.DataFrame({k: keys[k].to_numpy() for k in view.keys})
                frame["__row"] = np.arange(len(keys), dtype=np.int64)
                cond = (
                    " AND ".join(
                        f"{_norm(view, k, f'CAST(q.{_q(k)} AS {view.types[k]})')} "
                        f"IS NOT DISTINCT FROM {_norm(view, k, f'o.{_q(k)}')}"
                        for k in view.keys
                    )
                    or "TRUE"
                )
                extra = []
                if include_timestamps:
                    extra.append(f"epoch_us(o.{_q(view.timestamp)}) AS __observed_us")
                    if view.ingested:
                        extra.append(f"epoch_us(o.{_q(view.ingested)}) AS __ingested_us")
                sel = ", ".join(["q.__row", *[f"o.{_q(c)}" for c in columns], *extra])
                con.register("__online_keys", frame)
                try:
                    res = con.execute(
                        f"SELECT {sel} FROM __online_keys q LEFT JOIN {_q(table)} o ON {cond} "
                        "ORDER BY q.__row"
                    ).df()
                finally:
                    con.unregister("__online_keys")
                for c in columns:
                    out[names[(view_name, c)]] = res[c].to_numpy()
                if include_timestamps:
                    for what in ("observed", "ingested"):
                        col = f"__{what}_us"
                        if col in res:
                            out[f"{view_name}__{what}_at"] = pd.to_datetime(
                                res[col], unit="us", utc=True, cache=False
                            ).to_numpy()
        return _attach(keys, pd.DataFrame(out))


def _norm(view: FeatureView, key: str, expr: str) -> str:
    """Key normalisation shared by both sides of an online join (NaN is NULL, -0.0 is 0.0)."""
    if view.types[key] in _FLOAT_TYPES:
        return f"(CASE WHEN isnan({expr}) THEN NULL ELSE {expr} + 0.0 END)"
    return expr


def _attach(frame: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``extra``'s columns appended by position, keeping frame's index."""
    out = pd.concat([frame.reset_index(drop=True), extra.reset_index(drop=True)], axis=1)
    out.index = frame.index
    return out


def _fetch_df(rel: duckdb.DuckDBPyRelation) -> pd.DataFrame:
    return rel.df()


def _fetch_arrow(rel: duckdb.DuckDBPyRelation) -> pa.Table:
    return rel.to_arrow_table()


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class _EntitySource:
    """An entity set too large for memory: a parquet scan or a relation, streamed by DuckDB."""

    from_sql: str
    columns: tuple[str, ...]
    as_of_sql: str
    pos_sql: str | None  # strictly increasing in the intended row order, when checkable

    @classmethod
    def open(
        cls, con: duckdb.DuckDBPyConnection, entities: str | Path | Sequence[str | Path]
    ) -> _EntitySource:
        files = _parquet_files(con, entities)
        if files is None:
            from_sql = _relation(str(entities))
            what = f"relation {entities!r}"
        else:
            from_sql = f"read_parquet([{', '.join(_sql_str(f) for f in files)}])"
            what = f"parquet {files[0]!r}" + (
                f" (+{len(files) - 1} files)" if len(files) > 1 else ""
            )
        try:
            described = con.execute(f"DESCRIBE SELECT * FROM {from_sql}").fetchall()
        except duckdb.Error as exc:
            raise KeyError(f"entities: cannot read {what}: {exc}") from exc
        types = {row[0]: str(row[1]) for row in described}
        if AS_OF not in types:
            raise ValueError(
                f"entities need an {AS_OF!r} column (the time each row asks at); "
                f"{what} has {list(types)}"
            )
        clash = [c for c in types if c in (_PIT_AS_OF, _PIT_POS)]
        if clash:
            raise ValueError(f"entities: column names {clash} are reserved")
        as_of_type = types[AS_OF]
        # any unit to µs (epoch_us takes no _NS types): zoned stays zoned, naive is UTC
        if as_of_type.startswith("TIMESTAMPTZ") or "TIME ZONE" in as_of_type:
            as_of_sql = f"CAST({_q(AS_OF)} AS TIMESTAMPTZ)"
        elif as_of_type.startswith("TIMESTAMP") or as_of_type == "DATE":
            as_of_sql = f"CAST({_q(AS_OF)} AS TIMESTAMP)"
        else:  # strings would be parsed in the session's time zone: make the caller decide
            raise ValueError(
                f"entities: {AS_OF!r} is {as_of_type}; store it as TIMESTAMPTZ, or as a "
                "naive TIMESTAMP in UTC"
            )
        pos_sql: str | None = None
        if files is not None:
            # DuckDB's virtual columns, unless the data shadows them
            if not {"file_index", "file_row_number"} & set(types):
                pos_sql = "(file_index::BIGINT << 40) + file_row_number"
        else:
            with suppress(duckdb.Error):
                con.execute(f"SELECT rowid FROM {from_sql} LIMIT 0")
                pos_sql = "rowid"
        return cls(from_sql, tuple(types), as_of_sql, pos_sql)

    def chunks(self, cursor: duckdb.DuckDBPyConnection, rows: int) -> Iterator[pa.Table]:
        """Tables of ``rows`` entity rows (the last shorter; one empty table for no rows).

        The scan streams in input order (DuckDB keeps insertion order for scans); that
        order is checked on the row position rather than trusted.
        """
        cols = ", ".join(_q(c) for c in self.columns)
        sql = (
            f"SELECT {cols}, {self.as_of_sql} AS {_PIT_AS_OF}, "
            f"{self.pos_sql or 'NULL::BIGINT'} AS {_PIT_POS} FROM {self.from_sql}"
        )
        reader = cursor.sql(sql).to_arrow_reader(min(rows, 1 << 20))
        last = -1
        empty = True
        for table in _rechunk(reader, rows):
            empty = False
            if self.pos_sql is not None:
                pos = table[_PIT_POS].to_numpy()
                if pos[0] <= last or bool((np.diff(pos) <= 0).any()):
                    raise RuntimeError(
                        "entity rows arrived out of input order "
                        "(is DuckDB's preserve_insertion_order off?)"
                    )
                last = int(pos[-1])
            yield table
        if empty:
            yield reader.schema.empty_table()


def _parquet_files(
    con: duckdb.DuckDBPyConnection, entities: str | Path | Sequence[str | Path]
) -> list[str] | None:
    """The parquet files ``entities`` names, in order; None when it names a relation.

    A string is a path when it exists, has a path separator or a glob character, or ends
    in ``.parquet``; a directory stands for its ``*.parquet`` files. Each glob's matches
    are sorted by name, so the row order of the output does not depend on the file system.
    """
    if isinstance(entities, str):
        is_path = (
            entities.lower().endswith(".parquet")
            or any(ch in entities for ch in "/\\*?[")
            or Path(entities).exists()
        )
        if not is_path:
            return None
        items: Sequence[str | Path] = [entities]
    elif isinstance(entities, Path):
        items = [entities]
    else:
        items = list(entities)
        if not items:
            raise ValueError("entities: no parquet files given")
    files: list[str] = []
    for item in items:
        pattern = str(Path(item) / "*.parquet") if Path(item).is_dir() else str(item)
        found = sorted(
            row[0] for row in con.execute("SELECT file FROM glob(?)", [pattern]).fetchall()
        )
        if not found:
            raise FileNotFoundError(f"entities: no parquet file matches {pattern!r}")
        files += found
    return files


def _rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Regroup a stream's batches (row-group sized) into tables of exactly ``rows`` rows."""
    pending: list[pa.RecordBatch] = []
    have = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch)
        have += batch.num_rows
        if have < rows:
            continue
        table = pa.Table.from_batches(pending)
        start = 0
        while have - start >= rows:
            yield table.slice(start, rows)
            start += rows
        rest = table.slice(start)
        pending, have = rest.to_batches(), rest.num_rows
    if have:
        yield pa.Table.from_batches(pending)


def _as_utc(values: pd.Series) -> pd.Series:
    """``as_of`` as tz-aware UTC; naive datetimes (and strings without offset) are UTC."""
    try:
        return pd.to_datetime(values, utc=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"as_of could not be read as timestamps: {exc}") from exc
