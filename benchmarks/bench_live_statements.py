"""Which statements of a live poll cost more as history grows? CPU time per SQL statement.

    .venv/bin/python benchmarks/bench_live_statements.py [--days 34 --at 6,20,33]

The simulated market of `bench_live_path.py` (8 kickoffs a day, seed 3) is landed in 4-hour
loads with incremental features, as a live store grows. At each day in `--at`, one 15-minute
poll is run the way the live chain runs it (its load, features for the events it touched,
`scan_day` of its day) inside a transaction that is rolled back, with the CPU time of every
SQL statement recorded: polls of the same feed at different history sizes, statement by
statement (each is a different 15 minutes, so the events it touches differ too). Prints one JSON object: per measured day, the store's size, the poll's events and
the statements that took the most CPU.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from _common import emit
from bench_live_path import _features  # the live chain's incremental features, one home

from odds_pipeline.ingestion.sources import simulator
from odds_pipeline.ingestion.store import LoadWriter, OddsStore
from odds_pipeline.market.quotes import ParseResult
from odds_pipeline.scoring.arbitrage import ScanConfig, scan_day
from odds_pipeline.warehouse import transaction


class _Timed:
    """A connection whose `execute` adds each statement's CPU time to `times`."""

    def __init__(self, con: Any, times: collections.Counter) -> None:
        self._con, self.times = con, times

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return self._con.execute(sql, *args, **kwargs)
        finally:
            self.times[" ".join(sql.split())[:60]] += time.process_time() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


class _Undo(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=34)
    parser.add_argument("--at", default="6,20,33", help="simulated days to measure a poll at")
    args = parser.parse_args()
    at = sorted(float(d) for d in args.at.split(","))
    generated = simulator.generate(
        simulator.SimulatorConfig(n_events=(args.days + 2) * 8, seed=3, arbitrage_rate=2.0),
        trusted=True,
    )
    quotes = generated.quotes.sort_values("ingested_at", kind="stable").reset_index(drop=True)
    ingested = pd.to_datetime(quotes["ingested_at"], utc=True)
    empty = generated.quotes.iloc[0:0]

    def result(frame: pd.DataFrame, events: pd.DataFrame = empty, results=empty) -> ParseResult:
        return ParseResult(quotes=frame, rejected=generated.rejected.iloc[0:0], events=events,
                           results=results, prices_read=len(frame))  # fmt: skip

    start = ingested.min().floor("15min")
    measured = []
    with tempfile.TemporaryDirectory() as tmp:
        store = OddsStore(Path(tmp) / "live.duckdb")
        store.replace_load(
            "schedule", simulator.SOURCE, result(empty, generated.events, generated.results)
        )
        with store.connection() as con:
            t, i = start, 0
            while at and t < start + pd.Timedelta(days=args.days):
                nxt = t + pd.Timedelta(hours=4)
                with transaction(con):
                    LoadWriter(con, f"load:{i}", simulator.SOURCE).write(
                        result(quotes[(ingested > t) & (ingested <= nxt)])
                    )
                _features(con, f"load:{i}")
                t, i = nxt, i + 1
                day = (t - start) / pd.Timedelta(days=1)
                if day + 1e-9 < at[0]:
                    continue
                at.pop(0)
                poll = quotes[(ingested > t) & (ingested <= t + pd.Timedelta(minutes=15))]
                times: collections.Counter = collections.Counter()
                timed = _Timed(con, times)
                try:
                    with transaction(timed):
                        LoadWriter(con, "poll", simulator.SOURCE).write(result(poll))
                        c0 = time.process_time()
                        _features(timed, "poll")
                        c1 = time.process_time()
                        scan_day(timed, ScanConfig(staleness_seconds=900), t.strftime("%Y-%m-%d"),
                                 now=t + pd.Timedelta(minutes=15))  # fmt: skip
                        c2 = time.process_time()
                        raise _Undo  # the poll is measured, not kept
                except _Undo:
                    pass
                rows = {
                    table: int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                    for table in ("odds_quotes", "arbitrage_pair_features")
                }
                measured.append(
                    {
                        "day": round(day, 1),
                        "rows": rows,
                        "poll_quotes": len(poll),
                        "events_touched": int(poll["event_id"].nunique()),
                        "features_cpu_s": round(c1 - c0, 3),
                        "scan_cpu_s": round(c2 - c1, 3),
                        "top_statements_cpu_s": {k: round(v, 3) for k, v in times.most_common(8)},
                    }
                )
    emit({"benchmark": "live_statements", "polls": measured})


if __name__ == "__main__":
    main()
