"""One drift-sensor tick: read the latest drift reports and decide, on a warehouse with history.

    .venv/bin/python benchmarks/bench_sensor_tick.py [--reports 2000 --features 30]

Fills `drift_metrics` with N reports x F features for each model (a year of hourly reports),
then evaluates the `drift_retrain` sensor 20 times (read-only connection, decide, cursor) and
reports the median and max tick time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import dagster as dg
import numpy as np
import pandas as pd
from _common import emit, peak_rss_mb

from odds_pipeline.defs.resources import WarehouseResource
from odds_pipeline.defs.sensors import drift_retrain_sensor
from odds_pipeline.monitoring.reference import DRIFT_SQL, DRIFT_TABLE
from odds_pipeline.training.kinds import KINDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--features", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ODDS_PIPELINE_HOME"] = tmp
        warehouse = WarehouseResource()
        rng = np.random.default_rng(0)
        n = args.reports * args.features
        with warehouse.store().connection() as con:
            con.execute(DRIFT_SQL)
            for kind in KINDS.values():
                report = np.repeat(np.arange(args.reports), args.features)
                frame = pd.DataFrame(  # noqa: F841  (read by DuckDB)
                    {
                        "report_id": [f"{kind.name}-{r}" for r in report],
                        "computed_at": pd.Timestamp("2025-01-01", tz="UTC")
                        + pd.to_timedelta(report, unit="h"),
                        "model": kind.registered_model,
                        "version": "1",
                        "window_start": None,
                        "window_end": None,
                        "feature": [
                            f"f{i}" for i in np.tile(np.arange(args.features), args.reports)
                        ],
                        "role": "input",
                        "n_reference": 5000,
                        "n_current": 5000,
                        "psi": rng.gamma(1.0, 0.03, n),
                        "ks_statistic": 0.0,
                        "ks_pvalue": 1.0,
                        "ks_pvalue_bh": 1.0,
                        "wasserstein": 0.0,
                        "severity": "none",
                        "drifted": rng.random(n) < 0.002,
                        "reason": "",
                    }
                )
                con.execute(f"INSERT INTO {DRIFT_TABLE} SELECT * FROM frame")
        sensor = drift_retrain_sensor()
        times = []
        with dg.instance_for_test() as instance:
            for _ in range(20):
                ctx = dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse})
                start = time.perf_counter()
                outcome = sensor(ctx)
                times.append(time.perf_counter() - start)
    emit(
        {
            "benchmark": "drift_sensor_tick",
            "drift_rows": 2 * n,
            "ticks": len(times),
            "median_seconds": round(statistics.median(times), 4),
            "max_seconds": round(max(times), 4),
            "last_outcome": type(outcome).__name__,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
    )


if __name__ == "__main__":
    main()
