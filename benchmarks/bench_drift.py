"""Drift monitoring: freeze a reference window, then score a shifted current window against it.

Reference and current are synthetic (seeded numpy), ``--features`` columns each, cycling
through shapes a feature table has: normal, log-normal (skewed), a discrete count, a column
with 5% missing values and a constant. In the current window every third feature has its
mean shifted by 0.5 std (counts by +1, the constant by +1) and the missing-value column goes
to 25% missing; the rest are fresh draws from the reference distribution. ``drift_table``
must flag exactly the changed features, which is checked before the figures are printed.

Run:   .venv/bin/python benchmarks/bench_drift.py
Quick: .venv/bin/python benchmarks/bench_drift.py --rows 100000 --features 10
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
from _common import emit, peak_rss_mb, timer

from odds_pipeline.monitoring.drift import DriftConfig, drift_table, freeze_reference

KINDS = ("normal", "lognormal", "count", "missing", "constant")


def make_frame(rows: int, features: int, seed: int, shifted: bool) -> tuple[pd.DataFrame, set[str]]:
    """A (rows x features) frame; with ``shifted``, also the names of the features changed."""
    rng = np.random.default_rng(seed)
    block = np.empty((features, rows))  # one contiguous row per column, as a column store has
    changed: set[str] = set()
    names = []
    for i in range(features):
        kind = KINDS[i % len(KINDS)]
        name = f"f{i:02d}_{kind}"
        names.append(name)
        move = shifted and (i % 3 == 0 or kind == "missing")
        if move:
            changed.add(name)
        if kind == "normal":
            block[i] = rng.normal(0.5 if move else 0.0, 1.0, rows)
        elif kind == "lognormal":
            # log-normal(0, 0.5): +0.25 on the log moves the mean by ~0.53 std of the values
            block[i] = rng.lognormal(0.25 if move else 0.0, 0.5, rows)
        elif kind == "count":
            block[i] = rng.poisson(3.0, rows) + (1 if move else 0)
        elif kind == "missing":
            block[i] = rng.normal(0.0, 1.0, rows)
            block[i][rng.random(rows) < (0.25 if move else 0.05)] = np.nan
        else:
            block[i] = 2.0 if move else 1.0
    return pd.DataFrame(block.T, columns=names, copy=False), changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=30)
    args = parser.parse_args()

    config = DriftConfig()
    reference, _ = make_frame(args.rows, args.features, seed=1, shifted=False)
    current, changed = make_frame(args.rows, args.features, seed=2, shifted=True)
    features = list(reference.columns)

    with timer() as freeze_time:
        frozen = freeze_reference(reference, features, config)
    frozen_json = json.dumps({k: v.to_dict() for k, v in frozen.items()})
    with timer() as table_time:
        table = drift_table(frozen, current, config)

    flagged = set(table.loc[table["drifted"], "feature"])
    if flagged != changed:
        raise SystemExit(f"wrong verdicts: flagged {sorted(flagged)}, changed {sorted(changed)}")
    emit(
        {
            "benchmark": "drift_freeze_and_table",
            "reference_rows": args.rows,
            "current_rows": args.rows,
            "features": args.features,
            "drifted_features": len(flagged),
            "severity_counts": table["severity"].value_counts().to_dict(),
            "max_psi_unchanged": round(float(table.loc[~table["drifted"], "psi"].max()), 5),
            "min_psi_changed": round(float(table.loc[table["drifted"], "psi"].min()), 4),
            "frozen_json_bytes": len(frozen_json),
            "freeze_seconds": round(freeze_time["seconds"], 3),
            "drift_table_seconds": round(table_time["seconds"], 3),
            "feature_values_per_s": round(args.rows * args.features / table_time["seconds"]),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    )


if __name__ == "__main__":
    main()
