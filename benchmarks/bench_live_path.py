"""The live path poll by poll over a long history: is a poll's cost independent of history?

    .venv/bin/python benchmarks/bench_live_path.py [--days 30 --measure-every-hours 4]

A simulated market (8 kickoffs a day, markets open 3 days before) is replayed as a live feed:
quotes land by `ingested_at` in 15-minute polls, each poll one load. Every
`--measure-every-hours` of simulated time, one poll is measured from landing to alert, the way
the live chain runs it: write the poll's load, recompute features only for the events it
touched (`where load_id = ...`: quote, market and pair features), scan for arbitrage over the
last 2 hours (`scan(since=...)`), format an alert per new actionable window. The polls in
between are landed in one load per gap and their features recomputed incrementally (same
state as poll by poll, cheaper to simulate). Reports per measured poll: latency, events
touched, quotes in the store, peak RSS; and the slope of latency against simulated day.
Domain functions only: the Dagster run around them (process start, event log) is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import emit, peak_rss_mb

from odds_pipeline.features.compute import (
    compute_market_features,
    compute_pair_features,
    compute_quote_features,
)
from odds_pipeline.ingestion.sources import simulator
from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.market.quotes import ParseResult
from odds_pipeline.monitoring.alerts import arbitrage_alert
from odds_pipeline.scoring.arbitrage import ScanConfig, legs_of, scan

POLL = pd.Timedelta(minutes=15)


def _features(con, load_id: str) -> None:
    where = f"load_id = '{load_id}'"
    compute_quote_features(con, where=where)
    compute_market_features(con, where=where)
    compute_pair_features(con, where=where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--measure-every-hours", type=float, default=4.0)
    args = parser.parse_args()
    cfg = simulator.SimulatorConfig(n_events=int(args.days * 8), seed=3, arbitrage_rate=2.0)
    generated = simulator.generate(cfg, trusted=True)
    quotes = generated.quotes.sort_values("ingested_at", kind="stable").reset_index(drop=True)
    ingested = pd.to_datetime(quotes["ingested_at"], utc=True)
    start, end = ingested.min().floor("15min"), ingested.max()
    every = int(pd.Timedelta(hours=args.measure_every_hours) / POLL)
    scan_config = ScanConfig(staleness_seconds=900)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = OddsStore(Path(tmp) / "live.duckdb")
        empty = generated.quotes.iloc[0:0]
        # Events and results are known up front (the schedule); quotes arrive by poll.
        store.replace_load(
            "schedule", simulator.SOURCE,
            ParseResult(quotes=empty, rejected=generated.rejected.iloc[0:0],
                        events=generated.events, results=generated.results, prices_read=0),
        )  # fmt: skip
        alerted: set = set()
        with store.connection() as con:
            polls = pd.date_range(start + POLL, end + POLL, freq=POLL)
            last = start
            for i, t in enumerate(polls):
                if i % every and t <= end:
                    continue
                # Catch up the unmeasured polls since the last measured one in one load.
                gap = quotes[(ingested > last) & (ingested <= t - POLL)]
                if len(gap):
                    load = f"catchup:{i}"
                    writer_result = ParseResult(
                        quotes=gap, rejected=empty.iloc[0:0], events=empty.iloc[0:0],
                        results=empty.iloc[0:0], prices_read=len(gap),
                    )  # fmt: skip
                    _write(con, load, writer_result)
                    _features(con, load)
                poll = quotes[(ingested > t - POLL) & (ingested <= t)]
                last = t
                if poll.empty:
                    continue
                load = f"live:{i}"
                started = time.perf_counter()
                _write(
                    con, load,
                    ParseResult(quotes=poll, rejected=empty.iloc[0:0], events=empty.iloc[0:0],
                                results=empty.iloc[0:0], prices_read=len(poll)),
                )  # fmt: skip
                landed = time.perf_counter()
                _features(con, load)
                featured = time.perf_counter()
                found = scan(con, scan_config, since=t - pd.Timedelta(hours=2), until=t)
                new = [
                    w for w in found.actionable.to_dict("records")
                    if (w["event_id"], w["market"], str(w["opened_at"])) not in alerted
                ]  # fmt: skip
                for w in new:
                    arbitrage_alert(w, legs_of(w))
                    alerted.add((w["event_id"], w["market"], str(w["opened_at"])))
                done = time.perf_counter()
                stored = con.execute("SELECT count(*) FROM odds_quotes").fetchone()[0]
                rows.append(
                    {
                        "day": (t - start) / pd.Timedelta(days=1),
                        "latency_s": done - started,
                        "land_s": landed - started,
                        "features_s": featured - landed,
                        "scan_alert_s": done - featured,
                        "poll_quotes": len(poll),
                        "events_touched": int(poll["event_id"].nunique()),
                        "quotes_in_store": int(stored),
                        "new_windows": len(new),
                        "rss_mb": peak_rss_mb(),
                    }
                )
    frame = pd.DataFrame(rows)
    slope = float(np.polyfit(frame["day"], frame["latency_s"], 1)[0]) if len(frame) > 2 else None
    first = frame[frame["day"] < frame["day"].min() + 1]["latency_s"]
    final = frame[frame["day"] > frame["day"].max() - 1]["latency_s"]
    emit(
        {
            "benchmark": "live_path",
            "simulated_days": round(float(frame["day"].max()), 1),
            "quotes_total": len(quotes),
            "measured_polls": len(frame),
            "latency_median_s": round(float(frame["latency_s"].median()), 3),
            "latency_p90_s": round(float(frame["latency_s"].quantile(0.9)), 3),
            "latency_max_s": round(float(frame["latency_s"].max()), 3),
            "first_day_median_s": round(float(statistics.median(first)), 3),
            "last_day_median_s": round(float(statistics.median(final)), 3),
            "slope_s_per_day": None if slope is None else round(slope, 5),
            "median_split_s": {
                k: round(float(frame[k].median()), 3)
                for k in ("land_s", "features_s", "scan_alert_s")
            },
            "median_poll_quotes": int(frame["poll_quotes"].median()),
            "median_events_touched": int(frame["events_touched"].median()),
            "quotes_in_store_end": int(frame["quotes_in_store"].iloc[-1]),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
    )


def _write(con, load_id: str, result: ParseResult) -> None:
    """One poll as one load, on the open connection (the store's LoadWriter in a transaction)."""
    from odds_pipeline.ingestion.store import LoadWriter
    from odds_pipeline.warehouse import transaction

    with transaction(con):
        writer = LoadWriter(con, load_id, simulator.SOURCE)
        writer.write(result)


if __name__ == "__main__":
    main()
