"""Feature store, domain side: de-vig method comparison and feature computation throughput.

Run: .venv/bin/python benchmarks/bench_features.py [--skip-throughput] [--skip-devig]

Section "devig_comparison": closing Pinnacle 1X2 on the EPL (football-data E0, 2012/13
onwards, PSCH/PSCD/PSCA against FTR) and closing NBA moneylines (SBR, visitor/home rows
paired by rotation number, Final scores) de-vigged by each method; Brier score (summed
over outcomes and for "home win") and log loss, with a paired bootstrap 95% interval for
each method's log-loss difference to multiplicative.

Section "feature_throughput": all five Odds API change logs loaded into `odds_quotes` of a
temporary DuckDB file; wall time, rows/s and peak RSS of compute_quote_features,
compute_market_features, compute_pair_features (one pair) and an incremental one-event
recompute.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import SHARED_DATA, emit, peak_rss_mb

from odds_pipeline import warehouse
from odds_pipeline.features import compute as F
from odds_pipeline.ingestion import store
from odds_pipeline.market import devig
from odds_pipeline.market.odds_math import american_to_decimal_array

BOOTSTRAP = 2000


def epl_closing() -> tuple[np.ndarray, np.ndarray]:
    """Pinnacle closing 1X2 implied probabilities (home, draw, away) and the winner index."""
    frames = []
    for path in sorted((SHARED_DATA / "football-data" / "E0").glob("E0_*.csv")):
        start = int(re.search(r"(\d{4})-\d{4}", path.name).group(1))
        if start < 2012:
            continue
        df = pd.read_csv(path, encoding="latin-1")
        if not {"PSCH", "PSCD", "PSCA", "FTR"} <= set(df.columns):
            continue
        frames.append(df[["PSCH", "PSCD", "PSCA", "FTR"]])
    data = pd.concat(frames, ignore_index=True)
    prices = data[["PSCH", "PSCD", "PSCA"]].apply(pd.to_numeric, errors="coerce")
    winner = data["FTR"].map({"H": 0, "D": 1, "A": 2})
    keep = (prices > 1.0).all(axis=1) & winner.notna()
    return 1.0 / prices[keep].to_numpy(), winner[keep].to_numpy(dtype=int)


def nba_closing() -> tuple[np.ndarray, np.ndarray]:
    """SBR closing moneylines as (home, away) implied probabilities and the winner index."""
    frames = []
    for path in sorted((SHARED_DATA / "sbr" / "nba").glob("*.csv")):
        df = pd.read_csv(path, encoding="utf-8-sig", dtype=str)
        for col in ("Rot", "ML", "Final"):
            df[col] = pd.to_numeric(df[col], errors="coerce")
        visitor = df.iloc[0::2].reset_index(drop=True)
        home = df.iloc[1::2].reset_index(drop=True)
        n = min(len(visitor), len(home))
        visitor, home = visitor.iloc[:n], home.iloc[:n]
        paired = home["Rot"].to_numpy() == visitor["Rot"].to_numpy() + 1
        frames.append(
            pd.DataFrame(
                {
                    "home_ml": home["ML"],
                    "away_ml": visitor["ML"],
                    "home_score": home["Final"],
                    "away_score": visitor["Final"],
                }
            )[paired]
        )
    data = pd.concat(frames, ignore_index=True)
    home_price = american_to_decimal_array(data["home_ml"].to_numpy(dtype=float))
    away_price = american_to_decimal_array(data["away_ml"].to_numpy(dtype=float))
    keep = (
        np.isfinite(home_price)
        & np.isfinite(away_price)
        & data["home_score"].notna().to_numpy()
        & (data["home_score"] != data["away_score"]).to_numpy()
    )
    probs = np.c_[1.0 / home_price, 1.0 / away_price][keep]
    winner = np.where(
        data["home_score"].to_numpy()[keep] > data["away_score"].to_numpy()[keep], 0, 1
    )
    return probs, winner


def compare(probs: np.ndarray, winner: np.ndarray) -> dict[str, object]:
    scores = devig.score_methods(probs, winner)
    rows = np.arange(len(probs))
    losses = {m: -np.log(devig.devig(probs, m)[rows, winner]) for m in devig.METHODS}
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(probs), size=(BOOTSTRAP, len(probs)))
    for method in devig.METHODS:
        diff = losses[method] - losses["multiplicative"]
        boot = diff[idx].mean(axis=1)
        scores[method] = {k: round(v, 6) for k, v in scores[method].items()}
        scores[method]["log_loss_minus_multiplicative"] = round(float(diff.mean()), 6)
        scores[method]["diff_ci95"] = [
            round(float(np.quantile(boot, 0.025)), 6),
            round(float(np.quantile(boot, 0.975)), 6),
        ]
    scores["mean_overround"] = round(float(np.mean(probs.sum(axis=1) - 1.0)), 4)
    return scores


def devig_comparison() -> dict[str, object]:
    epl = compare(*epl_closing())
    nba = compare(*nba_closing())
    best = {
        name: min(devig.METHODS, key=lambda m, r=result: r[m]["log_loss"])
        for name, result in (("epl", epl), ("nba", nba))
    }
    return {
        "epl_pinnacle_closing_1x2": epl,
        "nba_sbr_closing_moneyline": nba,
        "lowest_log_loss": best,
        "default_method": devig.DEFAULT_METHOD,
    }


def feature_throughput() -> dict[str, object]:
    files = sorted((SHARED_DATA / "odds-api" / "changes").glob("*_changes.parquet"))
    if not files:
        raise SystemExit(f"no change logs under {SHARED_DATA / 'odds-api' / 'changes'}")
    out: dict[str, object] = {"files": [f.name for f in files]}
    with tempfile.TemporaryDirectory() as tmp:
        con = warehouse.connect(Path(tmp) / "features.duckdb")
        store.ensure_schema(con)

        def timed(label: str, fn) -> int:
            start = time.perf_counter()
            rows = fn()
            seconds = time.perf_counter() - start
            out[f"{label}_seconds"] = round(seconds, 2)
            out[f"{label}_rows"] = rows
            out[f"{label}_peak_rss_mb"] = round(peak_rss_mb(), 1)
            return rows

        quotes = timed("load_change_logs", lambda: F.load_odds_api_change_log(con, files))
        timed("quote_features", lambda: F.compute_quote_features(con))
        timed("market_features", lambda: F.compute_market_features(con))
        timed(
            "pair_features_one_pair", lambda: F.compute_pair_features(con, "draftkings", "fanduel")
        )
        busiest = con.execute(
            "SELECT event_id FROM odds_quotes GROUP BY event_id ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()[0]
        out["incremental_event_quotes"] = con.execute(
            "SELECT count(*) FROM odds_quotes WHERE event_id = ?", [busiest]
        ).fetchone()[0]
        timed(
            "incremental_quote_features", lambda: F.compute_quote_features(con, event_ids=[busiest])
        )
        timed(
            "incremental_market_features",
            lambda: F.compute_market_features(con, event_ids=[busiest]),
        )
        timed("registry_frame", lambda: len(F.feature_registry_frame(con)))
        out["book_market_state_rows"] = con.execute(
            "SELECT count(*) FROM book_market_state"
        ).fetchone()[0]
        con.close()
    out["quotes"] = quotes
    out["quote_features_quotes_per_s"] = round(quotes / out["quote_features_seconds"])
    out["market_features_quotes_per_s"] = round(quotes / out["market_features_seconds"])
    out["market_features_rows_per_s"] = round(
        out["market_features_rows"] / out["market_features_seconds"]
    )
    out["market_over_quote_time_ratio"] = round(
        out["market_features_seconds"] / out["quote_features_seconds"], 2
    )
    out["full_over_incremental_quote_time_ratio"] = round(
        out["quote_features_seconds"] / out["incremental_quote_features_seconds"], 1
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-devig", action="store_true")
    args = parser.parse_args()
    figures: dict[str, object] = {"benchmark": "features"}
    if not args.skip_devig:
        figures["devig_comparison"] = devig_comparison()
    if not args.skip_throughput:
        figures["feature_throughput"] = feature_throughput()
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    emit(figures)


if __name__ == "__main__":
    main()
