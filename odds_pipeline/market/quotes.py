"""The canonical quote contract shared by every source adapter.

Adapters emit *candidate* quotes (one row per price value read, nothing dropped);
`validate_candidates` splits them into accepted quotes and rejected records with a
reason, so `prices_read == accepted + rejected` holds by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from odds_pipeline.market.odds_math import SENTINEL_PRICES

MARKETS: dict[str, frozenset[str]] = {
    "h2h": frozenset({"home", "away", "draw"}),
    "spreads": frozenset({"home", "away"}),
    "totals": frozenset({"over", "under"}),
}
# Seed notebooks' vocabulary -> The Odds API vocabulary.
MARKET_ALIASES = {
    "moneyline": "h2h",
    "1x2": "h2h",
    "h2h": "h2h",
    "points_spread": "spreads",
    "spread": "spreads",
    "spreads": "spreads",
    "asian_handicap": "spreads",
    "points_total": "totals",
    "total": "totals",
    "totals": "totals",
    "over_under": "totals",
}

# Columns every adapter fills. `reason` lets an adapter refuse a record for a
# source-specific cause (unparseable cell, zone-less timestamp); None means "looks fine".
CANDIDATE_COLUMNS = [
    "source",
    "event_id",
    "bookmaker",
    "market",
    "outcome",
    "outcome_name",
    "point",
    "price",
    "price_raw",
    "observed_at",
    "commence_time",
    "source_file",
    "source_record",
    "reason",
]
OPTIONAL_CANDIDATE_COLUMNS = ["last_update", "raw", "ingested_at"]

QUOTE_COLUMNS = [
    "source",
    "load_id",
    "event_id",
    "bookmaker",
    "market",
    "outcome",
    "outcome_name",
    "point",
    "price",
    "observed_at",
    "ingested_at",
    "in_play",
    "last_update",
    "source_file",
    "source_record",
]
REJECT_COLUMNS = [
    "source",
    "load_id",
    "source_file",
    "source_record",
    "reason",
    "event_id",
    "bookmaker",
    "market",
    "outcome",
    "price_raw",
    "observed_at",
    "raw",
]
EVENT_COLUMNS = [
    "event_id",
    "source",
    "sport",
    "league",
    "season",
    "commence_time",
    "home_team",
    "away_team",
]
RESULT_COLUMNS = ["event_id", "source", "home_score", "away_score", "resolved_at"]

QUOTE_KEY = ["event_id", "bookmaker", "market", "outcome", "point", "observed_at"]


class SourceFormatError(ValueError):
    """A file that cannot be parsed at all (truncated JSON, missing key columns).

    Carries the file and line so the Dagster layer can fail the asset with a message an
    on-call engineer can act on; nothing from such a file is written.
    """

    def __init__(self, path: str, line: int | None, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


@dataclass
class ParseResult:
    """What one or more files of one source contained, before storage."""

    quotes: pd.DataFrame
    rejected: pd.DataFrame
    events: pd.DataFrame
    results: pd.DataFrame
    prices_read: int
    files: list[str] = field(default_factory=list)
    unknown_columns: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, object] = field(default_factory=dict)
    # Problems that did not stop the load (a cut-short last row, a fallback encoding),
    # one line each naming the file, for the asset's metadata.
    warnings: list[str] = field(default_factory=list)

    @property
    def quotes_accepted(self) -> int:
        return len(self.quotes)

    @property
    def quotes_rejected(self) -> int:
        return len(self.rejected)

    def rejected_reasons(self) -> dict[str, int]:
        if self.rejected.empty:
            return {}
        counts = self.rejected["reason"].value_counts()
        return {str(k): int(v) for k, v in sorted(counts.items())}

    def summary(self) -> dict[str, object]:
        """The figures `odds-pipeline inspect` prints and assets put in metadata."""
        observed = (
            self.quotes["observed_at"]
            if not self.quotes.empty
            else pd.Series([], dtype="datetime64[ns, UTC]")
        )
        unknown = sorted({col for cols in self.unknown_columns.values() for col in cols})
        return {
            "prices_read": int(self.prices_read),
            "quotes_accepted": self.quotes_accepted,
            "quotes_rejected": self.quotes_rejected,
            "rejected_reasons": self.rejected_reasons(),
            "events": int(self.events["event_id"].nunique()) if not self.events.empty else 0,
            "bookmakers": sorted(self.quotes["bookmaker"].unique().tolist())
            if not self.quotes.empty
            else [],
            "markets": sorted(self.quotes["market"].unique().tolist())
            if not self.quotes.empty
            else [],
            "observed_from": observed.min().isoformat() if len(observed) else None,
            "observed_to": observed.max().isoformat() if len(observed) else None,
            "unknown_columns": unknown,
        }


def empty_frame(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def combine(results: list[ParseResult]) -> ParseResult:
    """Merge per-file results of one source (files keep their own records)."""
    if not results:
        return ParseResult(
            quotes=empty_frame(QUOTE_COLUMNS),
            rejected=empty_frame(REJECT_COLUMNS),
            events=empty_frame(EVENT_COLUMNS),
            results=empty_frame(RESULT_COLUMNS),
            prices_read=0,
        )
    if len(results) == 1:
        return results[0]

    def cat(frames: list[pd.DataFrame]) -> pd.DataFrame:
        non_empty = [f for f in frames if not f.empty]
        return pd.concat(non_empty, ignore_index=True) if non_empty else frames[0]

    events = cat([r.events for r in results])
    if not events.empty:
        events = events.drop_duplicates("event_id", keep="last").reset_index(drop=True)
    res = cat([r.results for r in results])
    if not res.empty:
        res = res.drop_duplicates("event_id", keep="last").reset_index(drop=True)
    unknown: dict[str, list[str]] = {}
    notes: dict[str, object] = {}
    for r in results:
        unknown.update(r.unknown_columns)
        for key, value in r.notes.items():
            prev = notes.get(key)
            if isinstance(prev, pd.DataFrame) and isinstance(value, pd.DataFrame):
                notes[key] = pd.concat([prev, value], ignore_index=True)
            elif isinstance(prev, list) and isinstance(value, list):
                notes[key] = prev + value
            elif isinstance(prev, dict) and isinstance(value, dict):
                notes[key] = {**prev, **value}
            else:
                notes[key] = value
    return ParseResult(
        quotes=cat([r.quotes for r in results]),
        rejected=cat([r.rejected for r in results]),
        events=events,
        results=res,
        prices_read=sum(r.prices_read for r in results),
        files=[f for r in results for f in r.files],
        unknown_columns=unknown,
        notes=notes,
        warnings=[w for r in results for w in r.warnings],
    )


def _raw_records(frame: pd.DataFrame) -> list[str]:
    cols = [
        c
        for c in [
            "event_id",
            "bookmaker",
            "market",
            "outcome_name",
            "point",
            "price_raw",
            "observed_at",
        ]
        if c in frame
    ]
    records = frame[cols].astype(object).where(frame[cols].notna(), None).to_dict("records")
    return [json.dumps(r, default=str) for r in records]


def validate_candidates(
    candidates: pd.DataFrame,
    *,
    load_id: str,
    ingested_at: pd.Timestamp | None = None,
    keep_in_play: bool = False,
    max_price: float = 1001.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split candidates into (accepted quotes, rejected records); every row lands in one.

    Rules, first match wins: adapter reason, sentinel, non-finite, <= 1.0, above
    `max_price`, unknown market, unknown outcome, missing timestamp, in-play (unless
    `keep_in_play`, then flagged `in_play=True`), duplicate of an earlier record with the
    same key (`duplicate` if the price is equal too, else `conflicting_duplicate`).
    """
    missing = [c for c in CANDIDATE_COLUMNS if c not in candidates.columns]
    if missing:
        raise ValueError(f"adapter produced candidates without columns {missing}")
    df = candidates.reset_index(drop=True)
    n = len(df)
    reason = df["reason"].astype(object).to_numpy(copy=True)
    open_ = pd.isna(reason)

    def flag(mask: np.ndarray, why: str) -> None:
        nonlocal open_
        hit = open_ & mask
        reason[hit] = why
        open_ = open_ & ~hit

    price = pd.to_numeric(df["price"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    raw_numeric = pd.to_numeric(df["price_raw"], errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan
    )
    flag(np.isin(raw_numeric, list(SENTINEL_PRICES)), "sentinel_price")
    flag(~np.isfinite(price), "non_finite_price")
    with np.errstate(invalid="ignore"):
        flag(price <= 1.0, "price_not_above_one")
        flag(price > max_price, "price_above_max")
    market = df["market"].astype(object)
    flag(~market.isin(MARKETS.keys()).to_numpy(), "unknown_market")
    outcome = df["outcome"].astype(object)
    valid_outcome = np.zeros(n, dtype=bool)
    for mkt, sides in MARKETS.items():
        valid_outcome |= (market == mkt).to_numpy() & outcome.isin(sides).to_numpy()
    flag(~valid_outcome, "unknown_outcome")
    observed = pd.to_datetime(df["observed_at"], utc=True, cache=False)
    commence = pd.to_datetime(df["commence_time"], utc=True, cache=False)
    flag(observed.isna().to_numpy(), "missing_timestamp")
    in_play = (observed > commence).fillna(False).to_numpy(dtype=bool)
    if not keep_in_play:
        flag(in_play, "in_play")

    # Duplicates among the still-accepted rows: first occurrence wins.
    key_frame = pd.DataFrame(
        {
            "event_id": df["event_id"],
            "bookmaker": df["bookmaker"],
            "market": market,
            "outcome": outcome,
            "point": pd.to_numeric(df["point"], errors="coerce").fillna(-1e18),
            "observed_at": observed,
        }
    )
    idx = np.flatnonzero(open_)
    if len(idx):
        sub = key_frame.iloc[idx]
        dup_key = sub.duplicated(keep="first").to_numpy()
        if dup_key.any():
            sub_price = pd.Series(price[idx])
            exact = (
                pd.concat([sub.reset_index(drop=True), sub_price.rename("price")], axis=1)
                .duplicated(keep="first")
                .to_numpy()
            )
            dup_rows = idx[dup_key]
            exact_rows = idx[dup_key & exact]
            conflict_rows = idx[dup_key & ~exact]
            reason[exact_rows] = "duplicate"
            reason[conflict_rows] = "conflicting_duplicate"
            open_[dup_rows] = False

    accepted_mask = open_
    if ingested_at is None and "ingested_at" not in df:
        raise ValueError("ingested_at must be given, as a column or a value")
    ingested = (
        pd.to_datetime(df["ingested_at"], utc=True, cache=False)
        if "ingested_at" in df
        else pd.Series(pd.Timestamp(ingested_at), index=df.index)
    )
    if ingested_at is not None and "ingested_at" in df:
        ingested = ingested.fillna(pd.Timestamp(ingested_at))

    acc = df.loc[accepted_mask]
    quotes = pd.DataFrame(
        {
            "source": acc["source"].astype(str),
            "load_id": load_id,
            "event_id": acc["event_id"].astype(str),
            "bookmaker": acc["bookmaker"].astype(str),
            "market": market[accepted_mask].astype(str),
            "outcome": outcome[accepted_mask].astype(str),
            "outcome_name": acc["outcome_name"].astype(object),
            "point": pd.to_numeric(acc["point"], errors="coerce").astype("float64"),
            "price": price[accepted_mask],
            "observed_at": observed[accepted_mask],
            "ingested_at": ingested[accepted_mask],
            "in_play": in_play[accepted_mask],
            "last_update": pd.to_datetime(acc["last_update"], utc=True)
            if "last_update" in acc
            else pd.Series(pd.NaT, index=acc.index, dtype="datetime64[ns, UTC]"),
            "source_file": acc["source_file"].astype(object),
            "source_record": acc["source_record"].astype(object),
        }
    ).reset_index(drop=True)

    rej_mask = ~accepted_mask
    rej = df.loc[rej_mask]
    raw = rej["raw"].astype(object).tolist() if "raw" in rej else _raw_records(rej)
    rejected = pd.DataFrame(
        {
            "source": rej["source"].astype(str),
            "load_id": load_id,
            "source_file": rej["source_file"].astype(object),
            "source_record": rej["source_record"].astype(object),
            "reason": reason[rej_mask],
            "event_id": rej["event_id"].astype(object),
            "bookmaker": rej["bookmaker"].astype(object),
            "market": rej["market"].astype(object),
            "outcome": rej["outcome"].astype(object),
            "price_raw": rej["price_raw"]
            .astype(object)
            .map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)),
            "observed_at": observed[rej_mask],
            "raw": raw,
        }
    ).reset_index(drop=True)
    assert len(quotes) + len(rejected) == n
    return quotes, rejected


def normalize_market(name: str) -> str | None:
    return MARKET_ALIASES.get(str(name).strip().lower())
