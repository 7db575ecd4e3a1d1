"""Walk-forward backtest: value bets, baselines and arbitrage, settled on results, reported.

Why walk-forward: a backtest that sizes a bet from a bankroll which already contains the
profit of a match not yet played reads the future. Here every bet is placed at its decision
time at the best price the market showed *then* (the point-in-time `market_features` state,
one DuckDB ASOF join), sized by fractional Kelly on the bankroll of bets *settled by then*,
and its money comes back only when its event settles (the result's `resolved_at`, else the
event's `commence_time`).

Strategies compared on the same events:

- value (one per probability source: the LSTM champion, the market, a simulator oracle):
  fractional Kelly wherever ``p * price - 1 >= min_edge``;
- ``favourite``: a flat stake on the lowest-priced side, the no-model baseline;
- ``market_proportional``: a flat stake split across an event's sides in proportion to the
  market's own probability. At prices set from that probability plus a margin it pays back
  the same whatever wins, so it loses the overround: the floor a model has to beat. (Value
  betting the market's probability against its own prices finds no edge and places nothing.)
- ``arbitrage``: scanner windows that live past our latency; a leg a book refuses leaves
  the other legs as naked bets.

Every strategy gets a `StrategyReport` (ROI with a bootstrap interval, p-value against random
picks from the same candidates, drawdown, CLV) and a plain-language verdict.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from odds_pipeline.backtest.metrics import CI_LEVEL, StrategyReport, strategy_report
from odds_pipeline.backtest.staking import StakingError

__all__ = [
    "BET_COLUMNS",
    "BacktestConfig",
    "BacktestResult",
    "arbitrage_bets",
    "favourite_flat",
    "market_proportional",
    "predictions_frame",
    "run_backtest",
    "value_bets",
    "verdict",
]

BET_COLUMNS: tuple[str, ...] = (
    "strategy",
    "event_id",
    "side",
    "decision_time",
    "settled_at",
    "book",
    "price",
    "probability",
    "edge",
    "stake",
    "won",
    "profit",
    "settled",
    "closing_fair_price",
)
SCORED_COLUMNS = ("event_id", "side", "decision_time", "probability")
# De-vigged probability columns of market_features, best first, for closing-line value.
FAIR_PROB_COLUMNS = ("sharp_prob", "consensus_prob", "fair_prob")
FEATURES_TABLE = "market_features"
# Relative slack when rounding a stake down, as in staking.kelly_stakes.
_ROUNDING_SLACK = 1e-9
# Settlement key of a bet that never settles (no result): after every decision time.
_NEVER = np.iinfo(np.int64).max


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class BacktestConfig:
    """Money, staking and execution assumptions of one backtest; validated once, here."""

    bankroll: float = 1000.0
    kelly_fraction: float = 0.25
    min_edge: float = 0.02
    max_stake_share: float = 0.05
    book_limits: Mapping[str, float] = field(default_factory=dict)
    increment: float = 1.0
    arb_latency_seconds: float = 30.0
    arb_rejection_probability: float = 0.1
    seed: int = 7
    n_boot: int = 2000

    def __post_init__(self) -> None:
        if not (_finite(self.bankroll) and self.bankroll > 0):
            raise ValueError(f"bankroll must be finite and > 0, got {self.bankroll!r}")
        for name in ("kelly_fraction", "max_stake_share"):
            value = getattr(self, name)
            if not (_finite(value) and 0 < value <= 1):
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        if not _finite(self.min_edge):
            raise ValueError(f"min_edge must be a finite number, got {self.min_edge!r}")
        for book, limit in self.book_limits.items():
            if not (isinstance(limit, int | float) and not math.isnan(limit) and limit >= 0):
                raise ValueError(f"book limit for {book!r} must be >= 0, got {limit!r}")
        if not (_finite(self.increment) and self.increment > 0):
            raise ValueError(f"increment must be finite and > 0, got {self.increment!r}")
        if not (_finite(self.arb_latency_seconds) and self.arb_latency_seconds >= 0):
            raise ValueError(f"arb_latency_seconds must be >= 0, got {self.arb_latency_seconds!r}")
        p_reject = self.arb_rejection_probability
        if not (_finite(p_reject) and 0 <= p_reject <= 1):
            raise ValueError(f"arb_rejection_probability must be in [0, 1], got {p_reject!r}")
        if int(self.n_boot) < 1:
            raise ValueError(f"n_boot must be >= 1, got {self.n_boot!r}")
        object.__setattr__(self, "book_limits", dict(self.book_limits))

    def limit(self, book: str) -> float:
        """The most one bet may stake at `book` (inf when the book has no limit set)."""
        return float(self.book_limits.get(book, math.inf))

    def limits(self, books: pd.Series) -> np.ndarray:
        """`limit` for a column of books, vectorised (inf for no limit or no book)."""
        mapped = books.map(dict(self.book_limits)) if self.book_limits else None
        if mapped is None:
            return np.full(len(books), math.inf)
        return mapped.astype("float64").fillna(math.inf).to_numpy()


@dataclass
class BacktestResult:
    """Every strategy's bets (one table), its report and verdict, and what was skipped."""

    bets: pd.DataFrame
    reports: dict[str, StrategyReport]
    verdicts: dict[str, str]
    counts: dict[str, dict[str, int]]
    config: BacktestConfig

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per strategy: the report as plain values, the verdict and the counts (JSON-ready)."""
        return {
            name: {
                **report.to_dict(),
                "verdict": self.verdicts[name],
                "counts": self.counts.get(name, {}),
            }
            for name, report in self.reports.items()
        }


# --------------------------------------------------------------------------- inputs


def _utc(values: Any) -> pd.Series:
    """UTC timestamps (naive input read as UTC), positionally: a Series on a fresh RangeIndex."""
    return pd.Series(pd.DatetimeIndex(pd.to_datetime(values, utc=True)))


def _ns(values: pd.Series) -> np.ndarray:
    """int64 nanoseconds since the epoch (NaT -> the int64 minimum)."""
    return pd.DatetimeIndex(values).as_unit("ns").asi8


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchall()[0][0]
    )


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
    ).fetchall()
    return {r[0] for r in rows}


def predictions_frame(
    con: duckdb.DuckDBPyConnection,
    column: str = "model_probability",
    *,
    source: str | None = None,
) -> pd.DataFrame:
    """Scored sides from the `predictions` table with `column` as the probability.

    `column` is ``model_probability`` (the champion, or the market where it fell back) or
    ``market_probability``; `source` keeps only ``'champion'`` or ``'market_fallback'`` rows.
    """
    if column not in {"model_probability", "market_probability"}:
        raise ValueError(f"column must be model_probability or market_probability, got {column!r}")
    where = "WHERE source = ?" if source is not None else ""
    params = [source] if source is not None else []
    return con.execute(
        f"SELECT event_id, side, decision_time, {column} AS probability FROM predictions {where}",
        params,
    ).df()


def _scored(
    con: duckdb.DuckDBPyConnection,
    probabilities: pd.DataFrame | str,
    probability_column: str = "probability",
) -> tuple[pd.DataFrame, int]:
    """Scored sides (event_id, side, decision_time UTC, probability) and rows without one."""
    frame = con.execute(probabilities).df() if isinstance(probabilities, str) else probabilities
    if probability_column != "probability":
        frame = frame.drop(columns=["probability"], errors="ignore").rename(
            columns={probability_column: "probability"}
        )
    missing = set(SCORED_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(
            f"scored sides need columns {list(SCORED_COLUMNS)} (probability from "
            f"{probability_column!r}); missing {sorted(missing)}"
        )
    out = pd.DataFrame(
        {
            "event_id": frame["event_id"].astype(str).to_numpy(),
            "side": frame["side"].astype(str).to_numpy(),
            "decision_time": _utc(frame["decision_time"]).array,
            "probability": pd.to_numeric(frame["probability"], errors="coerce").to_numpy(
                dtype="float64"
            ),
        }
    )
    if out["decision_time"].isna().any():
        raise ValueError("decision_time must not be missing (NaT)")
    p = out["probability"].to_numpy()
    bad = ~np.isnan(p) & ~((p >= 0) & (p <= 1))
    if bad.any():
        raise StakingError(f"probability must be in [0, 1], got {p[bad][0]!r}")
    no_probability = int(np.isnan(p).sum())
    return out[~np.isnan(p)].reset_index(drop=True), no_probability


_CANDIDATES_SQL = """
WITH p AS (SELECT * FROM _bt_scored),
mf AS (
    SELECT event_id, outcome, observed_at, best_price, best_book, {fair} AS fair_prob
    FROM {features} WHERE market = 'h2h'
),
inst AS (SELECT DISTINCT event_id, observed_at FROM mf),
-- the market's latest instant at or before the decision; a side with no row there had no
-- fresh quote then (market_features keeps only fresh quotes) and gets no price
at_t AS (
    SELECT p.*, i.observed_at AS state_at
    FROM p ASOF LEFT JOIN inst i ON i.event_id = p.event_id AND i.observed_at <= p.decision_time
),
priced AS (
    SELECT a.*, m.best_price AS price, m.best_book AS book
    FROM at_t a LEFT JOIN mf m
      ON m.event_id = a.event_id AND m.outcome = a.side AND m.observed_at = a.state_at
),
settled AS (
    SELECT x.*, {commence} AS commence_time, {resolved} AS resolved_at,
        CASE WHEN NOT coalesce(isfinite({home}::DOUBLE) AND isfinite({away}::DOUBLE), false)
                THEN NULL
            WHEN x.side = 'home' THEN {home} > {away}
            WHEN x.side = 'away' THEN {away} > {home}
            WHEN x.side = 'draw' THEN {home} = {away}
        END AS won
    FROM priced x {joins}
),
closing AS (
    SELECT s.*, c.fair_prob AS closing_prob
    FROM settled s ASOF LEFT JOIN (SELECT event_id, outcome, observed_at, fair_prob FROM mf) c
      ON c.event_id = s.event_id AND c.outcome = s.side AND c.observed_at < s.commence_time
)
SELECT rid, event_id, side, decision_time, probability, price, book, won,
    CASE WHEN won IS NOT NULL THEN coalesce(resolved_at, commence_time) END AS settled_at,
    CASE WHEN closing_prob > 0 AND closing_prob < 1 THEN 1.0 / closing_prob END
        AS closing_fair_price
FROM closing
ORDER BY decision_time, event_id, side, rid
"""


def _candidates(
    con: duckdb.DuckDBPyConnection, scored: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every scored side with its point-in-time best price, result and closing fair price.

    `usable` marks the sides one could bet: priced (> 1) and not decided after its own
    result was known. Sorted by decision time (then event, side): the walk-forward order.
    """
    if not _has_table(con, FEATURES_TABLE):
        raise ValueError(f"table {FEATURES_TABLE!r} not found: compute market features first")
    mf_cols = _columns(con, FEATURES_TABLE)
    fair = next((c for c in FAIR_PROB_COLUMNS if c in mf_cols), None)
    joins, commence, resolved, home, away = (
        "",
        "NULL::TIMESTAMPTZ",
        "NULL::TIMESTAMPTZ",
        "NULL",
        "NULL",
    )
    if _has_table(con, "results"):
        joins += " LEFT JOIN results r ON r.event_id = x.event_id"
        home, away = "r.home_score", "r.away_score"
        if "resolved_at" in _columns(con, "results"):
            resolved = "r.resolved_at"
    if _has_table(con, "events") and "commence_time" in _columns(con, "events"):
        joins += " LEFT JOIN events e ON e.event_id = x.event_id"
        commence = "e.commence_time"
    sql = _CANDIDATES_SQL.format(
        features=FEATURES_TABLE,
        fair=fair if fair else "NULL::DOUBLE",
        joins=joins,
        commence=commence,
        resolved=resolved,
        home=home,
        away=away,
    )
    con.register("_bt_scored", scored.assign(rid=np.arange(len(scored), dtype="int64")))
    try:
        frame = con.execute(sql).df()
    finally:
        con.unregister("_bt_scored")

    frame["decision_time"] = _utc(frame["decision_time"]).array
    frame["settled_at"] = _utc(frame["settled_at"]).array
    frame["won"] = frame["won"].astype("boolean")
    price = frame["price"].to_numpy(dtype="float64")
    priced = np.isfinite(price) & (price > 1)
    known_early = (
        frame["won"].notna().to_numpy()
        & frame["settled_at"].notna().to_numpy()
        & (_ns(frame["settled_at"]) <= _ns(frame["decision_time"]))
    )
    frame["usable"] = priced & ~known_early
    counts = {
        "scored": len(frame),
        "no_price": int((~priced).sum()),
        "result_known_at_decision": int((priced & known_early).sum()),
    }
    return frame, counts


# --------------------------------------------------------------------------- staking walk


def _kelly_shares(p: np.ndarray, price: np.ndarray, config: BacktestConfig) -> np.ndarray:
    """Share of bankroll per bet as in `kelly_stakes`: fractional Kelly, capped; 0 without edge."""
    with np.errstate(invalid="ignore", divide="ignore"):
        edge = p * price - 1.0
        bet = np.isfinite(edge) & (edge > 0) & (edge >= config.min_edge)
        full = np.where(bet, edge / (price - 1.0), 0.0)
    return np.minimum(config.kelly_fraction * full, config.max_stake_share)


def _round_down(stake: float, increment: float) -> float:
    return min(math.floor(stake / increment + _ROUNDING_SLACK) * increment, stake)


def _walk(
    decision_ns: np.ndarray,
    settle_ns: np.ndarray,
    shares: np.ndarray,
    prices: np.ndarray,
    won: np.ndarray,
    limits: np.ndarray,
    config: BacktestConfig,
) -> np.ndarray:
    """Stakes placed in decision order, each sized on the bankroll settled by its decision.

    The bankroll a stake is sized on is the initial one plus the profit of every bet whose
    settlement time is <= the decision time (the point-in-time convention of the feature
    store); a bet still running keeps its stake tied up, so stakes never exceed the cash
    left, and a bet that never settles (no result) keeps it tied up for good.
    """
    n = decision_ns.size
    stakes = [0.0] * n
    dec = decision_ns.tolist()
    settle = settle_ns.tolist()
    share_l = shares.tolist()
    price_l = prices.tolist()
    won_l = won.tolist()
    limit_l = limits.tolist()
    increment = float(config.increment)
    floor, heappush, heappop = math.floor, heapq.heappush, heapq.heappop  # hot loop: locals
    pending: list[tuple[int, int, float, float]] = []  # (settles at, order, stake, payout)
    equity = float(config.bankroll)  # initial + settled profit
    tied = 0.0  # stakes of bets not settled yet
    for i in range(n):
        t = dec[i]
        while pending and pending[0][0] <= t:
            _, _, stake_done, payout = heappop(pending)
            equity += payout - stake_done
            tied -= stake_done
        share = share_l[i]
        if share <= 0.0 or equity <= 0.0:
            continue
        stake = min(share * equity, limit_l[i], equity - tied)
        if stake <= 0.0:
            continue
        stake = min(floor(stake / increment + _ROUNDING_SLACK) * increment, stake)
        if stake <= 0.0:
            continue
        stakes[i] = stake
        tied += stake
        if settle[i] != _NEVER:
            payout = stake * price_l[i] if won_l[i] else 0.0
            heappush(pending, (settle[i], i, stake, payout))
    return np.asarray(stakes, dtype="float64")


def _settle_keys(candidates: pd.DataFrame) -> tuple[np.ndarray, pd.Series]:
    """Settlement order keys (never for open bets) and settled_at (a result without a time
    settles at the end of the run, after every decision, so it can never be peeked at)."""
    won_known = candidates["won"].notna().to_numpy()
    settled_at = candidates["settled_at"].copy()
    no_time = won_known & settled_at.isna().to_numpy()
    if no_time.any():
        times = pd.concat([candidates["decision_time"], settled_at]).dropna()
        settled_at[no_time] = times.max()
    keys = np.where(won_known, _ns(settled_at), _NEVER)
    keys[no_time] = _NEVER - 1  # after every decision, before nothing that matters
    return keys, settled_at


def _bets_frame(
    strategy: str, rows: pd.DataFrame, stake: np.ndarray, settled_at: pd.Series
) -> pd.DataFrame:
    """Bets in the common schema; profit NaN and won NA while a bet is open."""
    price = rows["price"].to_numpy(dtype="float64")
    p = rows["probability"].to_numpy(dtype="float64")
    won = rows["won"].astype("boolean")
    settled = won.notna().to_numpy()
    won_arr = won.fillna(False).to_numpy(dtype=bool)
    profit = np.where(won_arr, stake * (price - 1.0), -stake)
    out = pd.DataFrame(
        {
            "strategy": strategy,
            "event_id": rows["event_id"].to_numpy(),
            "side": rows["side"].to_numpy(),
            "decision_time": _utc(rows["decision_time"]).array,
            "settled_at": _utc(settled_at.array).where(settled).array,
            "book": rows["book"].to_numpy(),
            "price": price,
            "probability": p,
            "edge": p * price - 1.0,
            "stake": stake,
            "won": won.to_numpy(),
            "profit": np.where(settled, profit, np.nan),
            "settled": settled,
            "closing_fair_price": rows["closing_fair_price"].to_numpy(dtype="float64"),
        }
    )
    return _typed(out)


def _typed(bets: pd.DataFrame) -> pd.DataFrame:
    """The common dtypes, the same whether or not there are rows."""
    bets = bets.reindex(columns=list(BET_COLUMNS))
    for col in ("decision_time", "settled_at"):
        bets[col] = _utc(bets[col]).array
    for col in ("price", "probability", "edge", "stake", "profit", "closing_fair_price"):
        bets[col] = bets[col].astype("float64")
    for col in ("strategy", "event_id", "side", "book"):
        bets[col] = bets[col].astype(object)
    bets["won"] = bets["won"].astype("boolean")
    bets["settled"] = bets["settled"].astype(bool)
    return bets.reset_index(drop=True)


def _empty_bets() -> pd.DataFrame:
    return _typed(pd.DataFrame(columns=list(BET_COLUMNS)))


def _value(
    candidates: pd.DataFrame, counts: dict[str, int], config: BacktestConfig, strategy: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    usable = candidates["usable"].to_numpy()
    p = candidates["probability"].to_numpy(dtype="float64")
    price = candidates["price"].to_numpy(dtype="float64")
    shares = np.where(usable, _kelly_shares(p, price, config), 0.0)
    limits = config.limits(candidates["book"])
    settle_keys, settled_at = _settle_keys(candidates)
    stakes = _walk(
        _ns(candidates["decision_time"]),
        settle_keys,
        shares,
        price,
        candidates["won"].fillna(False).to_numpy(dtype=bool),
        limits,
        config,
    )
    placed = stakes > 0
    bets = _bets_frame(strategy, candidates[placed], stakes[placed], settled_at[placed])
    counts = {
        **counts,
        "no_edge": int((usable & (shares <= 0)).sum()),
        "stake_zero_after_caps": int(((shares > 0) & ~placed).sum()),
        "placed": int(placed.sum()),
        "open": int((~bets["settled"]).sum()),
    }
    return bets, counts


def value_bets(
    con: duckdb.DuckDBPyConnection,
    probabilities: pd.DataFrame | str,
    config: BacktestConfig | None = None,
    *,
    strategy: str = "value",
    probability_column: str = "probability",
) -> pd.DataFrame:
    """Fractional-Kelly bets where a probability beats the best price by `min_edge`.

    `probabilities` is a frame (or SQL query) with event_id, side ('home'/'draw'/'away'),
    decision_time and the probability in `probability_column` (a model's, the market's or
    an oracle's). Each side is priced at the best price of the latest `market_features`
    h2h instant at or before its decision time, staked walking forward in decision order
    on the bankroll settled by then (see `_walk`), capped at `max_stake_share` of it and the
    book's limit, rounded down to `increment`, and settled on `results`. Bets without a
    result stay open (``settled`` False, profit NaN). Returns the placed bets
    (`BET_COLUMNS`); ``bets.attrs["counts"]`` says what was skipped and why.
    """
    config = config or BacktestConfig()
    scored, no_probability = _scored(con, probabilities, probability_column)
    candidates, counts = _candidates(con, scored)
    bets, counts = _value(
        candidates, {**counts, "no_probability": no_probability}, config, strategy
    )
    bets.attrs["counts"] = counts
    return bets


# --------------------------------------------------------------------------- baselines


def _flat_stake(config: BacktestConfig, stake_share: float) -> float:
    if not (_finite(stake_share) and 0 < stake_share <= 1):
        raise ValueError(f"stake_share must be in (0, 1], got {stake_share!r}")
    return stake_share * config.bankroll


def _affordable(bets: pd.DataFrame, bankroll: float) -> tuple[pd.DataFrame, int]:
    """Flat-stake bets placed only while the cash covers them (a ruined bankroll stops betting).

    Cash at a decision = the initial bankroll + the profit of bets settled by then - the
    stakes of bets still running (the same point-in-time convention as `_walk`). Returns the
    bets that could be paid and how many could not.
    """
    if bets.empty:
        return bets, 0
    order = bets.sort_values(["decision_time", "event_id"], kind="stable")
    decided = _ns(order["decision_time"]).tolist()
    settled = order["settled_at"]
    settle = [
        _NEVER if pd.isna(s) else v
        for s, v in zip(
            settled, _ns(settled.fillna(pd.Timestamp(0, tz="UTC"))).tolist(), strict=True
        )
    ]
    stakes = order["stake"].to_numpy(float).tolist()
    profits = order["profit"].fillna(0.0).to_numpy(float).tolist()
    pending: list[tuple[int, int, float, float]] = []
    equity, tied, keep = float(bankroll), 0.0, []
    for i, t in enumerate(decided):
        while pending and pending[0][0] <= t:
            _, _, stake_done, profit_done = heapq.heappop(pending)
            equity += profit_done
            tied -= stake_done
        if stakes[i] > equity - tied + 1e-9:
            keep.append(False)
            continue
        keep.append(True)
        tied += stakes[i]
        if settle[i] != _NEVER:
            heapq.heappush(pending, (settle[i], i, stakes[i], profits[i]))
    kept = order[np.asarray(keep, dtype=bool)]
    return kept.sort_index(), int(len(order) - len(kept))


def _favourite(
    candidates: pd.DataFrame, counts: dict[str, int], config: BacktestConfig, stake_share: float
) -> tuple[pd.DataFrame, dict[str, int]]:
    flat = _flat_stake(config, stake_share)
    usable = candidates[candidates["usable"]]
    picks = usable.sort_values(
        ["event_id", "decision_time", "price", "side"], kind="stable"
    ).drop_duplicates(["event_id", "decision_time"])
    stake = np.minimum(flat, config.limits(picks["book"]))
    stake = np.array([_round_down(s, config.increment) for s in stake.tolist()], dtype="float64")
    _, settled_at = _settle_keys(candidates)
    keep = stake > 0
    picks = picks[keep]
    bets = _bets_frame("favourite", picks, stake[keep], settled_at.loc[picks.index])
    bets, unaffordable = _affordable(bets, config.bankroll)
    bets = bets.sort_values(["decision_time", "event_id"], kind="stable").reset_index(drop=True)
    return bets, {
        **counts,
        "placed": len(bets),
        "not_affordable": unaffordable,
        "open": int((~bets["settled"]).sum()),
    }


def favourite_flat(
    con: duckdb.DuckDBPyConnection,
    probabilities: pd.DataFrame | str,
    config: BacktestConfig | None = None,
    *,
    stake_share: float = 0.01,
    probability_column: str = "probability",
) -> pd.DataFrame:
    """A flat stake (`stake_share` of the initial bankroll) on each event's lowest-priced side.

    The no-model baseline: same events and decision times as the scored sides, priced the
    same way; ties go to the side first by name. Probability and edge are the scored ones,
    for reference only.
    """
    config = config or BacktestConfig()
    scored, _ = _scored(con, probabilities, probability_column)
    candidates, counts = _candidates(con, scored)
    bets, counts = _favourite(candidates, counts, config, stake_share)
    bets.attrs["counts"] = counts
    return bets


def _proportional(
    candidates: pd.DataFrame, counts: dict[str, int], config: BacktestConfig, stake_share: float
) -> tuple[pd.DataFrame, dict[str, int]]:
    flat = _flat_stake(config, stake_share)
    key = ["event_id", "decision_time"]
    whole = candidates.groupby(key, sort=False)["usable"].transform("all").to_numpy(dtype=bool)
    rows = candidates[whole]
    total_p = rows.groupby(key, sort=False)["probability"].transform("sum").to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(total_p > 0, flat * rows["probability"].to_numpy() / total_p, 0.0)
    raw = np.minimum(raw, config.limits(rows["book"]))
    stake = np.array([_round_down(s, config.increment) for s in raw.tolist()], dtype="float64")
    _, settled_at = _settle_keys(candidates)
    keep = stake > 0
    rows = rows[keep]
    bets = _bets_frame("market_proportional", rows, stake[keep], settled_at.loc[rows.index])
    bets, unaffordable = _affordable(bets, config.bankroll)
    skipped = candidates.loc[~whole, key].drop_duplicates()
    return bets, {
        **counts,
        "not_affordable": unaffordable,
        "events_with_unpriced_side": len(skipped),
        "placed": len(bets),
        "open": int((~bets["settled"]).sum()),
    }


def market_proportional(
    con: duckdb.DuckDBPyConnection,
    probabilities: pd.DataFrame | str,
    config: BacktestConfig | None = None,
    *,
    stake_share: float = 0.01,
    probability_column: str = "probability",
) -> pd.DataFrame:
    """A flat stake per event split across its scored sides in proportion to the probability.

    With the market's own probability this is "betting the market": when prices are that
    probability plus a margin, every outcome pays the same and the strategy loses the
    overround, whatever happens. Events with a side that has no price are skipped.
    """
    config = config or BacktestConfig()
    scored, _ = _scored(con, probabilities, probability_column)
    candidates, counts = _candidates(con, scored)
    bets, counts = _proportional(candidates, counts, config, stake_share)
    bets.attrs["counts"] = counts
    return bets


# --------------------------------------------------------------------------- arbitrage


def _leg_won(market: str, outcome: str, point: Any, home: float, away: float) -> bool | None:
    """Whether a leg won on the final score; None for a push (stake back) or an unknown leg."""
    if not (math.isfinite(home) and math.isfinite(away)):
        return None
    if market == "h2h":
        return {"home": home > away, "away": away > home, "draw": home == away}.get(outcome)
    if point is None or not math.isfinite(float(point)):
        return None
    point = float(point)
    if market == "spreads" and outcome in ("home", "away"):
        margin = (home - away if outcome == "home" else away - home) + point
    elif market == "totals" and outcome in ("over", "under"):
        margin = (home + away - point) if outcome == "over" else (point - home - away)
    else:
        return None
    return None if margin == 0 else margin > 0


def _results_lookup(results: pd.DataFrame | None) -> dict[str, tuple[float, float, Any]]:
    """event_id -> (home score, away score, settlement time or NaT)."""
    if results is None or results.empty:
        return {}
    when = (
        _utc(results["resolved_at"]) if "resolved_at" in results else _utc([pd.NaT] * len(results))
    )
    if "commence_time" in results:
        when = when.fillna(_utc(results["commence_time"]))
    home = pd.to_numeric(results["home_score"], errors="coerce").astype("float64").tolist()
    away = pd.to_numeric(results["away_score"], errors="coerce").astype("float64").tolist()
    return {
        str(e): (h, a, t)
        for e, h, a, t in zip(results["event_id"].tolist(), home, away, when.tolist(), strict=True)
    }


def _arbitrage(
    windows: pd.DataFrame,
    config: BacktestConfig,
    rng: np.random.Generator,
    results: pd.DataFrame | None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    actionable = windows[windows["status"] == "actionable"]
    long_enough = actionable["duration_seconds"].astype("float64") >= config.arb_latency_seconds
    taken = actionable[long_enough.to_numpy()]
    outcome_of = _results_lookup(results)
    latency = pd.Timedelta(seconds=float(config.arb_latency_seconds))
    counts = {
        "windows": len(windows),
        "actionable": len(actionable),
        "too_short": int((~long_enough).sum()),
        "unprofitable_after_limits": 0,
        "all_legs_accepted": 0,
        "some_legs_rejected": 0,
        "all_legs_rejected": 0,
        "naked_legs": 0,
        "pushed_legs": 0,
    }
    rows: list[dict[str, Any]] = []
    for w in taken.itertuples(index=False):  # windows are few; each carries its legs as JSON
        legs = json.loads(w.legs)
        stake = np.array([float(leg["stake"]) for leg in legs])
        eff = np.array([float(leg["effective_price"]) for leg in legs])
        books = [str(leg["bookmaker"]) for leg in legs]
        scale = 1.0
        for book in set(books):
            in_book = float(stake[[b == book for b in books]].sum())
            if in_book > config.limit(book):
                scale = min(scale, config.limit(book) / in_book)
        if scale < 1.0:
            stake = np.array([_round_down(s * scale, config.increment) for s in stake.tolist()])
        total = float(stake.sum())
        profit = float((stake * eff).min()) - total if total > 0 else 0.0
        if total <= 0 or profit <= 0:
            counts["unprofitable_after_limits"] += 1
            continue
        accepted = rng.random(len(legs)) >= config.arb_rejection_probability
        placed_at = pd.Timestamp(w.opened_at) + latency
        home, away, settled_at = outcome_of.get(str(w.event_id), (math.nan, math.nan, pd.NaT))
        base = {"strategy": "arbitrage", "event_id": w.event_id, "decision_time": placed_at}
        if accepted.all():
            counts["all_legs_accepted"] += 1
            rows.append(
                {
                    **base,
                    "side": "+".join(str(leg["outcome"]) for leg in legs),
                    "book": "+".join(books),
                    "settled_at": placed_at if pd.isna(settled_at) else settled_at,
                    "price": (total + profit) / total,
                    "edge": profit / total,
                    "stake": total,
                    "won": True,
                    "profit": profit,
                    "settled": True,
                }
            )
            continue
        if not accepted.any():
            counts["all_legs_rejected"] += 1
            continue
        counts["some_legs_rejected"] += 1
        for leg, leg_stake, price, ok in zip(legs, stake, eff, accepted, strict=True):
            if not ok or leg_stake <= 0:
                continue
            won = _leg_won(str(w.market), str(leg["outcome"]), leg.get("point"), home, away)
            known = str(w.event_id) in outcome_of and math.isfinite(home) and math.isfinite(away)
            if known and won is None:
                counts["pushed_legs"] += 1  # the stake comes back: no bet
                continue
            counts["naked_legs"] += 1
            rows.append(
                {
                    **base,
                    "side": str(leg["outcome"]),
                    "book": str(leg["bookmaker"]),
                    "settled_at": settled_at if known else pd.NaT,
                    "price": float(price),
                    "edge": math.nan,
                    "stake": float(leg_stake),
                    "won": won if known else pd.NA,
                    "profit": (
                        (leg_stake * (price - 1.0) if won else -leg_stake) if known else math.nan
                    ),
                    "settled": known,
                }
            )
    if not rows:
        return _empty_bets(), {**counts, "placed": 0, "open": 0}
    bets = _typed(pd.DataFrame(rows))
    counts = {**counts, "placed": len(bets), "open": int((~bets["settled"]).sum())}
    return bets.sort_values("decision_time", kind="stable").reset_index(drop=True), counts


def arbitrage_bets(
    windows: pd.DataFrame,
    config: BacktestConfig | None = None,
    rng: np.random.Generator | None = None,
    results: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Scanner windows played with our latency and the books' refusals.

    A window is taken only if it is 'actionable' and lasted `arb_latency_seconds` (the time
    to place every leg), at ``opened_at + latency`` with the scanner's stakes (scaled under
    `book_limits` and rounded down again if needed). Each leg is accepted with probability
    ``1 - arb_rejection_probability``. All accepted: one row with the guaranteed profit
    (price = payout / total stake, won). Some refused: the accepted legs are naked bets,
    settled on `results` (event_id, home_score, away_score, resolved_at; optional
    commence_time), open without one, dropped on a push. ``bets.attrs["counts"]`` says how
    many windows went which way.
    """
    config = config or BacktestConfig()
    rng = rng if rng is not None else np.random.default_rng(config.seed)
    bets, counts = _arbitrage(windows, config, rng, results)
    bets.attrs["counts"] = counts
    return bets


# --------------------------------------------------------------------------- reports


def _pct(value: float) -> str:
    return f"{value:+.1%}"


def verdict(report: StrategyReport, open_bets: int = 0) -> str:
    """One plain sentence on a strategy's ROI: is it distinguishable from zero, and how."""
    tail = f"; {open_bets} open bet(s) not counted" if open_bets else ""
    if report.bets == 0:
        return f"no settled bets: nothing to judge{tail}"
    ci = f"{CI_LEVEL:.0%} CI {_pct(report.roi_ci_low)} to {_pct(report.roi_ci_high)}"
    head = f"ROI {_pct(report.roi)} ({ci}) over {report.bets} settled bets"
    if report.roi_ci_low > 0:
        judged = "significantly above zero"
    elif report.roi_ci_high < 0:
        judged = "significantly below zero: it loses money"
    else:
        judged = "not significantly different from zero, so not shown to be profitable"
    p = report.p_value_vs_random
    if math.isfinite(p):
        judged += (
            f"; beats random picks from the same candidates (p = {p:.3f})"
            if p < 1 - CI_LEVEL
            else f"; no better than random picks from the same candidates (p = {p:.3f})"
        )
    return f"{head}: {judged}{tail}"


def _report(
    bets: pd.DataFrame, config: BacktestConfig, pool: pd.DataFrame | None
) -> StrategyReport:
    done = bets[bets["settled"] & bets["won"].notna()]
    random_pool = None
    if pool is not None:
        pool = pool[pool["usable"] & pool["won"].notna()]
        if len(pool) > len(done):  # drawing the whole pool would only reshuffle the bets
            random_pool = {
                "prices": pool["price"].to_numpy(dtype="float64"),
                "won": pool["won"].to_numpy(dtype=bool),
            }
    return strategy_report(
        done["stake"].to_numpy(dtype="float64"),
        done["price"].to_numpy(dtype="float64"),
        done["won"].to_numpy(dtype=bool),
        done["settled_at"].to_numpy(),
        bankroll0=config.bankroll,
        closing_fair_prices=done["closing_fair_price"].to_numpy(dtype="float64"),
        n_boot=config.n_boot,
        seed=config.seed,
        random_selection_pool=random_pool,
    )


def _results_frame(con: duckdb.DuckDBPyConnection) -> pd.DataFrame | None:
    if not _has_table(con, "results"):
        return None
    resolved = "r.resolved_at" if "resolved_at" in _columns(con, "results") else "NULL"
    join, commence = "", "NULL::TIMESTAMPTZ"
    if _has_table(con, "events") and "commence_time" in _columns(con, "events"):
        join, commence = "LEFT JOIN events e ON e.event_id = r.event_id", "e.commence_time"
    return con.execute(
        f"SELECT r.event_id, r.home_score, r.away_score, {resolved} AS resolved_at, "
        f"{commence} AS commence_time FROM results r {join}"
    ).df()


def run_backtest(
    con: duckdb.DuckDBPyConnection,
    probabilities: Mapping[str, pd.DataFrame | str],
    windows: pd.DataFrame | None = None,
    config: BacktestConfig | None = None,
    *,
    baselines: bool = True,
    market_key: str = "market",
) -> BacktestResult:
    """Every strategy on the same data, with reports and verdicts.

    `probabilities` maps a strategy name to scored sides (columns event_id, side,
    decision_time, probability; see `predictions_frame`), each value-bet. With `baselines`,
    ``favourite`` runs on the union of those events (each at its earliest decision time)
    and, when `market_key` is among the names, ``market_proportional`` on the market's
    probability. `windows` (the scanner's) adds ``arbitrage``. The permutation p-value of a
    strategy draws from every settled side it could have bet at its best price.
    """
    config = config or BacktestConfig()
    parts: list[pd.DataFrame] = []
    reports: dict[str, StrategyReport] = {}
    counts: dict[str, dict[str, int]] = {}
    scored_all: list[pd.DataFrame] = []

    def add(name: str, bets: pd.DataFrame, n: dict[str, int], pool: pd.DataFrame | None) -> None:
        parts.append(bets)
        counts[name] = n
        reports[name] = _report(bets, config, pool)

    for name, source in probabilities.items():
        scored, no_probability = _scored(con, source)
        scored_all.append(scored)
        candidates, found = _candidates(con, scored)
        found["no_probability"] = no_probability
        bets, n = _value(candidates, found, config, name)
        add(name, bets, n, candidates)
        if baselines and name == market_key:
            bets, n = _proportional(candidates, found, config, 0.01)
            add("market_proportional", bets, n, candidates)

    if baselines and scored_all:
        union = pd.concat(scored_all, ignore_index=True)
        first = union.groupby("event_id")["decision_time"].transform("min")
        union = union[union["decision_time"] == first].drop_duplicates(["event_id", "side"])
        candidates, n = _candidates(con, union.reset_index(drop=True))
        bets, n = _favourite(candidates, n, config, 0.01)
        add("favourite", bets, n, candidates)

    if windows is not None:
        rng = np.random.default_rng(config.seed)
        bets, n = _arbitrage(windows, config, rng, _results_frame(con))
        add("arbitrage", bets, n, None)

    frames = [b for b in parts if len(b)]
    all_bets = _typed(pd.concat(frames, ignore_index=True)) if frames else _empty_bets()
    verdicts = {
        name: verdict(report, counts[name].get("open", 0)) for name, report in reports.items()
    }
    return BacktestResult(
        bets=all_bets, reports=reports, verdicts=verdicts, counts=counts, config=config
    )
