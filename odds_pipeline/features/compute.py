"""Feature computation in DuckDB SQL: per quote, per market at time t, per pair of books.

Everything is set-based (window functions, ASOF joins, list lambdas); no Python loop
touches a row. Three tables come out, keyed so the point-in-time engine can join them:

- ``quote_features`` — one row per ``odds_quotes`` row; keys
  (event_id, bookmaker, market, outcome, point) + observed_at + ingested_at.
- ``market_features`` — one row per (event_id, market, outcome, point) at every instant
  any book quoted the event's market; keys (event_id, market, outcome, point) +
  observed_at + ingested_at.
- ``arbitrage_pair_features`` — one row per ordered pair of books on complementary outcomes
  of a 2-way market at every instant either book quoted it.

``book_market_state`` (written with quote_features) is each book's whole market as of each
of its own quote instants: for every outcome the quotes at the book's latest instant at or
before t. That is what makes change logs (where an unchanged side has no row) and snapshot
feeds give the same answer, and why a moved line does not linger: the book's latest instant
for an outcome carries its current line. Spreads pair by the home-side line (home -5.5 with
away +5.5), totals by the total, h2h has no line. A book's market is *complete* when it has
every outcome the event's market has (h2h is 3-way when any book quoted a draw); de-vigged
values of an incomplete market are NULL.

ingested_at of a derived row is the latest ingested_at of every quote it used (a value is
known only when all its inputs are), so "as known" retrieval never leaks a late row.

Incremental: every ``compute_*`` takes ``event_ids`` and/or ``where`` (a predicate on
odds_quotes naming the touched rows, e.g. ``"load_id = 'x'"``); the affected events are
recomputed whole (windows need each event's full history) and replaced delete-then-insert
in one transaction.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd

from odds_pipeline.ingestion.removals import QUOTE_REMOVALS_SQL, QUOTE_REMOVALS_TABLE
from odds_pipeline.market.devig import DEFAULT_METHOD, METHODS, Method, devig_sql, devig_value_sql
from odds_pipeline.market.quotes import MARKETS
from odds_pipeline.warehouse import sql_string, table_exists, transaction

SHARP_BOOKS: tuple[str, ...] = (
    "pinnacle",
    "circasports",
    "lowvig",
    "betfair_ex_eu",
    "betfair_ex_uk",
    "betfair",
)
DEFAULT_TTL = timedelta(hours=24)
OWNER = "features"

QUOTE_KEYS = ("event_id", "bookmaker", "market", "outcome", "point")
MARKET_KEYS = ("event_id", "market", "outcome", "point")
PAIR_KEYS = ("event_id", "market", "line", "book_a", "book_b", "outcome_a")

QUOTE_TABLE = "quote_features"
STATE_TABLE = "book_market_state"
MARKET_TABLE = "market_features"
PAIR_TABLE = "arbitrage_pair_features"

_EVENTS_SCOPE = "_fs_events"  # temp table of the events being recomputed

# --------------------------------------------------------------------------- SQL fragments
# The statements below are assembled from these texts; each feature's version hash covers
# its own expression and the fragments it reads, so editing any of them without bumping
# the feature's version fails odds_pipeline_tests/test_features.py.

_LINE = (
    "CASE q.market WHEN 'spreads' THEN CASE WHEN q.outcome = 'away' THEN 0.0 - q.point "
    "ELSE q.point + 0.0 END WHEN 'totals' THEN q.point + 0.0 END"
)
OUTCOMES: tuple[str, ...] = tuple(sorted(set().union(*MARKETS.values())))

# Integer ids for (event, bookmaker, market) and (event, market), local to one computation:
# windows, ASOF joins and hash joins on one BIGINT instead of three strings.
KEYS_SQL = """
SELECT event_id, bookmaker, market,
    row_number() OVER (ORDER BY event_id, market, bookmaker) AS bm_id,
    dense_rank() OVER (ORDER BY event_id, market) AS em_id
FROM (SELECT DISTINCT event_id, bookmaker, market FROM {source} WHERE TRUE {scope})
"""

# Quotes with their line; seq orders a key's quotes deterministically (ties on observed_at
# by ingested_at, load, record, price) and latest_at_t marks the row that wins a tie.
QUOTE_BASE_SQL = f"""
SELECT k.bm_id, k.em_id, q.event_id, q.bookmaker, q.market, q.outcome, q.point, q.price,
    q.observed_at, q.ingested_at, q.source, e.commence_time,
    {_LINE} AS line,
    row_number() OVER w AS seq,
    lead(q.observed_at) OVER w IS DISTINCT FROM q.observed_at AS latest_at_t,
    lag(q.price) OVER w AS prev_price,
    q.price IS DISTINCT FROM lag(q.price) OVER w AS price_changed
FROM odds_quotes q
JOIN _fs_keys k ON k.event_id = q.event_id AND k.bookmaker = q.bookmaker AND k.market = q.market
LEFT JOIN events e ON e.event_id = q.event_id
WHERE q.price > 1.0
WINDOW w AS (
    PARTITION BY k.bm_id, q.outcome, q.point
    ORDER BY q.observed_at, q.ingested_at, q.load_id, q.source_record, q.price
)
"""

# How many outcomes a complete market has: 2, or 3 for an h2h market with a draw quoted.
EXPECTED_OUTCOMES_SQL = """
SELECT em_id, greatest(2, count(DISTINCT outcome)) AS n_expected FROM {source} GROUP BY em_id
"""

_CARRY = ",\n        ".join(
    f"max(CASE WHEN outcome = '{o}' THEN observed_at END) OVER w AS \"s_{o}\"" for o in OUTCOMES
)
_OUTCOME_INDEX = f"list_position({list(OUTCOMES)!r}, outcome)"
_DEVIG_VALUES = ",\n    ".join(
    f"{devig_value_sql('(1.0 / sq.price)', m)} AS devig_{m}" for m in METHODS
)
_UNPIVOT = ", ".join(f"{{'outcome': '{o}', 'state_at': \"s_{o}\"}}" for o in OUTCOMES)

# Each book's market at each of its instants t: for every outcome, the quotes at the book's
# latest instant for that outcome at or before t (a running max over the book's timeline),
# grouped by line and de-vigged when complete.
BOOK_STATE_SQL = f"""
WITH qd AS (SELECT * FROM _fs_q WHERE latest_at_t),
cf AS (
    SELECT DISTINCT bm_id, observed_at AS t,
        {_CARRY}
    FROM qd
    WINDOW w AS (PARTITION BY bm_id ORDER BY observed_at
                 RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
st AS (
    SELECT bm_id, t, s.outcome AS outcome, s.state_at AS state_at
    FROM (SELECT bm_id, t, unnest([{_UNPIVOT}]) AS s FROM cf)
    WHERE s.state_at IS NOT NULL
),
sq AS (
    SELECT st.bm_id, st.t, qd.line, st.outcome, qd.point, qd.price, st.state_at,
        qd.ingested_at
    FROM st JOIN qd
      ON qd.bm_id = st.bm_id AND qd.outcome = st.outcome AND qd.observed_at = st.state_at
),
grouped AS (
    SELECT bm_id, t, line,
        list(1.0 / price) AS probs_all,
        count(*) AS n_outcomes,
        bit_count(bit_or(1 << {_OUTCOME_INDEX})) AS n_distinct,
        max(ingested_at) AS ingested_at,
        min(state_at) AS oldest_at
    FROM sq GROUP BY bm_id, t, line
),
flagged AS (
    SELECT g.* EXCLUDE (probs_all),
        g.n_outcomes = x.n_expected AND g.n_distinct = g.n_outcomes AS complete,
        CASE WHEN g.n_outcomes = x.n_expected AND g.n_distinct = g.n_outcomes
             THEN list_sort(g.probs_all) END AS probs
    FROM grouped g JOIN _fs_keys k ON k.bm_id = g.bm_id JOIN _fs_expected x ON x.em_id = k.em_id
),
-- the solvers depend only on the multiset of implied probabilities, and books repeat the
-- same prices a lot (~30x fewer distinct markets than book states): solve each once.
solved AS (
    {{devig}}
),
devigged AS (
    SELECT f.*, s.booksum, s.k_power, s.z_shin, s.norm_power, s.norm_shin
    FROM flagged f LEFT JOIN solved s ON s.probs = f.probs
)
SELECT sq.bm_id, sq.t AS observed_at, sq.line, sq.outcome, sq.point, sq.price, sq.state_at,
    d.n_outcomes, d.complete, d.booksum,
    {_DEVIG_VALUES},
    d.ingested_at, d.oldest_at
FROM sq JOIN devigged d
  ON d.bm_id = sq.bm_id AND d.t = sq.t AND d.line IS NOT DISTINCT FROM sq.line
"""
_DEVIG_SOURCE = "SELECT DISTINCT probs FROM flagged WHERE probs IS NOT NULL"

STATE_OUT_SQL = """
SELECT k.event_id, k.bookmaker, k.market, s.* EXCLUDE (bm_id)
FROM _fs_state s JOIN _fs_keys k ON k.bm_id = s.bm_id
"""

QUOTE_WINDOW_SQL = """
WITH w AS (
    SELECT q.*,
        first_value(q.price) OVER wk AS first_price,
        max(q.ingested_at) OVER wk AS history_ingested_at,
        max(CASE WHEN q.price_changed THEN q.observed_at END) OVER (
            wk ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) AS prev_change_at
    FROM _fs_q q
    WINDOW wk AS (PARTITION BY q.bm_id, q.outcome, q.point ORDER BY q.seq)
)
SELECT w.event_id, w.bookmaker, w.market, w.outcome, w.point, w.observed_at,
    greatest(w.history_ingested_at, s.ingested_at) AS ingested_at,
    w.line, w.seq, w.source, w.commence_time,
    {features}
FROM w LEFT JOIN _fs_state s
  ON s.bm_id = w.bm_id AND s.observed_at = w.observed_at AND s.outcome = w.outcome
 AND s.point IS NOT DISTINCT FROM w.point
"""

# book_market_state with local ids, for the market and pair computations.
MARKET_INPUT_SQL = """
SELECT k.bm_id, k.em_id, s.* EXCLUDE (event_id, market)
FROM book_market_state s
JOIN _fs_keys k ON k.event_id = s.event_id AND k.market = s.market AND k.bookmaker = s.bookmaker
"""

# Every book's state as of each instant t any book quoted the event's market: the book's
# latest instant at or before t (ASOF), its quotes within the TTL.
MARKET_STATE_SQL = """
times AS (SELECT DISTINCT em_id, observed_at AS t FROM _fs_bs),
binst AS (
    SELECT bm_id, em_id, observed_at, max(ingested_at) AS inst_ingested_at
    FROM _fs_bs GROUP BY bm_id, em_id, observed_at
),
books AS (SELECT DISTINCT em_id, bm_id FROM binst),
grid AS (SELECT t.em_id, t.t, b.bm_id FROM times t JOIN books b ON b.em_id = t.em_id),
gs AS (
    SELECT g.em_id, g.t, g.bm_id, i.observed_at AS inst, i.inst_ingested_at
    FROM grid g ASOF JOIN binst i ON g.bm_id = i.bm_id AND i.observed_at <= g.t
),
t_ingested AS (
    SELECT em_id, t, max(inst_ingested_at) AS ingested_at FROM gs GROUP BY em_id, t
),
used AS (
    SELECT gs.em_id, gs.t, gs.bm_id, s.bookmaker, s.line, s.outcome, s.point, s.price,
        s.state_at, s.ingested_at,
        s.complete AND s.oldest_at >= gs.t - {ttl} AS devig_ok,
        s.devig_{method} AS prob,
        s.bookmaker IN ({sharp}) AS is_sharp
    FROM gs JOIN _fs_bs s ON s.bm_id = gs.bm_id AND s.observed_at = gs.inst
    WHERE s.state_at >= gs.t - {ttl}
),
em AS (SELECT DISTINCT em_id, event_id, market FROM _fs_keys)
"""

MARKET_AGG_SQL = """
WITH {state},
per_outcome AS (
    SELECT em_id, line, outcome, point, t,
        count(*) AS n_books,
        avg(price) AS mean_price,
        stddev_samp(price) AS price_std,
        max(price) AS best_price,
        arg_min(bookmaker, (-price, bookmaker)) AS best_book,
        arg_min(state_at, (-price, bookmaker)) AS best_state_at,
        count(*) FILTER (WHERE devig_ok) AS n_devig_books,
        avg(prob) FILTER (WHERE devig_ok) AS consensus_prob,
        stddev_samp(prob) FILTER (WHERE devig_ok) AS consensus_prob_std,
        avg(price) FILTER (WHERE devig_ok) AS consensus_price,
        count(*) FILTER (WHERE devig_ok AND is_sharp) AS n_sharp_books,
        avg(prob) FILTER (WHERE devig_ok AND is_sharp) AS sharp_only_prob,
        avg(price) FILTER (WHERE devig_ok AND is_sharp) AS sharp_only_price,
        avg(prob) FILTER (WHERE devig_ok AND NOT is_sharp) AS retail_prob,
        min(state_at) AS oldest_at
    FROM used GROUP BY em_id, line, outcome, point, t
),
per_line AS (
    SELECT em_id, line, t,
        sum(1.0 / best_price) AS best_implied_sum,
        count(*) AS n_outcomes_quoted,
        min(oldest_at) AS oldest_at
    FROM per_outcome GROUP BY em_id, line, t
),
m AS (
    SELECT o.*, l.best_implied_sum, l.n_outcomes_quoted, x.n_expected,
        l.oldest_at AS line_oldest_at, ti.ingested_at, o.n_sharp_books > 0 AS has_sharp
    FROM per_outcome o
    JOIN per_line l ON l.em_id = o.em_id AND l.t = o.t AND l.line IS NOT DISTINCT FROM o.line
    JOIN _fs_expected x ON x.em_id = o.em_id
    JOIN t_ingested ti ON ti.em_id = o.em_id AND ti.t = o.t
)
SELECT em.event_id, em.market, m.outcome, m.point, m.t AS observed_at, m.ingested_at, m.line,
    {features}
FROM m JOIN em ON em.em_id = m.em_id
"""

PAIR_SQL = """
WITH {state},
pairs AS (
    SELECT a.em_id, a.line, a.t, a.bookmaker AS book_a, b.bookmaker AS book_b,
        a.outcome AS outcome_a, b.outcome AS outcome_b, a.point AS point_a,
        b.point AS point_b, a.price AS price_a, b.price AS price_b,
        least(a.state_at, b.state_at) AS oldest_at,
        greatest(a.ingested_at, b.ingested_at) AS ingested_at
    FROM used a JOIN used b
      ON a.em_id = b.em_id AND a.t = b.t AND a.line IS NOT DISTINCT FROM b.line
     AND a.outcome <> b.outcome AND a.bm_id <> b.bm_id
    JOIN _fs_expected x ON x.em_id = a.em_id
    WHERE x.n_expected = 2
),
p AS (
    SELECT pairs.*, em.event_id, em.market, e.commence_time,
        lag(price_a) OVER w AS prev_price_a,
        lag(price_b) OVER w AS prev_price_b,
        min(pairs.t) OVER (PARTITION BY pairs.em_id) AS series_start
    FROM pairs JOIN em ON em.em_id = pairs.em_id
    LEFT JOIN events e ON e.event_id = em.event_id
    WINDOW w AS (PARTITION BY pairs.em_id, pairs.line, book_a, book_b, outcome_a
                 ORDER BY pairs.t)
)
SELECT p.event_id, p.market, p.line, p.book_a, p.book_b, p.outcome_a, p.outcome_b,
    p.point_a AS point, p.point_b, p.t AS observed_at, p.ingested_at,
    {features}
FROM p
"""

_FRAGMENTS: dict[str, str] = {
    "keys": KEYS_SQL,
    "quote_base": QUOTE_BASE_SQL,
    "expected_outcomes": EXPECTED_OUTCOMES_SQL,
    "book_state": BOOK_STATE_SQL + _DEVIG_SOURCE,
    "devig": devig_sql("<source>", lists=False),
    "quote_window": QUOTE_WINDOW_SQL,
    "market_state": MARKET_INPUT_SQL + MARKET_STATE_SQL,
    "market_agg": MARKET_AGG_SQL,
    "pair": PAIR_SQL,
}


def _normalise_sql(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class FeatureDefinition:
    """One feature column: what it means, where it lives, and the SQL that makes it."""

    name: str
    description: str
    dtype: str
    group: str  # the table that holds it
    sql: str  # expression in the table's final SELECT
    inputs: tuple[str, ...]  # fragments (see _FRAGMENTS) the expression reads
    version: int = 1
    owner: str = OWNER

    @property
    def entity(self) -> tuple[str, ...]:
        return {QUOTE_TABLE: QUOTE_KEYS, MARKET_TABLE: MARKET_KEYS, PAIR_TABLE: PAIR_KEYS}[
            self.group
        ]

    @property
    def sql_hash(self) -> str:
        """Hash of the expression and every fragment it reads (whitespace-insensitive)."""
        parts = [_normalise_sql(self.sql)] + [_normalise_sql(_FRAGMENTS[f]) for f in self.inputs]
        return hashlib.sha256("\n--\n".join(parts).encode()).hexdigest()[:16]


_QW = ("keys", "quote_base", "quote_window")
_QS = ("keys", "quote_base", "expected_outcomes", "book_state", "devig", "quote_window")
_M = (*_QS[:-1], "market_state", "market_agg")
_P = ("keys", "quote_base", "expected_outcomes", "book_state", "market_state", "pair")


def _qf(name: str, sql: str, description: str, inputs: tuple[str, ...] = _QW, dtype="DOUBLE"):
    return FeatureDefinition(name, description, dtype, QUOTE_TABLE, sql, inputs)


def _mf(name: str, sql: str, description: str, dtype: str = "DOUBLE"):
    return FeatureDefinition(name, description, dtype, MARKET_TABLE, sql, _M)


def _pf(name: str, sql: str, description: str, dtype: str = "DOUBLE"):
    return FeatureDefinition(name, description, dtype, PAIR_TABLE, sql, _P)


_TWO_PI_TOD = "2.0 * pi() * (epoch(w.observed_at) % 86400.0) / 86400.0"

FEATURE_DEFINITIONS: list[FeatureDefinition] = [
    # ---- per quote
    _qf("decimal_odds", "w.price", "Decimal price of the quote (canonical odds)."),
    _qf(
        "american_odds",
        "CASE WHEN w.price >= 2.0 THEN (w.price - 1.0) * 100.0 ELSE -100.0 / (w.price - 1.0) END",
        "American odds of the quote (+150 / -200).",
    ),
    _qf("implied_prob", "1.0 / w.price", "Implied probability 1/price, margin included."),
    _qf(
        "book_overround",
        "s.booksum - 1.0",
        "The book's margin on its complete market at this instant (sum of implied - 1).",
        _QS,
    ),
    _qf(
        "devig_multiplicative",
        "s.devig_multiplicative",
        "De-vigged probability, multiplicative (normalised) method; NULL if incomplete.",
        _QS,
    ),
    _qf(
        "devig_power",
        "s.devig_power",
        "De-vigged probability, power method (sum pi^k = 1); NULL if incomplete.",
        _QS,
    ),
    _qf(
        "devig_shin",
        "s.devig_shin",
        "De-vigged probability, Shin's method; NULL if the book's market is incomplete.",
        _QS,
    ),
    _qf(
        "fair_prob",
        f"s.devig_{DEFAULT_METHOD}",
        f"De-vigged probability by the default method ({DEFAULT_METHOD}).",
        _QS,
    ),
    _qf(
        "price_change_prev",
        "w.price - w.prev_price",
        "Change in decimal price since the previous quote of the same key.",
    ),
    _qf(
        "prob_change_prev",
        "1.0 / w.price - 1.0 / w.prev_price",
        "Change in implied probability since the previous quote of the same key.",
    ),
    _qf(
        "price_change_open",
        "w.price - w.first_price",
        "Change in decimal price since the first quote seen (opening) of the same key.",
    ),
    _qf(
        "prob_change_open",
        "1.0 / w.price - 1.0 / w.first_price",
        "Change in implied probability since the first quote seen of the same key.",
    ),
    _qf(
        "seconds_since_change",
        "epoch(w.observed_at) - epoch(w.prev_change_at)",
        "Seconds since the latest earlier quote at which the price changed (NULL on the first).",
    ),
    _qf(
        "hours_to_commence",
        "(epoch(w.commence_time) - epoch(w.observed_at)) / 3600.0",
        "Hours from the quote to the event's start (negative in play).",
    ),
    _qf(
        "tod_sin", f"sin({_TWO_PI_TOD})", "Time of day (UTC) of the quote, sine of the hour angle."
    ),
    _qf(
        "tod_cos",
        f"cos({_TWO_PI_TOD})",
        "Time of day (UTC) of the quote, cosine of the hour angle.",
    ),
    # ---- per market at t
    _mf("n_books", "m.n_books", "Books with a quote for this outcome at t (within TTL).", "BIGINT"),
    _mf(
        "n_devig_books",
        "m.n_devig_books",
        "Books whose whole market is complete and fresh at t (used for de-vigged stats).",
        "BIGINT",
    ),
    _mf(
        "consensus_prob",
        "m.consensus_prob",
        "Mean de-vigged probability across books (method: compute_market_features).",
    ),
    _mf(
        "consensus_prob_std",
        "m.consensus_prob_std",
        "Sample std of the de-vigged probability across books (NULL with one book).",
    ),
    _mf("mean_price", "m.mean_price", "Mean decimal price across books at t."),
    _mf("price_std", "m.price_std", "Sample std of decimal prices across books at t."),
    _mf("best_price", "m.best_price", "Best (highest) decimal price across books at t."),
    _mf(
        "best_book",
        "m.best_book",
        "Book offering the best price (ties: alphabetical).",
        "VARCHAR",
    ),
    _mf(
        "best_price_age_s",
        "epoch(m.t) - epoch(m.best_state_at)",
        "Age in seconds of the best-price quote at t.",
    ),
    _mf(
        "best_implied_sum",
        "CASE WHEN m.n_outcomes_quoted = m.n_expected THEN m.best_implied_sum END",
        "Sum over the market's outcomes of 1/best price (overround of the best prices).",
    ),
    _mf(
        "arb_margin",
        "CASE WHEN m.n_outcomes_quoted = m.n_expected THEN 1.0 - m.best_implied_sum END",
        "Arbitrage margin 1 - sum(1/best price); > 0 means a sure profit across books.",
    ),
    _mf(
        "sharp_prob",
        "coalesce(m.sharp_only_prob, m.consensus_prob)",
        "Mean de-vigged probability of the sharp books at t; consensus when none quoted.",
    ),
    _mf(
        "sharp_price",
        "coalesce(m.sharp_only_price, m.consensus_price)",
        "Mean decimal price of the sharp books at t; consensus books' mean when none.",
    ),
    _mf(
        "sharp_source",
        "CASE WHEN m.has_sharp THEN 'sharp' WHEN m.consensus_prob IS NOT NULL THEN 'consensus' END",
        "Where sharp_prob came from: 'sharp' books or the 'consensus' fallback.",
        "VARCHAR",
    ),
    _mf("n_sharp_books", "m.n_sharp_books", "Sharp books used for sharp_prob at t.", "BIGINT"),
    _mf("retail_prob", "m.retail_prob", "Mean de-vigged probability of non-sharp books at t."),
    _mf(
        "retail_minus_sharp",
        "m.retail_prob - coalesce(m.sharp_only_prob, m.consensus_prob)",
        "Retail (non-sharp) consensus minus sharp probability.",
    ),
    _mf(
        "stalest_quote_age_s",
        "epoch(m.t) - epoch(m.line_oldest_at)",
        "Age in seconds of the stalest quote used at t across the market's outcomes.",
    ),
    # ---- arbitrage pairs (2-way markets)
    _pf("odds_a", "p.price_a", "Decimal price of book_a on outcome_a."),
    _pf("odds_b", "p.price_b", "Decimal price of book_b on the complementary outcome_b."),
    _pf("odds_spread", "p.price_a - p.price_b", "odds_a - odds_b."),
    _pf("implied_diff", "1.0 / p.price_a - 1.0 / p.price_b", "1/odds_a - 1/odds_b."),
    _pf(
        "implied_sum",
        "1.0 / p.price_a + 1.0 / p.price_b",
        "1/odds_a + 1/odds_b; below 1 is an arbitrage.",
    ),
    _pf("delta_a", "p.price_a - p.prev_price_a", "Change in odds_a since the pair's previous t."),
    _pf("delta_b", "p.price_b - p.prev_price_b", "Change in odds_b since the pair's previous t."),
    _pf(
        "rel_delta_a",
        "(p.price_a - p.prev_price_a) / p.prev_price_a",
        "Relative change in odds_a since the pair's previous t.",
    ),
    _pf(
        "rel_delta_b",
        "(p.price_b - p.prev_price_b) / p.prev_price_b",
        "Relative change in odds_b since the pair's previous t.",
    ),
    _pf(
        "time_position",
        "CASE WHEN epoch(p.commence_time) > epoch(p.series_start) THEN "
        "(epoch(p.t) - epoch(p.series_start)) / (epoch(p.commence_time) - epoch(p.series_start)) "
        "END",
        "Position in time: 0 at the market's first quote, 1 at commence (> 1 in play).",
    ),
    _pf(
        "pair_hours_to_commence",
        "(epoch(p.commence_time) - epoch(p.t)) / 3600.0",
        "Hours from t to the event's start.",
    ),
    _pf(
        "pair_stalest_age_s",
        "epoch(p.t) - epoch(p.oldest_at)",
        "Age in seconds of the older of the two quotes at t.",
    ),
]

# Committed versions: (version, sql_hash). A changed hash with an unchanged version fails
# the test suite; bump the definition's version and regenerate with
# `python -m odds_pipeline.features.compute`.
FEATURE_VERSIONS: dict[str, tuple[int, str]] = {
    "decimal_odds": (1, "845e3c8ba1a026d1"),
    "american_odds": (1, "fb61e721eb3c2e00"),
    "implied_prob": (1, "5ee3eb12ea0d2b4d"),
    "book_overround": (1, "39094f1ade0ecf1a"),
    "devig_multiplicative": (1, "7d3a28ccdb3234b7"),
    "devig_power": (1, "317a7b1ce7f3cb18"),
    "devig_shin": (1, "1a0432443cdcf442"),
    "fair_prob": (1, "7d3a28ccdb3234b7"),
    "price_change_prev": (1, "e130885999001794"),
    "prob_change_prev": (1, "5c45763c250929e4"),
    "price_change_open": (1, "a2ae4c596b172cab"),
    "prob_change_open": (1, "d2b9bef43455ffcd"),
    "seconds_since_change": (1, "c0ea7efbb08ae613"),
    "hours_to_commence": (1, "1109d54f0af2666d"),
    "tod_sin": (1, "21cafbcf14a90395"),
    "tod_cos": (1, "39151869f28d00ef"),
    "n_books": (1, "4826ddb8aa6985ac"),
    "n_devig_books": (1, "ba9ce02bfb8990a3"),
    "consensus_prob": (1, "e0ed9856273e0e8c"),
    "consensus_prob_std": (1, "45021ab489190dec"),
    "mean_price": (1, "adffa75f48459d6a"),
    "price_std": (1, "802fa9dfba0789c4"),
    "best_price": (1, "97cb75c126bb01fe"),
    "best_book": (1, "20e34238f4c4ee0c"),
    "best_price_age_s": (1, "5230e31259bbe1a6"),
    "best_implied_sum": (1, "afb540e319e7106d"),
    "arb_margin": (1, "a1a4f7542ab9d610"),
    "sharp_prob": (1, "df37c22a2ee976da"),
    "sharp_price": (1, "c8fcfead6f008752"),
    "sharp_source": (1, "d283e3545d3bb3df"),
    "n_sharp_books": (1, "9a3ac3625fda4b7e"),
    "retail_prob": (1, "fc77245df8df2639"),
    "retail_minus_sharp": (1, "dfc920ce6afbec10"),
    "stalest_quote_age_s": (1, "0baaf724d825a6ff"),
    "odds_a": (1, "0869761d6dbc9638"),
    "odds_b": (1, "16d062f131c3f97c"),
    "odds_spread": (1, "cf93ba02b58898f2"),
    "implied_diff": (1, "387eeae368f7d90e"),
    "implied_sum": (1, "6da99975a1551dd6"),
    "delta_a": (1, "813a0e9b9fb8ae86"),
    "delta_b": (1, "c66595570a01989f"),
    "rel_delta_a": (1, "87acd87880844c96"),
    "rel_delta_b": (1, "f037c83e57363302"),
    "time_position": (1, "189138ad61fdc8c3"),
    "pair_hours_to_commence": (1, "1c9c9d90af347748"),
    "pair_stalest_age_s": (1, "76e3f35576f34358"),
}

# The 14 inputs of the win-probability LSTM ("time of day" is one input encoded as sin and
# cos, hence 15 columns) -> "table:column".
LSTM_FEATURES: dict[str, str] = {
    "american_odds": f"{QUOTE_TABLE}:american_odds",
    "decimal_odds": f"{QUOTE_TABLE}:decimal_odds",
    "implied_prob": f"{QUOTE_TABLE}:implied_prob",
    "odds_change_prev": f"{QUOTE_TABLE}:price_change_prev",
    "odds_change_open": f"{QUOTE_TABLE}:price_change_open",
    "prob_change_prev": f"{QUOTE_TABLE}:prob_change_prev",
    "prob_change_open": f"{QUOTE_TABLE}:prob_change_open",
    "n_books": f"{MARKET_TABLE}:n_books",
    "odds_std": f"{MARKET_TABLE}:price_std",
    "sharp_odds": f"{MARKET_TABLE}:sharp_price",
    "sharp_prob": f"{MARKET_TABLE}:sharp_prob",
    "retail_minus_sharp": f"{MARKET_TABLE}:retail_minus_sharp",
    "hours_to_game": f"{QUOTE_TABLE}:hours_to_commence",
    "tod_sin": f"{QUOTE_TABLE}:tod_sin",
    "tod_cos": f"{QUOTE_TABLE}:tod_cos",
}

# The 10 features of the arbitrage notebook -> "table:column".
ARBITRAGE_FEATURES: dict[str, str] = {
    name: f"{PAIR_TABLE}:{name}"
    for name in (
        "odds_a",
        "odds_b",
        "odds_spread",
        "implied_diff",
        "implied_sum",
        "delta_a",
        "delta_b",
        "rel_delta_a",
        "rel_delta_b",
        "time_position",
    )
}


def definitions_for(group: str) -> list[FeatureDefinition]:
    return [d for d in FEATURE_DEFINITIONS if d.group == group]


def view_specs() -> dict[str, dict[str, object]]:
    """How to register each feature table with the point-in-time engine: its entity keys,
    timestamps, tie-break sequence and feature columns (helper columns such as `line`,
    `source`, `commence_time` are not features)."""
    return {
        group: {
            "table": group,
            "keys": list(keys),
            "timestamp": "observed_at",
            "ingested": "ingested_at",
            "sequence": "seq" if group == QUOTE_TABLE else None,
            "features": [d.name for d in definitions_for(group)],
        }
        for group, keys in (
            (QUOTE_TABLE, QUOTE_KEYS),
            (MARKET_TABLE, MARKET_KEYS),
            (PAIR_TABLE, PAIR_KEYS),
        )
    }


def current_versions(
    definitions: Sequence[FeatureDefinition] = FEATURE_DEFINITIONS,
) -> dict[str, tuple[int, str]]:
    return {d.name: (d.version, d.sql_hash) for d in definitions}


def check_feature_versions(
    definitions: Sequence[FeatureDefinition] = FEATURE_DEFINITIONS,
    committed: dict[str, tuple[int, str]] | None = None,
) -> list[str]:
    """Problems between the definitions and the committed FEATURE_VERSIONS (empty = fine).

    A definition whose SQL (or any fragment it reads) changed while its version did not is
    an edit in place: the values under the same name and version would silently differ.
    """
    committed = FEATURE_VERSIONS if committed is None else committed
    problems: list[str] = []
    for d in definitions:
        if d.name not in committed:
            problems.append(f"{d.name}: not in FEATURE_VERSIONS (new feature: add it)")
            continue
        version, sql_hash = committed[d.name]
        if d.sql_hash != sql_hash and d.version == version:
            problems.append(
                f"{d.name}: SQL changed without a version bump (v{version}); bump the version"
            )
        elif d.version != version or d.sql_hash != sql_hash:
            problems.append(f"{d.name}: v{d.version} not recorded; update FEATURE_VERSIONS")
    names = {d.name for d in definitions}
    problems += [f"{n}: in FEATURE_VERSIONS but not defined" for n in committed if n not in names]
    return problems


def feature_registry_frame(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The registry joined with freshness: latest observed_at, rows and null rate per feature.

    One aggregate scan per feature table (count(col) for every column at once).
    """
    existing = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()
    }
    stats: dict[str, dict[str, object]] = {}
    for group in (QUOTE_TABLE, MARKET_TABLE, PAIR_TABLE):
        defs = definitions_for(group)
        if group not in existing:
            continue
        counts = ", ".join(f'count("{d.name}")' for d in defs)
        row = con.execute(f"SELECT count(*), max(observed_at), {counts} FROM {group}").fetchone()
        total = int(row[0])
        for d, non_null in zip(defs, row[2:], strict=True):
            stats[d.name] = {
                "row_count": total,
                "latest_observed_at": row[1],
                "null_rate": (1.0 - non_null / total) if total else None,
            }
    records = []
    for d in FEATURE_DEFINITIONS:
        s = stats.get(d.name, {"row_count": 0, "latest_observed_at": None, "null_rate": None})
        records.append(
            {
                "name": d.name,
                "description": d.description,
                "dtype": d.dtype,
                "entity": ",".join(d.entity),
                "group": d.group,
                "version": d.version,
                "sql_hash": d.sql_hash,
                "owner": d.owner,
                **s,
            }
        )
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------- computation


def _select_list(group: str) -> str:
    return ",\n    ".join(f"{d.sql} AS {d.name}" for d in definitions_for(group))


def _interval(ttl: timedelta | None) -> str:
    if ttl is None:
        return "INTERVAL '1000000 days'"  # no TTL: every earlier quote qualifies
    return f"INTERVAL '{int(ttl.total_seconds() * 1_000_000)} microseconds'"


def _prepare_scope(
    con: duckdb.DuckDBPyConnection, event_ids: Sequence[str] | None, where: str | None
) -> bool:
    """Fill the temp table of events to recompute; False means "everything"."""
    if event_ids is None and where is None:
        return False
    parts = []
    params: list[object] = []
    if event_ids is not None:
        parts.append("SELECT unnest(?::VARCHAR[]) AS event_id")
        params.append(list(event_ids))
    if where is not None:
        parts.append(f"SELECT event_id FROM odds_quotes WHERE {where}")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {_EVENTS_SCOPE} AS "
        f"SELECT DISTINCT event_id FROM ({' UNION ALL '.join(parts)})",
        params,
    )
    return True


def _scope_filter(partial: bool, column: str = "event_id") -> str:
    return f"AND {column} IN (SELECT event_id FROM {_EVENTS_SCOPE})" if partial else ""


def _write(con: duckdb.DuckDBPyConnection, table: str, select_sql: str, partial: bool) -> None:
    if partial and table_exists(con, table):
        con.execute(f"DELETE FROM {table} WHERE event_id IN (SELECT event_id FROM {_EVENTS_SCOPE})")
        con.execute(f"INSERT INTO {table} BY NAME {select_sql}")
    else:
        con.execute(f"CREATE OR REPLACE TABLE {table} AS {select_sql}")


def _count(con: duckdb.DuckDBPyConnection, table: str, partial: bool) -> int:
    scope = f"WHERE event_id IN (SELECT event_id FROM {_EVENTS_SCOPE})" if partial else ""
    return int(con.execute(f"SELECT count(*) FROM {table} {scope}").fetchone()[0])


def compute_quote_features(
    con: duckdb.DuckDBPyConnection,
    *,
    event_ids: Sequence[str] | None = None,
    where: str | None = None,
) -> int:
    """(Re)build `book_market_state` and `quote_features`; returns quote_features rows written.

    With `event_ids` / `where` only the affected events are recomputed and replaced.
    """
    partial = _prepare_scope(con, event_ids, where)
    scope = _scope_filter(partial)
    with transaction(con):
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _fs_keys AS "
            + KEYS_SQL.format(source="odds_quotes", scope=scope)
        )
        con.execute("CREATE OR REPLACE TEMP TABLE _fs_q AS " + QUOTE_BASE_SQL)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _fs_expected AS "
            + EXPECTED_OUTCOMES_SQL.format(source="_fs_q")
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _fs_state AS "
            + BOOK_STATE_SQL.replace("{devig}", devig_sql(_DEVIG_SOURCE, lists=False))
        )
        _write(con, STATE_TABLE, STATE_OUT_SQL, partial)
        _write(
            con, QUOTE_TABLE, QUOTE_WINDOW_SQL.format(features=_select_list(QUOTE_TABLE)), partial
        )
        _drop_temp(con, "_fs_q", "_fs_state", "_fs_keys", "_fs_expected")
        return _count(con, QUOTE_TABLE, partial)


def _drop_temp(con: duckdb.DuckDBPyConnection, *names: str) -> None:
    for name in names:
        con.execute(f"DROP TABLE IF EXISTS {name}")


def _prepare_market_input(
    con: duckdb.DuckDBPyConnection, partial: bool, books: Sequence[str] | None = None
) -> None:
    if not table_exists(con, STATE_TABLE):
        raise RuntimeError(f"{STATE_TABLE} is missing: run compute_quote_features first")
    scope = _scope_filter(partial)
    if books is not None:
        scope += f" AND bookmaker IN ({', '.join(sql_string(b) for b in books)})"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _fs_keys AS "
        + KEYS_SQL.format(source=STATE_TABLE, scope=scope)
    )
    con.execute("CREATE OR REPLACE TEMP TABLE _fs_bs AS " + MARKET_INPUT_SQL)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _fs_expected AS "
        + EXPECTED_OUTCOMES_SQL.format(source="_fs_bs")
    )


def _market_state(*, ttl: timedelta | None, sharp_books: Sequence[str], method: Method) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown de-vig method {method!r}; expected one of {METHODS}")
    sharp = ", ".join(sql_string(b) for b in sharp_books) or "NULL"
    return MARKET_STATE_SQL.format(ttl=_interval(ttl), method=method, sharp=sharp)


def compute_market_features(
    con: duckdb.DuckDBPyConnection,
    *,
    ttl: timedelta | None = DEFAULT_TTL,
    sharp_books: Sequence[str] = SHARP_BOOKS,
    devig_method: Method = DEFAULT_METHOD,
    event_ids: Sequence[str] | None = None,
    where: str | None = None,
) -> int:
    """(Re)build `market_features` from `book_market_state` (run compute_quote_features first).

    At each instant t any book quoted the event's market, every book contributes its latest
    state at or before t; quotes older than `ttl` are dropped (a book's de-vigged values
    only when all its quotes are fresh). Returns rows written.
    """
    partial = _prepare_scope(con, event_ids, where)
    state = _market_state(ttl=ttl, sharp_books=sharp_books, method=devig_method)
    with transaction(con):
        _prepare_market_input(con, partial)
        sql = MARKET_AGG_SQL.format(state=state, features=_select_list(MARKET_TABLE))
        _write(con, MARKET_TABLE, sql, partial)
        _drop_temp(con, "_fs_bs", "_fs_keys", "_fs_expected")
        return _count(con, MARKET_TABLE, partial)


def compute_pair_features(
    con: duckdb.DuckDBPyConnection,
    book_a: str | None = None,
    book_b: str | None = None,
    *,
    ttl: timedelta | None = DEFAULT_TTL,
    event_ids: Sequence[str] | None = None,
    where: str | None = None,
) -> int:
    """(Re)build `arbitrage_pair_features` for 2-way markets; returns rows written.

    One row per (ordered pair of books, side) at each instant either book quoted: book_a
    on outcome_a, book_b on the complementary outcome. With both books named only that
    pair (both orientations) is computed; with neither, every pair.
    """
    if (book_a is None) != (book_b is None):
        raise ValueError("name both books or neither")
    partial = _prepare_scope(con, event_ids, where)
    books = None if book_a is None else [book_a, book_b]
    state = _market_state(ttl=ttl, sharp_books=(), method=DEFAULT_METHOD)
    with transaction(con):
        _prepare_market_input(con, partial, books)
        sql = PAIR_SQL.format(state=state, features=_select_list(PAIR_TABLE))
        _write(con, PAIR_TABLE, sql, partial)
        _drop_temp(con, "_fs_bs", "_fs_keys", "_fs_expected")
        return _count(con, PAIR_TABLE, partial)


# --------------------------------------------------------------------------- real data


def load_odds_api_change_log(
    con: duckdb.DuckDBPyConnection, paths: Sequence[str | Path], *, source: str = "odds_api_changes"
) -> int:
    """Load The Odds API change-log parquet files into `odds_quotes` / `events` (set-based).

    For tests and benchmarks over real data: American -> decimal, removed rows written to
    `quote_removals` (a withdrawal ends the quote), sentinel / out-of-range prices skipped, outcome names mapped to home/away/draw/over/
    under by team name, observed_at = ingested_at = snapshot_time (a historical bulk load).
    Returns the number of quotes inserted.
    """
    files = [str(p) for p in paths]
    rel = f"read_parquet({[*files]!r}, filename = true)"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _fs_changes AS
        SELECT *,
            CASE WHEN outcome = home_team THEN 'home' WHEN outcome = away_team THEN 'away'
                 WHEN lower(outcome) = 'draw' THEN 'draw' WHEN lower(outcome) = 'over' THEN 'over'
                 WHEN lower(outcome) = 'under' THEN 'under' END AS side,
            CASE WHEN price >= 100 AND price <= 100000 THEN 1.0 + price / 100.0
                 WHEN price <= -100 AND price >= -100000 THEN 1.0 + 100.0 / -price END AS decimal,
            snapshot_time::TIMESTAMPTZ AS snap, commence_time::TIMESTAMPTZ AS commence
        FROM {rel}
        """
    )
    before = int(con.execute("SELECT count(*) FROM odds_quotes").fetchone()[0])
    con.execute(
        f"""
        INSERT INTO odds_quotes (source, load_id, event_id, bookmaker, market, outcome,
            outcome_name, point, price, observed_at, ingested_at, in_play, last_update,
            source_file, source_record)
        SELECT {sql_string(source)}, {sql_string(source)} || ':' || parse_filename(filename),
            event_id, bookmaker, market, side, outcome,
            CASE WHEN market = 'h2h' THEN NULL ELSE point END, decimal, snap, snap,
            snap >= commence, market_last_update::TIMESTAMPTZ, filename, NULL
        FROM _fs_changes
        WHERE NOT coalesce(removed, false) AND market IN ('h2h', 'spreads', 'totals')
          AND side IS NOT NULL AND decimal > 1.0
          AND (market = 'h2h' OR point IS NOT NULL)
        """
    )
    # Withdrawals end a quote at once (see ingestion/removals.py), instead of at its TTL.
    con.execute(QUOTE_REMOVALS_SQL)
    con.execute(
        f"""
        INSERT INTO {QUOTE_REMOVALS_TABLE} (event_id, bookmaker, market, outcome, point,
            removed_at, source, load_id)
        SELECT event_id, bookmaker, market, side, CASE WHEN market = 'h2h' THEN NULL ELSE point END,
            snap, {sql_string(source)}, {sql_string(source)} || ':' || parse_filename(filename)
        FROM _fs_changes
        WHERE coalesce(removed, false) AND market IN ('h2h', 'spreads', 'totals')
          AND side IS NOT NULL
        """
    )
    con.execute(
        f"""
        INSERT OR REPLACE INTO events (event_id, source, sport, league, season, commence_time,
            home_team, away_team, load_id)
        SELECT event_id, {sql_string(source)}, any_value(sport_key), any_value(sport_key), NULL,
            arg_max(commence, snap), arg_max(home_team, snap), arg_max(away_team, snap),
            {sql_string(source)}
        FROM _fs_changes GROUP BY event_id
        """
    )
    con.execute("DROP TABLE _fs_changes")
    return int(con.execute("SELECT count(*) FROM odds_quotes").fetchone()[0]) - before


if __name__ == "__main__":  # print the dict to commit as FEATURE_VERSIONS
    print("FEATURE_VERSIONS: dict[str, tuple[int, str]] = {")
    for feature_name, (feature_version, feature_hash) in current_versions().items():
        print(f'    "{feature_name}": ({feature_version}, "{feature_hash}"),')
    print("}")
