"""Arbitrage scanner over the real Odds API change logs: throughput and what it finds.

Run: .venv/bin/python benchmarks/bench_arbitrage.py [--limit N] [--skip-variants]

Every change log in ../shared/data/odds-api/changes (or the first N) is loaded into one
in-memory DuckDB with `load_odds_api_change_log`, then `scan` runs with the default
ScanConfig (staleness 120 s; the loader writes the change logs' withdrawals to
`quote_removals`, so a withdrawal ends a quote). Prints wall time, quotes/s, peak RSS, windows
actionable / suspicious by reason, window durations (p50/p90/max), the five largest margins,
the actionable split by market and in-play, and the pre-match actionable margins.

Section "variants" rescans at 120 s staleness and with `staleness_seconds=None` (a quote
lives until replaced or withdrawn: how a change log, sampled every 5-15 minutes, actually
reads). The removals are written here only if the loader did not write them (it has since
commit 3056a76; before, this section was the only scan that saw them).
"""

from __future__ import annotations

import argparse
import time

import duckdb
import numpy as np
from _common import SHARED_DATA, emit, peak_rss_mb

from odds_pipeline.features.compute import load_odds_api_change_log
from odds_pipeline.ingestion import store
from odds_pipeline.scoring.arbitrage import ScanConfig, ScanResult, ensure_removals_table, scan

CHANGES = SHARED_DATA / "odds-api" / "changes"

# For a loader that skips removed rows (before commit 3056a76): writes them, point unknown.
REMOVALS_SQL = """
INSERT INTO quote_removals (event_id, bookmaker, market, outcome, point, removed_at, source)
SELECT event_id, bookmaker, market,
    CASE WHEN outcome = home_team THEN 'home' WHEN outcome = away_team THEN 'away'
         WHEN lower(outcome) = 'draw' THEN 'draw' WHEN lower(outcome) = 'over' THEN 'over'
         WHEN lower(outcome) = 'under' THEN 'under' END AS side,
    NULL, snapshot_time::TIMESTAMPTZ, 'odds_api_changes'
FROM read_parquet($files)
WHERE removed AND market IN ('h2h', 'spreads', 'totals') AND side IS NOT NULL
"""


def summarise(result: ScanResult, seconds: float) -> dict[str, object]:
    w = result.windows
    durations = w["duration_seconds"].to_numpy(dtype=float)
    actionable = result.actionable
    # a lone leg's "margin" (1 - 1/p) says nothing: the largest among real combinations
    paired = w[~w["reason"].isin(["one_leg", "missing_leg"])]
    top = paired.nlargest(5, "best_margin")[
        [
            "event_id",
            "market",
            "line",
            "best_margin",
            "duration_seconds",
            "in_play",
            "status",
            "reason",
        ]
    ]

    def dist(values: np.ndarray) -> dict[str, float | None]:
        if not len(values):
            return {"p50": None, "p90": None, "max": None}
        return {
            "p50": float(np.percentile(values, 50)),
            "p90": float(np.percentile(values, 90)),
            "max": float(values.max()),
        }

    return {
        "seconds": round(seconds, 2),
        "quotes_per_s": round(result.quotes_read / seconds) if seconds else None,
        **result.counts,
        "duration_s_all": dist(durations),
        "duration_s_actionable": dist(actionable["duration_seconds"].to_numpy(dtype=float)),
        "actionable_still_open": int(actionable["still_open"].sum()),
        "actionable_by_market": {
            str(k): int(v) for k, v in actionable["market"].value_counts().sort_index().items()
        },
        "actionable_in_play": int(actionable["in_play"].sum()),
        "actionable_pre_match_margin": dist(
            actionable.loc[~actionable["in_play"].astype(bool), "best_margin"].to_numpy(dtype=float)
        ),
        "actionable_margin": dist(actionable["best_margin"].to_numpy(dtype=float)),
        "actionable_profit": dist(actionable["guaranteed_profit"].to_numpy(dtype=float)),
        "actionable_single_instant": int((actionable["n_instants"] == 1).sum()),
        "largest_margins": [
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for row in top.to_dict("records")
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N change logs")
    parser.add_argument("--skip-variants", action="store_true")
    args = parser.parse_args()
    files = sorted(CHANGES.glob("*_changes.parquet"))[: args.limit]
    if not files:
        raise SystemExit(f"no change logs under {CHANGES}")

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone='UTC'")
    store.ensure_schema(con)
    start = time.perf_counter()
    quotes = load_odds_api_change_log(con, files)
    load_seconds = time.perf_counter() - start

    start = time.perf_counter()
    result = scan(con, ScanConfig())
    seconds = time.perf_counter() - start
    figures: dict[str, object] = {
        "files": len(files),
        "file_names": [f.name for f in files],
        "quotes": quotes,
        "load_seconds": round(load_seconds, 2),
        "seconds": round(seconds, 2),
        "quotes_per_s": round(quotes / seconds),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "default_config": summarise(result, seconds),
    }

    if not args.skip_variants:
        ensure_removals_table(con)
        if not con.execute("SELECT count(*) FROM quote_removals").fetchone()[0]:
            con.execute(REMOVALS_SQL, {"files": [str(f) for f in files]})
        variants = {}
        for name, config in (
            ("removals_staleness_120s", ScanConfig()),
            ("removals_until_replaced", ScanConfig(staleness_seconds=None)),
        ):
            start = time.perf_counter()
            res = scan(con, config)
            variants[name] = summarise(res, time.perf_counter() - start)
        figures["variants"] = variants
        figures["peak_rss_mb_with_variants"] = round(peak_rss_mb(), 1)
    con.close()
    emit(figures)


if __name__ == "__main__":
    main()
