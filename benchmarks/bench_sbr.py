"""SBR NBA adapter: parse every real season and load it into a temporary DuckDB store.

Run: .venv/bin/python benchmarks/bench_sbr.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import SHARED_DATA, emit, peak_rss_mb, timer

from odds_pipeline.ingestion.sources import load_id_for, sbr
from odds_pipeline.ingestion.store import OddsStore


def main() -> None:
    files = sorted((SHARED_DATA / "sbr" / "nba").glob("*.csv"))
    if not files:
        raise SystemExit(f"no SBR files under {SHARED_DATA / 'sbr' / 'nba'}")
    with timer() as parse_time:
        results = {load_id_for(sbr.SOURCE, f): sbr.parse_file(f) for f in files}
    with tempfile.TemporaryDirectory() as tmp, timer() as load_time:
        store = OddsStore(Path(tmp) / "warehouse.duckdb")
        store.replace_loads(sbr.SOURCE, results)
        stored = int(store.query("SELECT count(*) AS n FROM odds_quotes")["n"].iloc[0])
    prices_read = sum(r.prices_read for r in results.values())
    quotes = sum(len(r.quotes) for r in results.values())
    seconds = parse_time["seconds"] + load_time["seconds"]
    emit(
        {
            "benchmark": "sbr_parse_and_load",
            "files": len(files),
            "prices_read": prices_read,
            "quotes": quotes,
            "rejected": sum(len(r.rejected) for r in results.values()),
            "events": sum(len(r.events) for r in results.values()),
            "quotes_in_store": stored,
            "parse_seconds": round(parse_time["seconds"], 3),
            "load_seconds": round(load_time["seconds"], 3),
            "seconds": round(seconds, 3),
            "quotes_per_s": round(quotes / seconds),
            "parse_quotes_per_s": round(quotes / parse_time["seconds"]),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    )


if __name__ == "__main__":
    main()
