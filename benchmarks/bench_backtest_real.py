"""Walk-forward backtests on real data: EPL (every season) and NBA (every SBR season).

    .venv/bin/python benchmarks/bench_backtest_real.py [--league epl|nba|both]

Each league is loaded into a fresh DuckDB, its features computed, every h2h side scored at its
decision time through the point-in-time store (no champion: the de-vigged market probability,
as `win_probability_predictions` writes it without one), then `run_backtest`: value betting
with fractional Kelly on the market's own probability (it should find little edge), flat
stakes on the favourite, and the market-proportional stake (loses about the margin). Decision
time: 1 h before kickoff for EPL (the pre-match price, 72 h before, is the latest quote then;
closing prices are stamped at kickoff), kickoff itself for the SBR closing lines.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from _common import SHARED_DATA, emit, peak_rss_mb, timer

from odds_pipeline.backtest.simulate import BacktestConfig, predictions_frame, run_backtest
from odds_pipeline.datasets.sequences import LstmSequenceConfig
from odds_pipeline.features.compute import compute_market_features, compute_quote_features
from odds_pipeline.ingestion.ingest import adapter, ingest_paths
from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.scoring.predictions import Scorer, score_window, write_partition
from odds_pipeline.training.kinds import KINDS

LEAGUES = {
    "epl": ("football-data", [str(SHARED_DATA / "football-data" / "E0" / "*.csv")], 1.0),
    "nba": ("sbr", [str(SHARED_DATA / "sbr" / "nba" / "*")], 0.0),
}


def league(name: str, n_boot: int) -> dict[str, object]:
    source, patterns, offset = LEAGUES[name]
    with tempfile.TemporaryDirectory() as tmp:
        store = OddsStore(Path(tmp) / f"{name}.duckdb")
        with timer() as setup:
            module = adapter(source)
            ingest_paths(store, module.parse_file, module.SOURCE, patterns)
            with store.connection() as con:
                compute_quote_features(con)
                compute_market_features(con)
        with store.connection() as con:
            config = replace(LstmSequenceConfig(), decision_offset_hours=offset, leagues=None)
            scorer = Scorer(KINDS["lstm"].registered_model, None, fallback_reason="benchmark")
            with timer() as scoring:
                rows, _ = score_window(
                    con, scorer, commence_from=datetime(1990, 1, 1),
                    commence_to=datetime(2100, 1, 1), default_config=config,
                    pack=KINDS["lstm"].pack, partition_key="all",
                )  # fmt: skip
                write_partition(con, rows, "all")
            with timer() as backtest:
                result = run_backtest(
                    con,
                    {"market": predictions_frame(con, "market_probability")},
                    None,
                    BacktestConfig(n_boot=n_boot),
                )
    return {
        "scored_sides": len(rows),
        "events": int(rows["event_id"].nunique()),
        "setup_seconds": round(setup["seconds"], 1),
        "scoring_seconds": round(scoring["seconds"], 1),
        "backtest_seconds": round(backtest["seconds"], 1),
        "strategies": result.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--league", choices=["epl", "nba", "both"], default="both")
    parser.add_argument("--n-boot", type=int, default=2000)
    args = parser.parse_args()
    names = ["epl", "nba"] if args.league == "both" else [args.league]
    emit(
        {
            "benchmark": "backtest_real",
            **{n: league(n, args.n_boot) for n in names},
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    )


if __name__ == "__main__":
    main()
