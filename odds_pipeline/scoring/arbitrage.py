"""Arbitrage scanner: best cross-book combinations over `odds_quotes`, merged into windows.

Set-based DuckDB SQL end to end (no Python loop over quotes, instants or windows):

1. Quotes in scope, with their *live interval* ``[observed_at, end_at)``. A quote ends when
   the book replaces it (its next row for the outcome), when it is withdrawn (a row in
   ``quote_removals``), or when it gets ``staleness_seconds`` old (it counts at ``t`` while
   ``t - observed_at < staleness_seconds``), whichever comes first. A row with a bad price
   (not finite, or <= 1) is never priced but still ends the book's previous quote: the book
   no longer shows a usable price. By default (``latest_line_only``) a book's newest row for
   an outcome replaces its rows at *every* line: change logs carry no removal when a spread
   or total moves, so per-point keys would let the old line linger and pair into phantom
   arbitrage.
2. The instants of an (event, market): every time a quote starts or ends. Ends are
   instants too, so a window closes when its leg lapses or is withdrawn, not at whatever
   later time some book happens to quote next.
3. At each instant and line: the best effective price per outcome across books (ties by
   bookmaker name), ``margin = 1 - sum(1 / price)``. h2h is 3-way when the event's h2h has
   a draw anywhere in ``odds_quotes``, spreads pair home at ``p`` with away at ``-p``,
   totals over and under at the same point.
4. Consecutive arbitrage instants of one (event, market, line) form a window; the legs at
   its best instant are staked for the bankroll (equal profit, rounded down to each book's
   increment, scaled under each book's limit) and the window is *actionable* or
   *suspicious* with the reasons (never dropped).

Withdrawals: the change-log loader writes ``quote_removals`` (:data:`QUOTE_REMOVALS_SQL`).
A removal whose ``point`` is NULL withdraws the outcome at every line (The Odds API change
logs name no point on removals); a removal at the same instant as a quote wins. The
scanner works without the table (then quotes end by replacement or staleness only).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from dataclasses import replace as _replace
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pandas as pd

from odds_pipeline.ingestion.removals import QUOTE_REMOVALS_SQL
from odds_pipeline.ingestion.store import ensure_schema
from odds_pipeline.market.quotes import MARKETS, QUOTE_COLUMNS
from odds_pipeline.warehouse import table_exists

__all__ = [
    "MARGIN_TOLERANCE",
    "QUOTE_REMOVALS_SQL",
    "REASONS",
    "ScanConfig",
    "ScanResult",
    "days_to_scan",
    "ensure_removals_table",
    "feed_now",
    "legs_of",
    "new_actionable_windows",
    "scan",
    "scan_day",
    "scan_frame",
    "stored_windows",
    "window_keys",
    "write_windows",
]

# Why a window is kept apart, in the order the first one becomes `reason`.
REASONS: tuple[str, ...] = (
    "one_leg",  # a single outcome quoted: 1/p < 1 says nothing
    "missing_leg",  # a 3-way market with an outcome missing
    "leg_withdrawn",  # a best-instant leg was withdrawn before the window closed
    "stale_leg",  # a leg's own last_update older than staleness_seconds at the best instant
    "margin_above_cap",  # margin > max_margin: a palpable error or a stale line, not money
    "unprofitable_after_rounding",  # stakes rounded to increments / limits lose the edge
)

# 1 - sum(1/p) carries float error (~1e-16, and the sum's order varies between runs):
# 1.04 and 26.0 sum to 0.9999999999999999. A margin must beat min_margin by more than this.
MARGIN_TOLERANCE = 1e-12

_OUTCOME_ORDER = "list_position(['home', 'draw', 'away', 'over', 'under'], l.outcome)"
_TEMP_TABLES = (
    "_arb_books",
    "_arb_events",
    "_arb_rows",
    "_arb_bo",
    "_arb_k",
    "_arb_rm",
    "_arb_expected",
    "_arb_vq",
    "_arb_inst",
    "_arb_live",
    "_arb_best",
    "_arb_combo",
    "_arb_win",
    "_arb_legs",
)


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ScanConfig:
    """What counts as a quote, an arbitrage and a stake; validated once, here.

    ``staleness_seconds=None`` keeps a quote live until replaced or withdrawn, the right
    reading of a change log (an unchanged quote has no new row) once removals are loaded.
    """

    staleness_seconds: float | None = 120.0
    commission: Mapping[str, float] = field(default_factory=dict)
    bankroll: float = 1000.0
    stake_increment: Mapping[str, float] = field(default_factory=dict)
    default_increment: float = 1.0
    stake_limits: Mapping[str, float] = field(default_factory=dict)
    max_margin: float = 0.05
    min_margin: float = 0.0
    markets: tuple[str, ...] = ("h2h", "spreads", "totals")
    latest_line_only: bool = True

    def __post_init__(self) -> None:
        if not (_finite(self.bankroll) and self.bankroll > 0):
            raise ValueError(f"bankroll must be a positive amount, got {self.bankroll!r}")
        if self.staleness_seconds is not None and not (
            _finite(self.staleness_seconds) and self.staleness_seconds > 0
        ):
            raise ValueError(
                f"staleness_seconds must be positive or None, got {self.staleness_seconds!r}"
            )
        if not (_finite(self.default_increment) and self.default_increment > 0):
            raise ValueError(f"default_increment must be positive, got {self.default_increment!r}")
        for book, value in self.commission.items():
            if not (_finite(value) and 0 <= value < 1):
                raise ValueError(f"commission for {book!r} must be in [0, 1), got {value!r}")
        for book, value in self.stake_increment.items():
            if not (_finite(value) and value > 0):
                raise ValueError(f"stake increment for {book!r} must be positive, got {value!r}")
        for book, value in self.stake_limits.items():
            if not (_finite(value) and value > 0):
                raise ValueError(f"stake limit for {book!r} must be positive, got {value!r}")
        if not (_finite(self.min_margin) and _finite(self.max_margin)):
            raise ValueError("min_margin and max_margin must be finite numbers")
        if not 0 <= self.min_margin < self.max_margin:
            raise ValueError(
                f"need 0 <= min_margin < max_margin, got {self.min_margin!r}, {self.max_margin!r}"
            )
        markets = tuple(self.markets)
        unknown = sorted(set(markets) - set(MARKETS))
        if unknown or not markets:
            raise ValueError(f"markets must be among {sorted(MARKETS)}, got {list(markets)!r}")
        object.__setattr__(self, "markets", markets)

    def book_rows(self) -> list[tuple[str, float, float | None, float | None]]:
        """(bookmaker, commission, increment, limit) for every book the config names."""
        books = sorted({*self.commission, *self.stake_increment, *self.stake_limits})
        return [
            (
                b,
                float(self.commission.get(b, 0.0)),
                float(self.stake_increment[b]) if b in self.stake_increment else None,
                float(self.stake_limits[b]) if b in self.stake_limits else None,
            )
            for b in books
        ]


@dataclass
class ScanResult:
    """Windows (actionable and suspicious together, `status` tells) and what was read."""

    windows: pd.DataFrame
    quotes_read: int
    quotes_ignored_bad_price: int
    quotes_ignored_bad_shape: int
    quotes_duplicate: int
    removals_read: int
    instants_scanned: int
    combinations_scanned: int
    arbitrage_instants: int
    config: ScanConfig

    @property
    def quotes_used(self) -> int:
        """Rows that took part: read = used + duplicate + bad shape + bad price."""
        return (
            self.quotes_read
            - self.quotes_duplicate
            - self.quotes_ignored_bad_shape
            - self.quotes_ignored_bad_price
        )

    @property
    def actionable(self) -> pd.DataFrame:
        return self.windows[self.windows["status"] == "actionable"]

    @property
    def suspicious(self) -> pd.DataFrame:
        return self.windows[self.windows["status"] == "suspicious"]

    def suspicious_by_reason(self) -> dict[str, int]:
        counts = self.suspicious["reason"].value_counts()
        return {r: int(counts.get(r, 0)) for r in REASONS if counts.get(r, 0)}

    @property
    def counts(self) -> dict[str, object]:
        """The figures an asset puts in metadata: every quote read is used or counted."""
        return {
            "quotes_read": self.quotes_read,
            "quotes_used": self.quotes_used,
            "quotes_ignored_bad_price": self.quotes_ignored_bad_price,
            "quotes_ignored_bad_shape": self.quotes_ignored_bad_shape,
            "quotes_duplicate": self.quotes_duplicate,
            "removals_read": self.removals_read,
            "instants_scanned": self.instants_scanned,
            "combinations_scanned": self.combinations_scanned,
            "arbitrage_instants": self.arbitrage_instants,
            "windows": len(self.windows),
            "actionable": len(self.actionable),
            "suspicious": len(self.suspicious),
            "suspicious_by_reason": self.suspicious_by_reason(),
        }


def ensure_removals_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(QUOTE_REMOVALS_SQL)


# --------------------------------------------------------------------------- SQL stages
# Keyed joins on small id tables rather than unpartitioned window sorts over every quote,
# and each intermediate table dropped once read: ~1.5M quotes scan in tens of seconds.

# One row per (key, observed_at): copies collapse to the latest ingested one.
_ROWS_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_rows AS
WITH g AS (
    SELECT event_id, bookmaker, market, outcome, point, observed_at, count(*) AS n_rows,
        arg_max(struct_pack(price, last_update, in_play), pick) AS kept
    FROM (
        SELECT q.event_id, q.bookmaker, q.market, q.outcome,
            CASE WHEN q.market = 'h2h' THEN NULL::DOUBLE ELSE q.point END AS point,
            q.observed_at, q.price, q.last_update, q.in_play,
            (q.ingested_at, q.load_id, coalesce(q.source_record, ''), q.price) AS pick
        FROM odds_quotes q {event_join}
        WHERE q.market IN ({markets}) {row_filter}
    )
    GROUP BY event_id, bookmaker, market, outcome, point, observed_at
)
SELECT g.* EXCLUDE (kept), kept.price AS price, kept.last_update AS last_update,
    kept.in_play AS in_play,
    coalesce(isfinite(kept.price) AND kept.price > 1.0, false) AS price_ok,
    coalesce(CASE market
        WHEN 'h2h' THEN outcome IN ('home', 'away', 'draw')
        WHEN 'spreads' THEN outcome IN ('home', 'away') AND isfinite(point)
        WHEN 'totals' THEN outcome IN ('over', 'under') AND isfinite(point)
    END, false) AS shape_ok
FROM g
"""

_ROW_COUNTS_SQL = """
SELECT coalesce(sum(n_rows), 0), coalesce(sum(n_rows - 1), 0),
    count(*) FILTER (WHERE NOT shape_ok), count(*) FILTER (WHERE shape_ok AND NOT price_ok)
FROM _arb_rows
"""

# Ids: em_id per (event, market); bo_id per (event, market, outcome, bookmaker), numbered so
# that within an (event, market, outcome) the order of bo_id is the order of bookmaker names.
_BO_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_bo AS
SELECT k.*, dense_rank() OVER (ORDER BY k.event_id, k.market) AS em_id,
    row_number() OVER (ORDER BY k.event_id, k.market, k.outcome, k.bookmaker) AS bo_id,
    coalesce(b.commission, 0.0) AS commission,
    coalesce(b.increment, {default_increment}) AS increment, b.stake_limit
FROM (SELECT DISTINCT event_id, market, bookmaker, outcome FROM _arb_rows WHERE shape_ok) k
LEFT JOIN _arb_books b ON b.bookmaker = k.bookmaker
"""

_KEYS_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_k AS
SELECT b.em_id, b.bo_id, b.market, b.outcome, r.point, r.observed_at, r.price, r.last_update,
    r.in_play, r.price_ok, 1.0 + (r.price - 1.0) * (1.0 - b.commission) AS eff_price
FROM _arb_rows r
JOIN _arb_bo b ON b.event_id = r.event_id AND b.market = r.market
 AND b.bookmaker = r.bookmaker AND b.outcome = r.outcome
WHERE r.shape_ok
"""

_REMOVALS_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_rm AS
SELECT k.bo_id, CASE WHEN r.market = 'h2h' THEN NULL ELSE r.point END AS point, r.removed_at
FROM quote_removals r
JOIN _arb_bo k
  ON k.event_id = r.event_id AND k.bookmaker = r.bookmaker AND k.market = r.market
 AND k.outcome = r.outcome
WHERE r.removed_at IS NOT NULL {removal_filter}
"""
_NO_REMOVALS_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_rm (bo_id BIGINT, point DOUBLE, removed_at TIMESTAMPTZ)
"""
# The first removal at or after a quote's instant: of the outcome (point NULL) or its line.
_REMOVAL_JOINS = """
    ASOF LEFT JOIN (SELECT bo_id, removed_at FROM _arb_rm WHERE point IS NULL) ra
      ON ra.bo_id = v.bo_id AND v.observed_at <= ra.removed_at
    ASOF LEFT JOIN (SELECT bo_id, point, removed_at FROM _arb_rm WHERE point IS NOT NULL) rp
      ON rp.bo_id = v.bo_id AND rp.point = v.point AND v.observed_at <= rp.removed_at
"""

# 3 outcomes for an h2h market whose event has a draw anywhere, else 2.
_EXPECTED_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_expected AS
SELECT em.em_id, em.event_id, em.market,
    CASE WHEN em.market = 'h2h' AND d.event_id IS NOT NULL THEN 3 ELSE 2 END AS n_expected
FROM (SELECT DISTINCT em_id, event_id, market FROM _arb_bo) em
LEFT JOIN (SELECT DISTINCT event_id FROM odds_quotes WHERE market = 'h2h' AND outcome = 'draw') d
  ON d.event_id = em.event_id
"""

# Priced quotes with their live interval [observed_at, end_at) and why it ends. {key} is
# what a newer row replaces: the book's outcome at every line, or only at the same point.
_VALID_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_vq AS
WITH nxt AS (
    SELECT {key}, observed_at,
        lead(observed_at) OVER (PARTITION BY {key} ORDER BY observed_at) AS next_at
    FROM (SELECT DISTINCT {key}, observed_at FROM _arb_k)
),
v AS (
    SELECT k.* EXCLUDE (price_ok, market), n.next_at,
        CASE k.market WHEN 'spreads' THEN CASE WHEN k.outcome = 'away' THEN 0.0 - k.point
            ELSE k.point + 0.0 END WHEN 'totals' THEN k.point + 0.0 END AS line
    FROM _arb_k k
    JOIN nxt n ON n.observed_at = k.observed_at AND {key_join}
    WHERE k.price_ok
),
r AS (
    SELECT v.*, {removed} AS removed_at, {lapse} AS lapse_at
    FROM v {removal_joins}
),
e AS (SELECT r.*, least(removed_at, next_at, lapse_at) AS end_at FROM r)
SELECT e.*,
    CASE WHEN removed_at = end_at THEN 'removed' WHEN next_at = end_at THEN 'replaced'
         WHEN lapse_at = end_at THEN 'stale' END AS end_reason
FROM e
"""

# Instants: every start and end of a quote of the (event, market), numbered in time, and
# `since` when given.
_INSTANTS_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_inst AS
SELECT em_id, t, row_number() OVER (PARTITION BY em_id ORDER BY t) AS rn
FROM (
    SELECT em_id, observed_at AS t FROM _arb_vq
    UNION SELECT em_id, end_at FROM _arb_vq WHERE end_at IS NOT NULL
    {since_instant}
)
WHERE TRUE {instant_filter}
"""

# Each quote expanded over the instants it is live at (output-sized, no range join).
_LIVE_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_live AS
WITH n AS (SELECT em_id, max(rn) AS n FROM _arb_inst GROUP BY em_id),
span AS (
    SELECT q.rowid AS qid, q.em_id, q.bo_id, q.line, q.outcome, q.eff_price,
        coalesce(s.rn, 1) AS start_rn, coalesce(e.rn, n.n + 1) AS end_rn
    FROM _arb_vq q
    JOIN n ON n.em_id = q.em_id
    LEFT JOIN _arb_inst s ON s.em_id = q.em_id AND s.t = q.observed_at
    LEFT JOIN _arb_inst e ON e.em_id = q.em_id AND e.t = q.end_at
    WHERE TRUE {live_filter}
)
SELECT qid, em_id, bo_id, line, outcome, eff_price, unnest(range(start_rn, end_rn)) AS rn
FROM span
"""

# Best price per outcome; ties to the first bookmaker by name (bo_id order).
_BEST_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_best AS
SELECT em_id, rn, line, outcome, max(eff_price) AS eff_price,
    arg_min(qid, (-eff_price, bo_id)) AS qid
FROM _arb_live GROUP BY em_id, rn, line, outcome
"""

_COMBO_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_combo AS
SELECT b.em_id, b.rn, b.line, count(*) AS n_legs, 1.0 - sum(1.0 / b.eff_price) AS margin,
    count(*) = any_value(x.n_expected) AS complete
FROM _arb_best b JOIN _arb_expected x ON x.em_id = b.em_id
GROUP BY b.em_id, b.rn, b.line
"""

# Gaps and islands over the (event, market)'s instant numbers; best instant = max margin,
# the earliest on ties.
_WINDOWS_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_win AS
WITH a AS (
    SELECT *, rn - row_number() OVER (PARTITION BY em_id, line, complete ORDER BY rn) AS island
    FROM _arb_combo WHERE margin > {min_margin}
),
g AS (
    SELECT em_id, line, complete, min(rn) AS first_rn, max(rn) AS last_rn,
        count(*) AS n_instants, max(margin) AS best_margin,
        arg_min(rn, (-margin, rn)) AS best_rn, arg_min(n_legs, (-margin, rn)) AS n_legs
    FROM a GROUP BY em_id, line, complete, island
),
w AS (SELECT row_number() OVER (ORDER BY em_id, first_rn, line, complete) AS wid, * FROM g),
-- one equality join for the four instants a window needs (four joins on _arb_inst let the
-- optimizer pair its copies by em_id alone: 10^8 rows)
wanted AS (
    SELECT wid, em_id, unnest([first_rn, last_rn, best_rn, last_rn + 1]) AS rn,
        unnest(['opened', 'last', 'best', 'closed']) AS role
    FROM w
),
times AS (
    SELECT x.wid,
        max(i.t) FILTER (WHERE x.role = 'opened') AS opened_at,
        max(i.t) FILTER (WHERE x.role = 'last') AS last_at,
        max(i.t) FILTER (WHERE x.role = 'best') AS best_at,
        max(i.t) FILTER (WHERE x.role = 'closed') AS closed_at
    FROM wanted x JOIN _arb_inst i ON i.em_id = x.em_id AND i.rn = x.rn
    GROUP BY x.wid
)
SELECT w.*, t.opened_at, t.last_at, t.best_at, t.closed_at
FROM w JOIN times t ON t.wid = w.wid
"""

# Legs at the best instant and their stakes: equal profit on effective prices, each book's
# total scaled under its limit, then every leg rounded down to its book's increment.
_LEGS_SQL = """
CREATE OR REPLACE TEMP TABLE _arb_legs AS
WITH l AS (
    SELECT w.wid, b.outcome, bo.bookmaker, q.point, q.price, q.eff_price, q.observed_at,
        q.last_update, q.in_play, q.end_at, q.end_reason, bo.increment, bo.stake_limit,
        {bankroll} * (1.0 / q.eff_price) / sum(1.0 / q.eff_price) OVER (PARTITION BY w.wid)
            AS raw_stake
    FROM _arb_win w
    JOIN _arb_best b
      ON b.em_id = w.em_id AND b.rn = w.best_rn AND b.line IS NOT DISTINCT FROM w.line
    JOIN _arb_vq q ON q.rowid = b.qid
    JOIN _arb_bo bo ON bo.bo_id = q.bo_id
),
room AS (
    SELECT wid, bookmaker, any_value(stake_limit) / sum(raw_stake) AS room
    FROM l GROUP BY wid, bookmaker
),
scale AS (SELECT wid, least(1.0, min(room)) AS scale FROM room GROUP BY wid)
SELECT l.*, s.scale,
    round(floor(l.raw_stake * s.scale / l.increment + 1e-9) * l.increment, 9) AS stake
FROM l JOIN scale s ON s.wid = l.wid
"""

_RESULT_SQL = f"""
WITH agg AS (
    SELECT l.wid,
        round(min(l.stake * l.eff_price) - sum(l.stake), 9) AS guaranteed_profit,
        round(sum(l.stake), 9) AS total_stake,
        bool_or(l.in_play) AS in_play,
        coalesce(bool_or(l.end_reason = 'removed'
            AND (w.closed_at IS NULL OR l.end_at <= w.closed_at)), false) AS withdrawn,
        coalesce(bool_or({{stale_leg}}), false) AS stale,
        to_json(list(struct_pack(
            bookmaker := l.bookmaker, outcome := l.outcome, point := l.point,
            price := l.price, effective_price := l.eff_price, stake := l.stake,
            observed_at := l.observed_at, last_update := l.last_update, in_play := l.in_play
        ) ORDER BY {_OUTCOME_ORDER}))::VARCHAR AS legs
    FROM _arb_legs l JOIN _arb_win w ON w.wid = l.wid
    GROUP BY l.wid
),
stakes AS (
    SELECT wid,
        to_json(map(list(bookmaker ORDER BY bookmaker), list(stake ORDER BY bookmaker)))::VARCHAR
            AS stakes
    FROM (SELECT wid, bookmaker, round(sum(stake), 9) AS stake FROM _arb_legs GROUP BY ALL)
    GROUP BY wid
),
flagged AS (
    SELECT w.*, a.* EXCLUDE (wid), s.stakes,
        -- list concatenation, not list_filter: lambda syntax differs across DuckDB versions
        []::VARCHAR[]
            || CASE WHEN w.n_legs = 1 THEN ['one_leg'] ELSE [] END
            || CASE WHEN w.n_legs > 1 AND NOT w.complete THEN ['missing_leg'] ELSE [] END
            || CASE WHEN a.withdrawn THEN ['leg_withdrawn'] ELSE [] END
            || CASE WHEN a.stale THEN ['stale_leg'] ELSE [] END
            || CASE WHEN w.best_margin > {{max_margin}} THEN ['margin_above_cap'] ELSE [] END
            || CASE WHEN a.guaranteed_profit <= 0 THEN ['unprofitable_after_rounding'] ELSE [] END
            AS reason_list
    FROM _arb_win w JOIN agg a ON a.wid = w.wid JOIN stakes s ON s.wid = w.wid
)
SELECT em.event_id, em.market, f.line, f.opened_at, f.closed_at,
    (epoch_us(coalesce(f.closed_at, f.last_at)) - epoch_us(f.opened_at)) / 1e6
        AS duration_seconds,
    f.n_instants, f.best_at, f.best_margin, f.n_legs, f.legs, f.stakes, f.total_stake,
    f.guaranteed_profit,
    CASE WHEN len(f.reason_list) = 0 THEN 'actionable' ELSE 'suspicious' END AS status,
    f.reason_list[1] AS reason, to_json(f.reason_list)::VARCHAR AS reasons,
    f.in_play, f.closed_at IS NULL AS still_open, f.last_at
FROM flagged f JOIN _arb_expected em ON em.em_id = f.em_id
ORDER BY f.opened_at, em.event_id, em.market, f.line NULLS FIRST, f.n_legs
"""


def _timestamp(value: datetime | str | pd.Timestamp | None) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _stale_interval(config: ScanConfig) -> str | None:
    if config.staleness_seconds is None:
        return None
    return f"to_microseconds({round(config.staleness_seconds * 1e6)}::BIGINT)"


def _drop(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    for name in names:
        con.execute(f"DROP TABLE IF EXISTS temp.{name}")


def scan(
    con: duckdb.DuckDBPyConnection,
    config: ScanConfig | None = None,
    *,
    event_ids: Iterable[str] | None = None,
    since: datetime | str | pd.Timestamp | None = None,
    until: datetime | str | pd.Timestamp | None = None,
) -> ScanResult:
    """Scan `odds_quotes` (and `quote_removals` when present) for arbitrage windows.

    Instants are limited to ``[since, until]``; quotes from before ``since`` still count
    while live. Only temporary tables are written (and dropped). No transaction of its own:
    it runs inside the caller's when there is one (a failed nested BEGIN aborts the
    caller's transaction in DuckDB 2), so wrap the call for a snapshot across writers.
    """
    config = config or ScanConfig()
    since_ts, until_ts = _timestamp(since), _timestamp(until)
    stale = _stale_interval(config)
    params: dict[str, Any] = {}
    row_filter, removal_filter, instant_filter, live_filter = "", "", "", ""
    if until_ts is not None:
        params["until"] = until_ts
        row_filter += " AND q.observed_at <= $until"
        removal_filter += " AND r.removed_at <= $until"
        instant_filter += " AND t <= $until"
    if since_ts is not None:
        params["since"] = since_ts
        instant_filter += " AND t >= $since"
        live_filter += " AND (q.end_at IS NULL OR q.end_at > $since)"
        if stale is not None:
            row_filter += f" AND q.observed_at > $since - {stale}"

    def run(sql: str, names: Iterable[str] = ()) -> None:
        con.execute(sql, {k: params[k] for k in names if k in params})

    markets = ", ".join(f"'{m}'" for m in config.markets)  # validated names only
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _arb_books (bookmaker VARCHAR, "
            "commission DOUBLE, increment DOUBLE, stake_limit DOUBLE)"
        )
        books = config.book_rows()
        if books:
            con.executemany("INSERT INTO _arb_books VALUES (?, ?, ?, ?)", books)
        event_join = ""
        if event_ids is not None:
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _arb_events AS "
                "SELECT DISTINCT unnest($ids::VARCHAR[]) AS event_id",
                {"ids": [str(e) for e in event_ids]},
            )
            event_join = "JOIN _arb_events ev ON ev.event_id = q.event_id"
        run(
            _ROWS_SQL.format(event_join=event_join, markets=markets, row_filter=row_filter),
            ["since", "until"],
        )
        read, duplicate, bad_shape, bad_price = con.execute(_ROW_COUNTS_SQL).fetchone()
        run(_BO_SQL.format(default_increment=repr(float(config.default_increment))))
        run(_KEYS_SQL)
        _drop(con, "_arb_rows")
        if table_exists(con, "quote_removals"):
            run(_REMOVALS_SQL.format(removal_filter=removal_filter), ["until"])
        else:
            run(_NO_REMOVALS_SQL)
        removals = int(con.execute("SELECT count(*) FROM _arb_rm").fetchone()[0])
        run(_EXPECTED_SQL)
        key = "bo_id" if config.latest_line_only else "bo_id, point"
        key_join = (
            "n.bo_id = k.bo_id"
            if config.latest_line_only
            else "n.bo_id = k.bo_id AND n.point IS NOT DISTINCT FROM k.point"
        )
        run(
            _VALID_SQL.format(
                key=key,
                key_join=key_join,
                removed="least(ra.removed_at, rp.removed_at)" if removals else "NULL",
                removal_joins=_REMOVAL_JOINS if removals else "",
                lapse=f"v.observed_at + {stale}" if stale else "NULL::TIMESTAMPTZ",
            )
        )
        _drop(con, "_arb_k")
        since_instant = (  # the state at `since` itself, quotes carried in from before
            "UNION SELECT DISTINCT em_id, $since FROM _arb_vq" if since_ts is not None else ""
        )
        run(
            _INSTANTS_SQL.format(instant_filter=instant_filter, since_instant=since_instant),
            ["since", "until"],
        )
        run(_LIVE_SQL.format(live_filter=live_filter), ["since"])
        run(_BEST_SQL)
        _drop(con, "_arb_live")
        run(_COMBO_SQL)
        threshold = repr(float(config.min_margin) + MARGIN_TOLERANCE)
        run(_WINDOWS_SQL.format(min_margin=threshold))
        run(_LEGS_SQL.format(bankroll=repr(float(config.bankroll))))
        stale_leg = f"l.last_update < w.best_at - {stale}" if stale else "false"
        windows = con.execute(
            _RESULT_SQL.format(stale_leg=stale_leg, max_margin=repr(float(config.max_margin)))
        ).df()
        instants, combos, arb_instants = con.execute(
            f"""
            SELECT (SELECT count(*) FROM _arb_inst), count(*),
                count(*) FILTER (WHERE complete AND margin > {threshold})
            FROM _arb_combo
            """
        ).fetchone()
    finally:
        with suppress(duckdb.Error):  # an aborted transaction drops them anyway
            _drop(con, *_TEMP_TABLES)
    return ScanResult(
        windows=_tidy(windows),
        quotes_read=int(read),
        quotes_duplicate=int(duplicate),
        quotes_ignored_bad_shape=int(bad_shape),
        quotes_ignored_bad_price=int(bad_price),
        removals_read=removals,
        instants_scanned=int(instants),
        combinations_scanned=int(combos),
        arbitrage_instants=int(arb_instants),
        config=config,
    )


def _tidy(windows: pd.DataFrame) -> pd.DataFrame:
    """UTC timestamps and plain dtypes, the same with and without rows."""
    for col in ("opened_at", "closed_at", "best_at", "last_at"):
        windows[col] = pd.to_datetime(windows[col], utc=True)
    for col in ("n_instants", "n_legs"):
        windows[col] = windows[col].astype("int64")
    return windows.drop(columns=["last_at"]).reset_index(drop=True)


_FRAME_DEFAULTS: dict[str, Any] = {
    "source": "frame",
    "load_id": "frame",
    "outcome_name": None,
    "point": None,
    "in_play": False,
    "last_update": None,
    "source_file": None,
    "source_record": None,
}


def scan_frame(
    quotes: pd.DataFrame,
    config: ScanConfig | None = None,
    *,
    removals: pd.DataFrame | None = None,
    **scan_kwargs: Any,
) -> ScanResult:
    """Scan a quotes frame (e.g. `odds_api.parse_file(path).quotes`) in an in-memory DuckDB.

    Missing optional columns get neutral defaults (`ingested_at` = `observed_at`);
    `removals` has the `quote_removals` columns.
    """
    config = config or ScanConfig()
    missing = {"event_id", "bookmaker", "market", "outcome", "price", "observed_at"} - set(
        quotes.columns
    )
    if missing:
        raise ValueError(f"quotes frame lacks columns {sorted(missing)}")
    frame = quotes.copy()
    for col, default in _FRAME_DEFAULTS.items():
        if col not in frame.columns:
            frame[col] = default
    if "ingested_at" not in frame.columns:
        frame["ingested_at"] = frame["observed_at"]
    frame = frame[QUOTE_COLUMNS]
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone='UTC'")
        ensure_schema(con)
        # pandas NaN arrives as NULL, which odds_quotes refuses: keep it NaN, to be counted
        select = ", ".join(
            "coalesce(price, 'nan'::DOUBLE)" if c == "price" else c for c in QUOTE_COLUMNS
        )
        con.execute(
            f"INSERT INTO odds_quotes ({', '.join(QUOTE_COLUMNS)}) SELECT {select} FROM frame"
        )
        if removals is not None:
            ensure_removals_table(con)
            cols = ["event_id", "bookmaker", "market", "outcome", "point", "removed_at"]
            rm = removals.copy()
            if "point" not in rm.columns:
                rm["point"] = None
            rm = rm[cols]  # read by DuckDB's replacement scan below
            con.execute(
                f"INSERT INTO quote_removals ({', '.join(cols)}) SELECT {', '.join(cols)} FROM rm"
            )
        return scan(con, config, **scan_kwargs)
    finally:
        con.close()


def legs_of(window: Mapping[str, Any] | pd.Series) -> list[dict[str, Any]]:
    """The legs JSON of one window as dicts (for reports and tests)."""
    return json.loads(window["legs"])


# --------------------------------------------------------------------------- storage

WINDOWS_TABLE = "arbitrage_windows"
# A window belongs to the UTC day it opened; `opened_day` is that day (the partition key).
DAY_COLUMN = "opened_day"
WINDOWS_DDL = f"""
CREATE TABLE IF NOT EXISTS {WINDOWS_TABLE} (
    event_id VARCHAR, market VARCHAR, line DOUBLE, opened_at TIMESTAMPTZ,
    closed_at TIMESTAMPTZ, duration_seconds DOUBLE, n_instants BIGINT, best_at TIMESTAMPTZ,
    best_margin DOUBLE, n_legs BIGINT, legs VARCHAR, stakes VARCHAR, total_stake DOUBLE,
    guaranteed_profit DOUBLE, status VARCHAR, reason VARCHAR, reasons VARCHAR,
    in_play BOOLEAN, still_open BOOLEAN, {DAY_COLUMN} VARCHAR, arb_ahead_score DOUBLE,
    arb_ahead_model_version VARCHAR
)
"""
# A day's scan follows its windows this long past midnight, so one that opened late in the
# day is not cut short at 00:00; a window still open then is written with `still_open`.
DAY_SCAN_GRACE = timedelta(hours=6)


def scan_day(
    con: duckdb.DuckDBPyConnection,
    config: ScanConfig | None,
    day: str,
    *,
    now: datetime | pd.Timestamp | None = None,
    grace: timedelta = DAY_SCAN_GRACE,
) -> ScanResult:
    """The windows that opened on `day` (UTC, ``YYYY-MM-DD``): one partition's scan.

    Reads only the quotes live in ``[day - 1 µs, min(day + 1 day + grace, now)]`` (and the
    staleness window before it), so its cost depends on that day's quotes, not on history.
    The instant just before midnight is in the scan, so a window already open at 00:00
    shows as opened the day before and is left to that day's partition: every window is in
    exactly one partition, as in a scan of the whole history.
    """
    start = pd.Timestamp(day, tz="UTC")
    until = start + pd.Timedelta(days=1) + pd.Timedelta(grace)
    if now is not None:
        until = min(until, _timestamp(now))
    result = scan(con, config, since=start - pd.Timedelta(microseconds=1), until=until)
    opened = result.windows["opened_at"]
    keep = (opened >= start) & (opened < start + pd.Timedelta(days=1))
    return _replace(result, windows=result.windows[keep].reset_index(drop=True))


def window_keys(con: duckdb.DuckDBPyConnection, day: str | None = None) -> set[tuple]:
    """(event, market, line, opened_at) of the stored actionable windows (of one day)."""
    if not table_exists(con, WINDOWS_TABLE):
        return set()
    where, params = "status = 'actionable'", []
    if day is not None:
        if DAY_COLUMN not in _columns(con, WINDOWS_TABLE):
            return set()
        where += f" AND {DAY_COLUMN} = ?"
        params.append(day)
    rows = con.execute(
        f"SELECT event_id, market, line, opened_at FROM {WINDOWS_TABLE} WHERE {where}", params
    ).fetchall()
    return {(e, m, None if ln is None else float(ln), str(pd.Timestamp(o))) for e, m, ln, o in rows}


def new_actionable_windows(
    written: pd.DataFrame, before: set[tuple], max_age: timedelta, now: Any
) -> list[dict[str, Any]]:
    """Actionable windows not in `before` that opened within `max_age` of `now`: what an
    alert sink should hear about after a scan (nothing twice, nothing old). `now` is the
    feed's clock (`feed_now`: the newest quote's time), so a backfill of a past day, or a
    replay, alerts only what was news at the time of the newest data."""
    actionable = written[written["status"] == "actionable"]
    if actionable.empty or now is None:
        return []
    opened = pd.to_datetime(actionable["opened_at"], utc=True)
    recent = actionable[opened >= _timestamp(now) - pd.Timedelta(max_age)]
    return [
        row
        for row in recent.to_dict("records")
        if (
            row["event_id"],
            row["market"],
            None if pd.isna(row["line"]) else float(row["line"]),
            str(pd.Timestamp(row["opened_at"])),
        )
        not in before
    ]


def feed_now(con: duckdb.DuckDBPyConnection) -> pd.Timestamp | None:
    """The newest quote's observed time: "now" as far as the data goes."""
    if not table_exists(con, "odds_quotes"):
        return None
    value = con.execute("SELECT max(observed_at) FROM odds_quotes").fetchone()[0]
    return None if value is None else _timestamp(value)


def days_to_scan(
    day: str, now: datetime | pd.Timestamp, grace: timedelta = DAY_SCAN_GRACE
) -> list[str]:
    """The partitions a run for `day` rescans: `day`, and the day before while `now` is
    within `grace` of midnight (its windows may still be open: a live run of today must
    close them, or they would stay `still_open` for good)."""
    start = pd.Timestamp(day, tz="UTC")
    if start <= _timestamp(now) < start + pd.Timedelta(grace):
        return [(start - pd.Timedelta(days=1)).strftime("%Y-%m-%d"), day]
    return [day]


def stored_windows(con: duckdb.DuckDBPyConnection) -> pd.DataFrame | None:
    """Every stored window (all day partitions), or None before the first scan."""
    if not table_exists(con, WINDOWS_TABLE):
        return None
    return con.execute(f"SELECT * FROM {WINDOWS_TABLE}").df()


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


def write_windows(
    con: duckdb.DuckDBPyConnection,
    windows: pd.DataFrame,
    scores_table: str | None = None,
    *,
    day: str | None = None,
) -> pd.DataFrame:
    """Store a scan in `arbitrage_windows` (one transaction), each window with the
    transformer champion's best `arb_ahead` score for its event, market and line when one
    was scored (NULL otherwise). With `day` only that day's partition is replaced (the rows
    whose `opened_day` is `day`; every window must have opened that day); without, the
    whole table. Returns what was written."""
    from odds_pipeline.warehouse import transaction

    frame = windows.copy()
    frame["line"] = pd.to_numeric(frame.get("line"), errors="coerce")
    frame[DAY_COLUMN] = pd.to_datetime(frame["opened_at"], utc=True).dt.strftime("%Y-%m-%d")
    if day is not None and not (frame[DAY_COLUMN] == day).all():
        raise ValueError(f"write_windows(day={day!r}): some windows opened on another day")
    incoming = frame  # noqa: F841  (read by DuckDB's replacement scan)
    score = "NULL::DOUBLE AS arb_ahead_score, NULL::VARCHAR AS arb_ahead_model_version"
    join = ""
    if scores_table and table_exists(con, scores_table):
        # The best champion score the pair had before the window opened (a score from
        # after the opening would be hindsight), with that score's model version.
        score = "s.score AS arb_ahead_score, s.model_version AS arb_ahead_model_version"
        join = f"""LEFT JOIN LATERAL (
            SELECT max(x.score) AS score, arg_max(x.model_version, x.score) AS model_version
            FROM {scores_table} x
            WHERE x.source = 'champion' AND x.event_id = w.event_id AND x.market = w.market
              AND x.line IS NOT DISTINCT FROM w.line AND x.scored_instant < w.opened_at
        ) s ON TRUE"""
    select = f"SELECT w.*, {score} FROM incoming w {join}"
    with transaction(con):
        if table_exists(con, WINDOWS_TABLE) and DAY_COLUMN not in _columns(con, WINDOWS_TABLE):
            con.execute(f"DROP TABLE {WINDOWS_TABLE}")  # from before partitions: derived data
        con.execute(WINDOWS_DDL)  # typed: a first day without windows cannot leave NULL types
        if day is None:
            con.execute(f"DELETE FROM {WINDOWS_TABLE}")
        else:
            con.execute(f"DELETE FROM {WINDOWS_TABLE} WHERE {DAY_COLUMN} = ?", [day])
        con.execute(f"INSERT INTO {WINDOWS_TABLE} BY NAME {select}")
    if day is None:
        return con.execute(f"SELECT * FROM {WINDOWS_TABLE}").df()
    return con.execute(f"SELECT * FROM {WINDOWS_TABLE} WHERE {DAY_COLUMN} = ?", [day]).df()
