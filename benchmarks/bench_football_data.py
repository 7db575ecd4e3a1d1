"""Parse every EPL season of football-data.co.uk and load it into a temporary DuckDB store.

Run: `.venv/bin/python benchmarks/bench_football_data.py` (reads ../shared/data/football-data/E0,
or $ODDS_SHARED_DATA/football-data/E0). Prints one JSON object: files, prices read, quotes,
seconds to parse (wall and CPU), seconds to parse + load (one load per file, `replace_loads`), quotes/s,
and peak RSS.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED_DATA, emit, peak_rss_mb

from odds_pipeline.ingestion.sources import football_data, load_id_for
from odds_pipeline.ingestion.store import OddsStore


def main() -> None:
    folder = SHARED_DATA / "football-data" / "E0"
    files = sorted(folder.glob("*.csv"))
    if not files:
        sys.exit(f"no football-data files in {folder}")

    start, cpu_start = time.perf_counter(), time.process_time()
    per_load = {load_id_for(football_data.SOURCE, p): football_data.parse_file(p) for p in files}
    parse_s = time.perf_counter() - start
    parse_cpu_s = time.process_time() - cpu_start  # robust to a busy shared machine

    with tempfile.TemporaryDirectory() as tmp:
        store = OddsStore(Path(tmp) / "bench.duckdb")
        load_start = time.perf_counter()
        store.replace_loads(football_data.SOURCE, per_load)
        load_s = time.perf_counter() - load_start
        stored = store.query("SELECT count(*) AS n FROM odds_quotes")["n"].iloc[0]

    prices_read = sum(r.prices_read for r in per_load.values())
    quotes = sum(len(r.quotes) for r in per_load.values())
    rejected = sum(len(r.rejected) for r in per_load.values())
    total_s = parse_s + load_s
    emit(
        {
            "benchmark": "football_data_epl_parse_and_load",
            "files": len(files),
            "prices_read": int(prices_read),
            "quotes": int(quotes),
            "rejected": int(rejected),
            "quotes_in_store": int(stored),
            "events": int(sum(len(r.events) for r in per_load.values())),
            "seconds_parse": round(parse_s, 3),
            "cpu_seconds_parse": round(parse_cpu_s, 3),
            "seconds_parse_and_load": round(total_s, 3),
            "quotes_per_s_parse": round(quotes / parse_s),
            "quotes_per_s_parse_and_load": round(quotes / total_s),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    )


if __name__ == "__main__":
    main()
