"""Simulated market at scale: generate N quotes, then stream them into DuckDB in one load.

Run: .venv/bin/python benchmarks/bench_simulator.py [--quotes 10000000]
     [--validated] [--no-prefetch]

Figures: quotes; generate-only seconds and quotes/s; generate+load (one
`OddsStore.load`, batches streamed) seconds and quotes/s; CPU seconds of each (wall
time on a shared 2-core machine depends on what else runs: the load average is printed);
the cost of `validate_candidates` on a slice (trusted vs validated path); peak RSS.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _common import emit, peak_rss_mb

from odds_pipeline.ingestion.sources import simulator
from odds_pipeline.ingestion.store import OddsStore


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Clock:
    """Wall and CPU seconds of a block (CPU includes DuckDB's and the prefetch thread)."""

    def __enter__(self) -> _Clock:
        self.wall0, self.cpu0 = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = _cpu_seconds() - self.cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quotes", type=int, default=10_000_000, help="quotes to generate (at least)"
    )
    parser.add_argument("--batch-events", type=int, default=simulator.SimulatorConfig.batch_events)
    parser.add_argument(
        "--validated", action="store_true", help="full runs through validate_candidates"
    )
    parser.add_argument("--no-prefetch", action="store_true", help="generate and insert in turn")
    args = parser.parse_args()

    base = simulator.SimulatorConfig(batch_events=args.batch_events)
    n_events = math.ceil(args.quotes / simulator.expected_quotes_per_event(base) * 1.02)
    cfg = replace(base, n_events=n_events)
    trusted, prefetch = not args.validated, not args.no_prefetch
    load_avg_start = os.getloadavg()[0]

    with _Clock() as gen:
        generated = sum(len(b.quotes) for b in simulator.iter_batches(cfg, trusted=trusted))
    rss_generate = peak_rss_mb()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        store = OddsStore(path)
        with _Clock() as load:
            loaded = 0
            with store.load(cfg.load_id, simulator.SOURCE) as writer:
                for batch in simulator.iter_batches(cfg, trusted=trusted, prefetch=prefetch):
                    writer.write(batch)
                    loaded += len(batch.quotes)
        rss_load = peak_rss_mb()
        stored = store.query(
            "SELECT count(*) AS n, count(DISTINCT event_id) AS events FROM odds_quotes"
        ).iloc[0]
        db_mb = path.stat().st_size / 2**20
    assert generated == loaded == int(stored["n"]), (generated, loaded, stored)

    # Cost of the generic validator: the same slice through both paths.
    slice_cfg = replace(base, n_events=min(n_events, 2 * base.batch_events))
    with _Clock() as sl_trusted:
        slice_quotes = sum(len(b.quotes) for b in simulator.iter_batches(slice_cfg, trusted=True))
    with _Clock() as sl_validated:
        sum(len(b.quotes) for b in simulator.iter_batches(slice_cfg, trusted=False))

    emit(
        {
            "benchmark": "simulator",
            "quotes": generated,
            "events": int(stored["events"]),
            "batch_events": cfg.batch_events,
            "path": "trusted" if trusted else "validated",
            "prefetch": prefetch,
            "generate_seconds": round(gen.wall, 2),
            "generate_cpu_seconds": round(gen.cpu, 2),
            "generate_quotes_per_s": round(generated / gen.wall),
            "generate_load_seconds": round(load.wall, 2),
            "generate_load_cpu_seconds": round(load.cpu, 2),
            "generate_load_quotes_per_s": round(loaded / load.wall),
            "generate_load_quotes_per_cpu_s": round(loaded / load.cpu),
            "duckdb_file_mb": round(db_mb, 1),
            "peak_rss_mb_generate": round(rss_generate, 1),
            "peak_rss_mb": round(rss_load, 1),
            "slice_quotes": slice_quotes,
            "slice_trusted_quotes_per_s": round(slice_quotes / sl_trusted.wall),
            "slice_validated_quotes_per_s": round(slice_quotes / sl_validated.wall),
            "peak_rss_mb_with_validated_slice": round(peak_rss_mb(), 1),
            "load_average_1min": [round(load_avg_start, 2), round(os.getloadavg()[0], 2)],
        }
    )


if __name__ == "__main__":
    main()
