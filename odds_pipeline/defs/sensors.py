"""Sensors, built by small factories: drift -> retraining, run failure -> alert, live data -> refresh.

Every sensor reads the warehouse read-only and briefly (never across ticks), and a tick that
meets a locked or missing warehouse, an empty window or a missing model skips with the reason
instead of raising.
"""

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from odds_pipeline.training.kinds import KINDS

from .monitoring import retrain_job
from .resources import WarehouseResource
from .serving import SCAN_ASSETS, SERVING_ASSETS

DAGSTER_UI_URL_ENV = "DAGSTER_UI_URL"


def _read_reports(warehouse: WarehouseResource, limit: int) -> dict[str, Any]:
    """Per model: its latest drift reports and latest overall performance finding."""
    from odds_pipeline.monitoring.performance import PERFORMANCE_TABLE
    from odds_pipeline.monitoring.reference import recent_reports

    out: dict[str, Any] = {}
    with warehouse.store().connection(read_only=True) as con:
        for kind in KINDS.values():
            name = kind.registered_model
            reports = recent_reports(con, name, limit=limit)
            try:
                perf = con.execute(
                    f"SELECT finding, degraded, version FROM {PERFORMANCE_TABLE} "
                    "WHERE model = ? AND window_end IS NOT NULL ORDER BY computed_at DESC, n DESC "
                    "LIMIT 1",
                    [name],
                ).fetchone()
            except Exception:  # no table yet
                perf = None
            out[name] = {"reports": reports, "performance": perf}
    return out


def drift_retrain_sensor(
    *,
    name: str = "drift_retrain",
    consecutive: int = 2,
    min_drifted_features: int = 1,
    cooldown_hours: float = 24.0,
    minimum_interval_seconds: int = 300,
) -> dg.SensorDefinition:
    """Ask for a retraining run when drift persists for ``consecutive`` reports (or outcomes
    degraded), at most once per cooldown; the cursor remembers what it acted on."""

    @dg.sensor(
        name=name,
        job=retrain_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests a `retrain` run (datasets -> candidates -> quality gates -> champion) "
        f"when a champion's last {consecutive} drift reports each flag >= {min_drifted_features} "
        f"drifted feature(s), or its outcomes degraded, and {cooldown_hours:g} h have passed since "
        "the last retrain it asked for. Every skip says why, with the numbers.",
    )
    def _sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
        cursor = json.loads(context.cursor or "{}")
        try:
            state = _read_reports(warehouse, consecutive)
        except Exception as exc:  # locked, missing or corrupt warehouse: next tick
            return dg.SkipReason(f"warehouse not readable now ({type(exc).__name__}: {exc})")
        reasons, triggers = [], {}
        for model, info in state.items():
            reports = info["reports"]
            if reports.empty:
                reasons.append(f"{model}: no drift report yet")
                continue
            recent = reports.head(consecutive)
            flagged = recent[recent["drifted"] >= min_drifted_features]
            perf = info["performance"]
            degraded = bool(perf and perf[1])
            latest = recent.iloc[0]
            if len(flagged) == consecutive and len(recent) == consecutive:
                triggers[model] = (
                    f"drift in {consecutive} consecutive reports (latest: {int(latest['drifted'])} "
                    f"features, max PSI {latest['max_psi']:.3f}: {latest['drifted_features']})"
                )
            elif degraded:
                triggers[model] = f"outcomes degraded: {perf[0]}"
            else:
                reasons.append(
                    f"{model}: {len(flagged)} of the last {len(recent)} reports drifted "
                    f"(need {consecutive}); latest max PSI {latest['max_psi']:.3f}"
                )
        if not triggers:
            return dg.SkipReason("; ".join(reasons) or "no champion to monitor")
        key = ",".join(str(state[m]["reports"].iloc[0]["report_id"]) for m in sorted(triggers))
        if cursor.get("acted_on") == key:
            return dg.SkipReason(f"already asked for a retrain on reports {key}")
        last = cursor.get("last_retrain_at")
        if last is not None:
            wait = float(last) + cooldown_hours * 3600 - time.time()
            if wait > 0:
                return dg.SkipReason(
                    f"cooldown: {wait / 3600:.1f} h left of {cooldown_hours:g} h since the last "
                    f"retrain; would retrain for {triggers}"
                )
        context.update_cursor(json.dumps({"acted_on": key, "last_retrain_at": time.time()}))
        # Retrain only what drifted: its dataset, candidate (with the gates) and champion.
        kinds = [k for k in KINDS.values() if k.registered_model in triggers]
        selection = [
            dg.AssetKey(name)
            for k in kinds
            for name in (
                k.dataset_asset,
                f"{k.asset_prefix}_candidate",
                f"{k.asset_prefix}_champion",
            )
        ]
        return dg.RunRequest(
            run_key=f"drift:{key}",
            asset_selection=selection,
            tags={
                "odds_pipeline/trigger": "drift",
                "odds_pipeline/why": "; ".join(f"{m}: {w}" for m, w in triggers.items())[:4000],
            },
        )

    return _sensor


def _failure_details(context: dg.RunFailureSensorContext) -> tuple[str | None, str, Any, Any]:
    """(step, the error's own text, file, line) of the first failed step, else of the run."""
    for event in context.get_step_failure_events():
        data = event.event_specific_data
        error = getattr(data, "error", None)
        text = error.message if error is not None else (event.message or "")
        metadata = getattr(getattr(data, "user_failure_data", None), "metadata", None) or {}
        values = {k: getattr(v, "value", v) for k, v in metadata.items()}
        file = values.get("file") or values.get("path")
        line = values.get("line") or values.get("record")
        description = getattr(getattr(data, "user_failure_data", None), "description", None)
        return event.step_key, description or text, file, line
    error = getattr(context.failure_event.event_specific_data, "error", None)
    return (
        None,
        (error.message if error else context.failure_event.message or "run failed"),
        None,
        None,
    )


def failure_alert_sensor(*, name: str = "alert_on_run_failure") -> dg.SensorDefinition:
    """On any failed run: one actionable message (job, step, the error's own text, a link)."""

    @dg.run_failure_sensor(
        name=name,
        default_status=dg.DefaultSensorStatus.RUNNING,
        monitor_all_code_locations=False,
        description="Sends an alert for every failed run: job, step or asset, the error's own text "
        "(not a stack trace), file/line when the error names them, and a link to the run. Sink: the "
        "Slack-compatible webhook in ALERT_WEBHOOK_URL (retried, never fails the sensor), else the "
        "log. Secrets are scrubbed.",
    )
    def _sensor(context: dg.RunFailureSensorContext) -> None:
        from odds_pipeline.monitoring.alerts import failure_alert, sink_from_env

        run = context.dagster_run
        step, text, file, line = _failure_details(context)
        base = os.environ.get(DAGSTER_UI_URL_ENV, "http://127.0.0.1:3000").rstrip("/")
        alert = failure_alert(
            run.job_name,
            run.run_id,
            step,
            text,
            file=None if file is None else str(file),
            line=None if line is None else str(line),
            run_url=f"{base}/runs/{run.run_id}",
        )
        try:
            result = sink_from_env().send(alert)
        except Exception as exc:  # a misconfigured sink must never break the sensor
            context.log.warning(f"alert not sent: {type(exc).__name__}")
            return
        if not result.delivered:
            context.log.warning(f"alert not delivered after {result.attempts} attempt(s)")

    return _sensor


live_refresh_job = dg.define_asset_job(
    name="live_refresh",
    selection=dg.AssetSelection.assets("quote_features", "market_features", "pair_features")
    | dg.AssetSelection.assets(*SERVING_ASSETS, *SCAN_ASSETS),
    description="After a live poll: features, then the day's champion scores and the arbitrage scan.",
)


def live_data_sensor(*, name: str = "live_data_refresh") -> dg.SensorDefinition:
    @dg.asset_sensor(
        name=name,
        asset_key=dg.AssetKey("odds_api_live"),
        job=live_refresh_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="When a live poll lands in `odds_api_live`, refreshes the features and that day's "
        "predictions and arbitrage scores. Fires only when the poll schedule (stopped by default) "
        "or someone materializes the live feed.",
    )
    def _sensor(context: dg.SensorEvaluationContext, asset_event: Any):
        partition = asset_event.dagster_event.partition or datetime.now(UTC).strftime("%Y-%m-%d")
        # Only the events this day's live load touched are recomputed (equal to a full run).
        only = {"config": {"only_load_ids": [f"odds_api_live:{partition}"]}}
        return dg.RunRequest(
            run_key=f"live:{partition}:{asset_event.run_id}",
            partition_key=partition,
            run_config={
                "ops": {
                    name: only for name in ("quote_features", "market_features", "pair_features")
                }
            },
            tags={"odds_pipeline/trigger": "live_poll"},
        )

    return _sensor


SENSORS = [drift_retrain_sensor(), failure_alert_sensor(), live_data_sensor()]
SENSOR_JOBS = [live_refresh_job]
