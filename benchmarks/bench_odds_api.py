"""The Odds API replay: parse the real snapshot files, then parse + load into a temporary store.

Run: `.venv/bin/python benchmarks/bench_odds_api.py` (reads ../shared/data/odds-api/snapshots,
or $ODDS_SHARED_DATA/odds-api/snapshots). Each scenario runs in its own process so its peak
RSS is its own: the NFL file (405k prices) and all three snapshot files together, each with
the default reader (Arrow for `.jsonl`) and, for the NFL file, the pure-Python reader. Parse
times are the best of `--repeat` runs (the machine is shared; the best run is the least
disturbed), with CPU seconds beside them (`load_avg_1min` says how busy the machine was);
parse + load is one run into a fresh DuckDB file with `replace_loads`.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED_DATA, emit, peak_rss_mb

from odds_pipeline.ingestion.sources import load_id_for, odds_api
from odds_pipeline.ingestion.store import OddsStore

SNAPSHOTS = SHARED_DATA / "odds-api" / "snapshots"
NFL = "nfl_2025-11-13_to_2025-11-18_all.jsonl.gz"


def files_for(which: str) -> list[Path]:
    if which == "nfl":
        return [SNAPSHOTS / NFL]
    return sorted(SNAPSHOTS.glob("*.jsonl.gz"))


def scenario(which: str, fast: bool, repeat: int) -> dict[str, object]:
    """Measured in this process: parse-only (best of `repeat`), then parse + load once."""
    files = files_for(which)
    missing = [str(p) for p in files if not p.is_file()]
    if not files or missing:
        raise SystemExit(f"odds-api snapshot files not found: {missing or SNAPSHOTS}")

    parse_runs, cpu_runs = [], []
    per_load: dict[str, object] = {}
    for _ in range(repeat):
        per_load.clear()  # one result alive at a time, so peak RSS is one parse's
        start, cpu_start = time.perf_counter(), time.process_time()
        per_load = {
            load_id_for(odds_api.SOURCE, p): odds_api.parse_file(p, fast=fast) for p in files
        }
        parse_runs.append(time.perf_counter() - start)
        cpu_runs.append(time.process_time() - cpu_start)
    parse_rss = peak_rss_mb()

    per_load.clear()
    with tempfile.TemporaryDirectory() as tmp:
        store = OddsStore(Path(tmp) / "bench.duckdb")
        start = time.perf_counter()
        per_load = {
            load_id_for(odds_api.SOURCE, p): odds_api.parse_file(p, fast=fast) for p in files
        }
        store.replace_loads(odds_api.SOURCE, per_load)
        parse_load_s = time.perf_counter() - start
        stored = int(store.query("SELECT count(*) AS n FROM odds_quotes")["n"].iloc[0])
        stored_rejected = int(store.query("SELECT count(*) AS n FROM rejected_quotes")["n"].iloc[0])

    prices = sum(r.prices_read for r in per_load.values())
    accepted = sum(r.quotes_accepted for r in per_load.values())
    rejected = sum(r.quotes_rejected for r in per_load.values())
    assert prices == accepted + rejected == stored + stored_rejected
    best = min(parse_runs)
    return {
        "files": [p.name for p in files],
        "reader": "arrow+python fallback" if fast else "python",
        "prices_read": prices,
        "quotes_accepted": accepted,
        "quotes_rejected": rejected,
        "quotes_in_store": stored,
        "parse_s_best": round(best, 3),
        "parse_s_runs": [round(s, 3) for s in parse_runs],
        "parse_quotes_per_s": round(prices / best),
        # CPU seconds of this process (all threads): steadier than wall time on a shared box.
        "parse_cpu_s_best": round(min(cpu_runs), 3),
        "parse_quotes_per_cpu_s": round(prices / min(cpu_runs)),
        "parse_load_s": round(parse_load_s, 3),
        "parse_load_quotes_per_s": round(prices / parse_load_s),
        "peak_rss_mb_after_parse": round(parse_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scenario", choices=["nfl", "all"], help="run one scenario in this process"
    )
    parser.add_argument("--python-reader", action="store_true", help="force the pure-Python reader")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(scenario(args.scenario, not args.python_reader, args.repeat)))
        return

    figures: dict[str, object] = {
        "benchmark": "odds_api_snapshot_replay",
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    for name, extra in (
        ("nfl", ["--scenario", "nfl"]),
        ("nfl_python_reader", ["--scenario", "nfl", "--python-reader"]),
        ("all_snapshots", ["--scenario", "all"]),
    ):
        cmd = [sys.executable, __file__, *extra, "--repeat", str(args.repeat)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        figures[name] = json.loads(out.strip().splitlines()[-1])
    emit(figures)


if __name__ == "__main__":
    main()
