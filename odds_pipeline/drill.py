"""The drift drill: the whole loop on the simulator, each step printed with its numbers.

    make drill            # or: python -m odds_pipeline.drill [--old 240 --new 160]

1. the old regime is simulated, features computed, the LSTM trained, judged by the gates and
   promoted (drill thresholds: small data, see DRILL_GATES);
2. the market changes regime (home advantage, retail margins, volatility) and the new events
   are ingested; features are recomputed;
3. `drift_report` runs on two windows of the new regime and flags the drift;
4. the `drift_retrain` sensor evaluates and asks for a retraining run of what drifted;
5. that run rebuilds the dataset, trains a candidate, the gates decide (the old champion is
   re-scored on the new test rows) and the champion alias moves or stays.

It runs in its own state home (``$ODDS_PIPELINE_HOME/drill`` unless ODDS_PIPELINE_HOME is set by the
caller) on a throwaway Dagster instance, so it never touches the pipeline's own warehouse,
registry aliases or asset history. The same drill runs in `make test` on small data.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import dagster as dg

KICKOFFS_PER_DAY = 8.0  # the simulator's default
START = "2024-01-01T00:00:00Z"
# Small data: a handful of test events. The thresholds say what the drill can judge, and the
# drill prints them; the pipeline's defaults stay as documented.
DRILL_GATES = {
    "min_test_rows": 30,
    "min_test_positives": 5,
    "calibration_quantile": 1.0,
    "max_brier_ratio_upper": 1.5,
    "max_brier_ratio_lower": None,  # on a handful of events, any ratio up to 1.5 is judged a tie
    "champion_margin": 0.5,
    "n_resamples": 1000,
}
NEW_REGIME = {
    "regime_home_advantage": 1.3,
    "regime_retail_margin": [0.10, 0.16],
    "regime_drift_scale": 0.09,
}
TINY_LSTM = {"epochs": 3, "hidden": 16, "num_layers": 1, "batch_size": 64, "device": "cpu"}


@dataclass
class DrillReport:
    steps: list[str] = field(default_factory=list)
    first_decision: str = ""
    drifted_reports: int = 0
    retrain_requested: bool = False
    retrain_decision: str = ""
    request_tags: dict[str, str] = field(default_factory=dict)

    def say(self, text: str) -> None:
        self.steps.append(text)
        print(text, flush=True)


def _defs() -> dg.Definitions:
    from odds_pipeline.definitions import defs

    return defs


def _materialize(instance: dg.DagsterInstance, selection: list[str], run_config: dict) -> Any:
    defs = _defs()
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey(k) for k in selection],
        run_config=run_config,
        raise_on_error=False,
    )


def _decision(model: str) -> Any:
    from odds_pipeline.defs.resources import WarehouseResource
    from odds_pipeline.registry import promotion

    with WarehouseResource().store().connection(read_only=True) as con:
        rows = promotion.history(con, model, limit=1)
    return rows.iloc[0] if len(rows) else None


def run_drill(
    instance: dg.DagsterInstance, *, old_events: int = 240, new_events: int = 160, seed: int = 11
) -> DrillReport:
    from odds_pipeline.defs.resources import WarehouseResource
    from odds_pipeline.defs.sensors import drift_retrain_sensor
    from odds_pipeline.training import tracking

    report = DrillReport()
    model = tracking.LSTM_MODEL_NAME
    sim = {"seed": seed, "n_events": old_events, "start": START}
    ingest = ["simulated_market", "odds_quotes", "events", "results", "rejected_quotes"]
    features = ["quote_features", "market_features"]
    train = ["lstm_sequences", "lstm_candidate", "lstm_champion"]
    config = {
        "ops": {
            "simulated_market": {"config": sim},
            "lstm_candidate": {"config": TINY_LSTM},
            "lstm_quality_gates": {"config": DRILL_GATES},
        }
    }
    report.say(
        f"[1] old regime: {old_events} simulated events (seed {seed}); drill gates {DRILL_GATES}"
    )
    first = _materialize(instance, [*ingest, *features, *train], config)
    row = _decision(model)
    report.first_decision = "" if row is None else str(row["decision"])
    report.say(
        f"    gates: {_check_summary(first)}\n    decision: {report.first_decision} "
        f"({'' if row is None else row['reason']}) -> champion v{row['to_version'] if row is not None else '?'}"
    )
    if report.first_decision != "promoted":
        report.say("    no champion to monitor: the drill stops here")
        return report

    change = datetime.fromisoformat(START.replace("Z", "+00:00")) + timedelta(
        days=old_events / KICKOFFS_PER_DAY
    )
    sim_new = {**sim, "n_events": old_events + new_events, "regime_change_at": change.isoformat()}
    sim_new.update(NEW_REGIME)
    report.say(
        f"[2] regime change at {change:%Y-%m-%d %H:%M} UTC: {NEW_REGIME}; "
        f"{new_events} new events ingested"
    )
    ingested = _materialize(
        instance, [*ingest, *features], {"ops": {"simulated_market": {"config": sim_new}}}
    )
    assert ingested.success, "ingesting the new regime failed"

    new_days = new_events / KICKOFFS_PER_DAY
    ends = [change + timedelta(days=new_days * f + 3.5) for f in (0.5, 1.0)]
    for i, end in enumerate(ends, start=1):
        run = _materialize(
            instance,
            ["drift_report"],
            {
                "ops": {
                    "drift_report": {
                        "config": {
                            "window_days": new_days / 2,
                            "window_end": end.isoformat(),
                            "min_samples": 100,
                        }
                    }
                }
            },
        )
        md = run.asset_materializations_for_node("drift_report")[0].metadata
        drifted = md.get("lstm_drifted_features")
        max_psi = md.get("lstm_max_psi")
        n = 0 if drifted is None else int(drifted.value)
        report.drifted_reports += int(n > 0)
        report.say(
            f"[3.{i}] drift_report, window ending {end:%Y-%m-%d %H:%M}: {n} of "
            f"{md['lstm_judged_features'].value} features drifted, max PSI "
            f"{None if max_psi is None else max_psi.value}"
        )

    sensor = drift_retrain_sensor(consecutive=2, cooldown_hours=24)
    context = dg.build_sensor_context(
        instance=instance, resources={"warehouse": WarehouseResource()}
    )
    request = sensor(context)
    if isinstance(request, dg.SkipReason):
        report.say(f"[4] drift_retrain sensor skipped: {request.skip_message}")
        return report
    report.retrain_requested = True
    report.request_tags = dict(request.tags)
    report.say(f"[4] drift_retrain sensor asked for a retrain: {request.tags['odds_pipeline/why']}")

    job = _defs().resolve_job_def("retrain")
    retrain = job.execute_in_process(
        instance=instance,
        asset_selection=request.asset_selection,
        tags=request.tags,
        run_config={
            "ops": {
                "lstm_candidate": {"config": TINY_LSTM},
                "lstm_quality_gates": {"config": DRILL_GATES},
            }
        },
        raise_on_error=False,
    )
    row = _decision(model)
    report.retrain_decision = "" if row is None else str(row["decision"])
    report.say(
        f"[5] retrain run {retrain.run_id[:8]} ({'succeeded' if retrain.success else 'stopped at a gate'}):"
        f"\n    gates: {_check_summary(retrain)}\n    decision: {report.retrain_decision} "
        f"v{row['from_version']} -> v{row['to_version']}: {row['reason']}"
    )
    return report


def _check_summary(result: Any) -> str:
    checks = result.get_asset_check_evaluations()
    return "; ".join(
        f"{c.check_name} {'pass' if c.passed else 'FAIL'}"
        for c in checks
        if c.asset_key.to_user_string() == "lstm_candidate"
    )


def main(argv: list[str] | None = None) -> int:
    import os

    from odds_pipeline.paths import state_home

    parser = argparse.ArgumentParser(description="The drift drill (see the module docstring).")
    parser.add_argument("--old", type=int, default=240, help="events in the old regime")
    parser.add_argument("--new", type=int, default=160, help="events in the new regime")
    args = parser.parse_args(argv)
    os.environ.setdefault("ODDS_PIPELINE_HOME", str(state_home() / "drill"))
    print(f"drill state home: {os.environ['ODDS_PIPELINE_HOME']}")
    # A throwaway instance: the drill's materializations must not show up as the pipeline's
    # own assets in the UI (they describe the drill's state home, not data/).
    with dg.instance_for_test() as instance:
        report = run_drill(instance, old_events=args.old, new_events=args.new)
    ok = report.retrain_requested and report.retrain_decision in ("promoted", "refused", "kept")
    print("drill:", "the loop closed" if ok else "the loop did NOT close (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
