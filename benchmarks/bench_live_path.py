"""The live path poll by poll over a long history: is a poll's cost independent of history?

    .venv/bin/python benchmarks/bench_live_path.py [--days 36 --measure-every-hours 4]

A simulated market (8 kickoffs a day, markets open 3 days before) is replayed as a live feed:
quotes land by `ingested_at` in 15-minute polls, each poll one load. Every
`--measure-every-hours` of simulated time, one poll is measured from landing to alert, the way
the live chain runs it: write the poll's load, recompute features only for the events it
touched (`where load_id = ...`: quote, market and pair features), scan the poll's day
partition for arbitrage and replace it (`scan_day`, `write_windows(day=...)`, as the
`arbitrage_opportunities` asset does), format an alert per new actionable window. The polls in
between are landed in one load per gap and their features recomputed incrementally (same
state as poll by poll, cheaper to simulate). Reports per measured poll: latency (wall) and
CPU time (this process, all threads: robust to other jobs on the machine), events touched,
quotes in the store, peak RSS; and slopes against simulated day, over all days and over the
steady state (the first and last `days_before` days fill and empty the market).
Domain functions only: the Dagster run around them (process start, event log) is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

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
from odds_pipeline.scoring.arbitrage import (
    ScanConfig,
    days_to_scan,
    legs_of,
    new_actionable_windows,
    scan_day,
    window_keys,
    write_windows,
)

POLL = pd.Timedelta(minutes=15)


def _features(con, load_id: str) -> None:
    where = f"load_id = '{load_id}'"
    compute_quote_features(con, where=where)
    compute_market_features(con, where=where)
    compute_pair_features(con, where=where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=36.0)
    parser.add_argument("--measure-every-hours", type=float, default=4.0)
    parser.add_argument("--per-poll-csv", help="also write every measured poll to this CSV")
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
                clock = _Clock()
                _write(
                    con, load,
                    ParseResult(quotes=poll, rejected=empty.iloc[0:0], events=empty.iloc[0:0],
                                results=empty.iloc[0:0], prices_read=len(poll)),
                )  # fmt: skip
                clock.lap("land")
                _features(con, load)
                clock.lap("features")
                # What arbitrage_opportunities does for the poll's day partition.
                new = []
                for day in days_to_scan(t.strftime("%Y-%m-%d"), t):
                    before = window_keys(con, day)
                    found = scan_day(con, scan_config, day, now=t)
                    written = write_windows(con, found.windows, day=day)
                    new += new_actionable_windows(written, before, pd.Timedelta(hours=1), t)
                for w in new:
                    arbitrage_alert(w, legs_of(w))
                clock.lap("scan_alert")
                stored = con.execute("SELECT count(*) FROM odds_quotes").fetchone()[0]
                rows.append(
                    {
                        "day": (t - start) / pd.Timedelta(days=1),
                        **clock.laps,
                        "poll_quotes": len(poll),
                        "events_touched": int(poll["event_id"].nunique()),
                        "quotes_in_store": int(stored),
                        "new_windows": len(new),
                        "rss_mb": peak_rss_mb(),
                    }
                )
    frame = pd.DataFrame(rows)
    if args.per_poll_csv:
        frame.to_csv(args.per_poll_csv, index=False)
    last_day = float(frame["day"].max())
    # Markets open `days_before` ahead of kickoff: the first days fill up (few events, short
    # histories) and the last ones empty out (only events near kickoff, long histories).
    ramp = cfg.days_before
    steady = frame[(frame["day"] >= ramp) & (frame["day"] <= last_day - ramp)]
    emit(
        {
            "benchmark": "live_path",
            "simulated_days": round(last_day, 1),
            "quotes_total": len(quotes),
            "measured_polls": len(frame),
            "latency_median_s": round(float(frame["latency_s"].median()), 3),
            "latency_p90_s": round(float(frame["latency_s"].quantile(0.9)), 3),
            "latency_max_s": round(float(frame["latency_s"].max()), 3),
            "cpu_median_s": round(float(frame["cpu_s"].median()), 3),
            "median_split_s": {
                k: round(float(frame[f"{k}_s"].median()), 3)
                for k in ("land", "features", "scan_alert")
            },
            "all_days": _trend(frame),
            f"steady_state_days_{ramp:g}_to_{last_day - ramp:.1f}": _trend(steady),
            "median_poll_quotes": int(frame["poll_quotes"].median()),
            "median_events_touched": int(frame["events_touched"].median()),
            "quotes_in_store_end": int(frame["quotes_in_store"].iloc[-1]),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
    )


class _Clock:
    """Wall and CPU time (this process, every thread: DuckDB's included) per stage."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._start = self._wall = time.perf_counter()
        self._cpu0 = self._cpu = time.process_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.laps[f"{name}_s"] = wall - self._wall
        self.laps["latency_s"] = wall - self._start
        self.laps["cpu_s"] = cpu - self._cpu0
        self._wall, self._cpu = wall, cpu


def _trend(frame: pd.DataFrame) -> dict[str, float]:
    """Slopes against simulated day (wall and CPU seconds per day) and first vs last day."""
    first = frame[frame["day"] < frame["day"].min() + 1]
    final = frame[frame["day"] > frame["day"].max() - 1]

    def slope(col: str) -> list[float]:
        """Least-squares slope per simulated day and its 95% interval (normal, OLS error)."""
        from scipy import stats

        fit = stats.linregress(frame["day"], frame[col])
        return [round(float(v), 5) for v in (fit.slope, fit.slope - 1.96 * fit.stderr,
                                              fit.slope + 1.96 * fit.stderr)]  # fmt: skip

    return {
        "polls": len(frame),
        "latency_median_s": round(float(frame["latency_s"].median()), 3),
        "cpu_median_s": round(float(frame["cpu_s"].median()), 3),
        "slope_latency_s_per_day_ci95": slope("latency_s"),
        "slope_cpu_s_per_day_ci95": slope("cpu_s"),
        "slope_events_touched_per_day_ci95": slope("events_touched"),
        "first_day_median_latency_s": round(float(statistics.median(first["latency_s"])), 3),
        "last_day_median_latency_s": round(float(statistics.median(final["latency_s"])), 3),
        "first_day_median_cpu_s": round(float(statistics.median(first["cpu_s"])), 3),
        "last_day_median_cpu_s": round(float(statistics.median(final["cpu_s"])), 3),
    }


def _write(con, load_id: str, result: ParseResult) -> None:
    """One poll as one load, on the open connection (the store's LoadWriter in a transaction)."""
    from odds_pipeline.ingestion.store import LoadWriter
    from odds_pipeline.warehouse import transaction

    with transaction(con):
        writer = LoadWriter(con, load_id, simulator.SOURCE)
        writer.write(result)


if __name__ == "__main__":
    main()
