"""Wall time of the quality gates (bootstrap included) at the sizes the two models are judged on.

    .venv/bin/python benchmarks/bench_gates.py [--resamples 10000]

LSTM: 1,520 test rows (760 events, the EPL test window's size), Brier against the market and
a champion. Transformer: 20,000 pair rows over 400 events with 3% positives, AUC-PR against
the best rule and a champion. Synthetic rows; the gates only see numbers.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from _common import emit, peak_rss_mb, timer

from odds_pipeline.registry.decision import ChampionScores, GateThresholds, judge


def rows(n: int, n_events: int, rate: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = np.clip(rng.beta(2, 2 / rate - 2, size=n), 0.001, 0.999)
    y = (rng.random(n) < truth).astype(float)
    noise = lambda s: np.clip(truth + s * rng.normal(size=n), 0.001, 0.999)  # noqa: E731
    return pd.DataFrame(
        {
            "event_id": rng.integers(0, n_events, size=n).astype(str),
            "y": y,
            "model": noise(0.03),
            "baseline": noise(0.05),
            "champion": noise(0.04),
        }
    )


def run(frame: pd.DataFrame, metric: str, resamples: int) -> dict[str, object]:
    info = {
        "metric": metric,
        "baseline_name": "baseline",
        "dataset_hash": "x",
        "train_rows": len(frame),
        "train_positives": int(frame["y"].sum()),
    }
    thresholds = GateThresholds(n_resamples=resamples, min_test_rows=1, min_test_positives=1)
    with timer() as t:
        results = judge(
            frame,
            info,
            thresholds,
            champion=ChampionScores("1", frame["champion"].to_numpy()),
            dataset_hash_now="x",
            dataset_verified=True,
            steps_after_decision=0,
        )
    return {
        "rows": len(frame),
        "events": int(frame["event_id"].nunique()),
        "seconds": round(t["seconds"], 3),
        "verdicts": {k: r.passed for k, r in results.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    lstm = run(rows(1520, 760, 0.45, 1), "brier", args.resamples)
    pair = run(rows(20_000, 400, 0.03, 2), "auc_pr", args.resamples)
    emit(
        {
            "benchmark": "quality_gates",
            "resamples": args.resamples,
            "lstm_brier_gates": lstm,
            "transformer_auc_pr_gates": pair,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    )


if __name__ == "__main__":
    main()
