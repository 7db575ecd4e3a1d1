"""Batch scoring throughput: N upcoming events, their sequences through the point-in-time store.

    .venv/bin/python benchmarks/bench_scoring.py [--events 10000]

Simulated market (N events kicking off within one scoring window, 1 day of prices before each
kickoff), features computed, then `score_window` with an LSTM of the default size (untrained:
throughput does not depend on the weights) and with the market fallback. Reports events/s of
the whole scoring call, split into building the sequences (point-in-time joins) and the model,
and the peak RSS. Setup (simulate, load, features) is timed apart and not part of the figure.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pandas as pd
from _common import emit, peak_rss_mb, timer

from odds_pipeline.datasets.sequences import LstmSequenceConfig
from odds_pipeline.features.compute import compute_market_features, compute_quote_features
from odds_pipeline.ingestion.sources import simulator
from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.scoring.predictions import Scorer, score_window
from odds_pipeline.training.kinds import KINDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    kind = KINDS["lstm"]
    cfg = simulator.SimulatorConfig(
        n_events=args.events,
        days_before=1.0,
        kickoffs_per_day=args.events / 2,  # every event commences within two days
        mean_quotes_per_book_per_day=4.0,
        drift_steps_per_day=12.0,
    )
    config = replace(LstmSequenceConfig(), lookback_hours=24.0, steps=24)
    with tempfile.TemporaryDirectory() as tmp:
        store = OddsStore(Path(tmp) / "bench.duckdb")
        with timer() as setup:
            with store.load(cfg.load_id, simulator.SOURCE) as writer:
                for batch in simulator.iter_batches(cfg, trusted=True):
                    writer.write(batch)
            with store.connection() as con:
                compute_quote_features(con)
                compute_market_features(con)
        with store.connection() as con:
            quotes = con.execute("SELECT count(*) FROM odds_quotes").fetchone()[0]
            lo, hi = con.execute(
                "SELECT min(commence_time), max(commence_time) FROM events"
            ).fetchone()
            window = {
                "commence_from": pd.Timestamp(lo).to_pydatetime(),
                "commence_to": pd.Timestamp(hi).to_pydatetime() + timedelta(seconds=1),
            }
            n_features = len(config.channels())
            network = kind.network(n_features, {"hidden": 64, "num_layers": 2, "dropout": 0.0})
            from odds_pipeline.training.tracking import SequenceScorer, ServingSpec

            spec = ServingSpec(
                kind=kind.name,
                hparams=dict(network.hparams),
                seq_len=config.steps,
                feature_names=list(config.channels()),
                label="won",
            )
            model_seconds = {"s": 0.0}
            scorer_impl = SequenceScorer(network, spec)

            def predict(packed):
                with timer() as t:
                    out = scorer_impl.predict(packed)
                model_seconds["s"] += t["seconds"]
                return out

            champion = Scorer(
                kind.registered_model,
                "bench",
                predict=predict,
                feature_names=spec.feature_names,
                seq_len=spec.seq_len,
                dataset_config={"lookback_hours": 24.0, "steps": 24},
            )
            with timer() as scored:
                rows, stats = score_window(
                    con,
                    champion,
                    default_config=config,
                    pack=kind.pack,
                    partition_key="bench",
                    **window,
                )
            fallback = Scorer(kind.registered_model, None, fallback_reason="bench")
            with timer() as fell_back:
                rows_fb, _ = score_window(
                    con,
                    fallback,
                    default_config=config,
                    pack=kind.pack,
                    partition_key="bench",
                    **window,
                )
    events = int(rows["event_id"].nunique())
    emit(
        {
            "benchmark": "batch_scoring",
            "events": events,
            "sides_scored": len(rows),
            "quotes": int(quotes),
            "setup_seconds": round(setup["seconds"], 1),
            "champion_seconds": round(scored["seconds"], 2),
            "champion_events_per_s": round(events / scored["seconds"], 1),
            "of_which_model_seconds": round(model_seconds["s"], 2),
            "market_fallback_seconds": round(fell_back["seconds"], 2),
            "market_fallback_events_per_s": round(
                rows_fb["event_id"].nunique() / fell_back["seconds"], 1
            ),
            "samples_without_data": stats.get("samples_without_data"),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
    )


if __name__ == "__main__":
    main()
