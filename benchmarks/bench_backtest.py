"""Walk-forward backtest throughput: 100,000 simulated value bets through run_backtest.

Run: .venv/bin/python benchmarks/bench_backtest.py [--bets N] [--n-boot B] [--seed S]

Synthetic two-way events, one every five minutes, go into an in-memory DuckDB: a
`market_features` table (three instants per event, two sides, five books), `results` and
`events`. The market believes a probability shifted off the truth by a logit of 0.2-0.5;
prices are that belief plus a 2% margin, so a model equal to the truth has an edge on
exactly one side of each event and the walk places about one bet per event. Reported:
wall time and bets/s of `value_bets` (the simulation alone) and of `run_backtest` (value
strategy only, with its report: bootstrap CI and permutation p-value at --n-boot draws),
the PNG, peak RSS, and what the backtest found.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from _common import emit, peak_rss_mb

from odds_pipeline.backtest.plots import equity_and_drawdown_png
from odds_pipeline.backtest.simulate import BacktestConfig, run_backtest, value_bets

T0 = pd.Timestamp("2024-01-01", tz="UTC")
BOOKS = np.array(["alpha", "bravo", "charlie", "delta", "echo"])
MARGIN = 0.02


def build(con: duckdb.DuckDBPyConnection, n: int, seed: int) -> pd.DataFrame:
    """Write the synthetic market and results; return the truth as scored sides."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.3, 0.7, n)  # true home-win probability (no draws)
    shift = rng.choice([-1.0, 1.0], n) * rng.uniform(0.2, 0.5, n)
    q = 1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + shift)))  # the market's belief
    home_wins = rng.random(n) < p
    ids = np.char.add("ev", np.arange(n).astype(str))
    commence = T0 + pd.to_timedelta(np.arange(n) * 300 + 3600, unit="s")
    decision = commence - pd.Timedelta(hours=1)

    instants = [decision - pd.Timedelta(hours=h) for h in (6, 2)] + [
        decision - pd.Timedelta(minutes=5)
    ]
    parts = []
    for k, at in enumerate(instants):
        drift = 1.0 + 0.01 * (k - 1)  # prices move a little towards the close
        for side, belief in (("home", q), ("away", 1 - q)):
            parts.append(
                pd.DataFrame(
                    {
                        "event_id": ids,
                        "market": "h2h",
                        "outcome": side,
                        "point": np.nan,
                        "observed_at": at,
                        "best_price": drift / (belief * (1 + MARGIN)),
                        "best_book": BOOKS[rng.integers(0, BOOKS.size, n)],
                        "sharp_prob": belief,
                    }
                )
            )
    features = pd.concat(parts, ignore_index=True)
    results = pd.DataFrame(
        {
            "event_id": ids,
            "home_score": home_wins.astype(float),
            "away_score": (~home_wins).astype(float),
            "resolved_at": commence + pd.Timedelta(hours=2),
        }
    )
    events = pd.DataFrame({"event_id": ids, "commence_time": commence})
    for name, frame in (
        ("market_features", features),
        ("results", results),
        ("events", events),
    ):
        con.register("_in", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _in")
        con.unregister("_in")
    return pd.DataFrame(
        {
            "event_id": np.concatenate([ids, ids]),
            "side": ["home"] * n + ["away"] * n,
            "decision_time": np.concatenate([decision, decision]),
            "probability": np.concatenate([p, 1 - p]),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bets", type=int, default=100_000, help="events (about one bet each)")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap / permutation draws")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone='UTC'")
    start = time.perf_counter()
    truth = build(con, args.bets, args.seed)
    build_seconds = time.perf_counter() - start
    config = BacktestConfig(
        n_boot=args.n_boot, seed=args.seed, book_limits={str(b): 500.0 for b in BOOKS}
    )

    start = time.perf_counter()
    bets = value_bets(con, truth, config)
    value_seconds = time.perf_counter() - start

    start = time.perf_counter()
    result = run_backtest(con, {"value": truth}, None, config, baselines=False)
    backtest_seconds = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        png = equity_and_drawdown_png(result.bets, Path(tmp) / "equity.png", config.bankroll)
        plot_seconds = time.perf_counter() - start
        png_bytes = png.stat().st_size
    con.close()

    placed = len(result.bets)
    assert placed == len(bets), "run_backtest and value_bets disagree"
    report = result.reports["value"]
    emit(
        {
            "events": args.bets,
            "scored_sides": len(truth),
            "market_feature_rows": args.bets * 6,
            "bets_placed": placed,
            "n_boot": args.n_boot,
            "build_seconds": round(build_seconds, 2),
            "value_bets_seconds": round(value_seconds, 2),
            "value_bets_per_s": round(placed / value_seconds),
            "run_backtest_seconds": round(backtest_seconds, 2),
            "run_backtest_bets_per_s": round(placed / backtest_seconds),
            "report_seconds": round(backtest_seconds - value_seconds, 2),
            "plot_seconds": round(plot_seconds, 2),
            "png_bytes": png_bytes,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "counts": result.counts["value"],
            "report": report.to_dict(),
            "verdict": result.verdicts["value"],
        }
    )


if __name__ == "__main__":
    main()
