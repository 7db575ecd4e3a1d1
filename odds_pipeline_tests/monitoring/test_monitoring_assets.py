"""drift_report, performance_report and the sensors that react to them, on tiny data."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pandas as pd
import pytest

from odds_pipeline.defs.datasets import lstm_sequences
from odds_pipeline.defs.features import market_features, pair_features, quote_features
from odds_pipeline.defs.ingestion import canonical_odds_tables, simulated_market
from odds_pipeline.defs.monitoring import drift_report, performance_report
from odds_pipeline.defs.resources import MlflowResource, WarehouseResource
from odds_pipeline.defs.sensors import drift_retrain_sensor, failure_alert_sensor
from odds_pipeline.defs.serving import win_probability_predictions
from odds_pipeline.defs.training import lstm_candidate
from odds_pipeline.monitoring.reference import DRIFT_TABLE, recent_reports, reference_path
from odds_pipeline.registry import promotion
from odds_pipeline.training import tracking
from odds_pipeline_tests.mlflow_fixtures import mlflow_db_template, mlflow_store  # noqa: F401

RESOURCES = {"mlflow": MlflowResource(), "warehouse": WarehouseResource()}
UPSTREAM = [simulated_market, canonical_odds_tables, quote_features, market_features, pair_features]
TINY_LSTM = {"epochs": 2, "hidden": 8, "num_layers": 1, "batch_size": 64, "device": "cpu"}
SMALL_WINDOW = {"window_days": 400.0, "min_samples": 50}


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _query(sql: str, params=None) -> pd.DataFrame:
    with WarehouseResource().store().connection(read_only=True) as con:
        return con.execute(sql, params or []).df()


def _champion_on_the_simulator(instance) -> None:
    assert dg.materialize(
        [*UPSTREAM, lstm_sequences, lstm_candidate],
        instance=instance,
        resources=RESOURCES,
        run_config={
            "ops": {
                "simulated_market": {"config": {"n_events": 40, "seed": 5}},
                "lstm_candidate": {"config": TINY_LSTM},
            }
        },
    ).success
    promotion.promote(tracking.LSTM_MODEL_NAME, "1")


def _all_assets():
    return [
        *UPSTREAM,
        lstm_sequences,
        lstm_candidate,
        win_probability_predictions,
        drift_report,
        performance_report,
    ]


def test_drift_report_performance_report_and_the_drift_sensor(instance):
    # Before any champion: reports say so and write nothing.
    empty = dg.materialize([drift_report], instance=instance, resources=RESOURCES)
    md = empty.asset_materializations_for_node("drift_report")[0].metadata
    assert "no champion" in md["lstm_status"].value

    _champion_on_the_simulator(instance)
    run_config = {"ops": {"drift_report": {"config": SMALL_WINDOW}}}
    result = dg.materialize(
        _all_assets(), instance=instance, resources=RESOURCES, selection=[drift_report],
        run_config=run_config,
    )  # fmt: skip
    md = result.asset_materializations_for_node("drift_report")[0].metadata
    assert md["lstm_champion_version"].value == "1"
    rows = _query(f"SELECT * FROM {DRIFT_TABLE}")
    assert set(rows["role"]) == {"input", "output"}
    assert "score" in set(rows["feature"])
    # The same regime as training: nothing major on the model's own score.
    assert not rows.loc[rows["feature"] == "score", "drifted"].any()
    # The reference is frozen once per version, kept beside the state and on the version's run.
    assert reference_path(tracking.LSTM_MODEL_NAME, "1").exists()
    run_id = tracking.client().get_model_version(tracking.LSTM_MODEL_NAME, "1").run_id
    assert [a.path for a in tracking.client().list_artifacts(run_id, "monitoring")] == [
        "monitoring/v1.json"
    ]

    # The sensor: one report without drift -> skip with numbers.
    sensor = drift_retrain_sensor(consecutive=2, cooldown_hours=24)
    ctx = dg.build_sensor_context(instance=instance, resources={"warehouse": WarehouseResource()})
    skip = sensor(ctx)
    assert isinstance(skip, dg.SkipReason) and "reports drifted" in skip.skip_message

    # Two consecutive drifted reports -> one retraining run, with what drifted in its tags.
    with WarehouseResource().store().connection() as con:
        base = con.execute(f"SELECT * FROM {DRIFT_TABLE} LIMIT 1").df()
        for i, report in enumerate(("r-old", "r-new")):
            fake = base.assign(
                report_id=report, feature="fair_prob", psi=0.4, drifted=True,
                severity="major", computed_at=pd.Timestamp("2030-01-01", tz="UTC")
                + pd.Timedelta(hours=i),
            )  # fmt: skip
            con.execute(f"INSERT INTO {DRIFT_TABLE} SELECT * FROM fake")
        assert len(recent_reports(con, tracking.LSTM_MODEL_NAME)) >= 3
    request = sensor(ctx)
    assert isinstance(request, dg.RunRequest)
    assert "fair_prob" in request.tags["odds_pipeline/why"]
    assert request.tags["odds_pipeline/trigger"] == "drift"
    # Same reports again: no second request; a newer drifted report within the cooldown: skip.
    ctx2 = dg.build_sensor_context(
        instance=instance, cursor=ctx.cursor, resources={"warehouse": WarehouseResource()}
    )
    assert "already asked" in sensor(ctx2).skip_message
    with WarehouseResource().store().connection() as con:
        fake = base.assign(  # noqa: F841  (read by DuckDB)
            report_id="r-newest", feature="fair_prob", psi=0.5, drifted=True, severity="major",
            computed_at=pd.Timestamp("2030-01-02", tz="UTC"),
        )  # fmt: skip
        con.execute(f"INSERT INTO {DRIFT_TABLE} SELECT * FROM fake")
    assert "cooldown" in sensor(ctx2).skip_message

    # Outcomes (after the sensor checks: a degraded finding would also ask for a retrain): score every simulated day, then judge on the resolved events.
    days = _query("SELECT DISTINCT strftime(commence_time, '%Y-%m-%d') d FROM events ORDER BY 1")
    for day in days["d"]:
        assert dg.materialize(
            _all_assets(), instance=instance, resources=RESOURCES,
            selection=[win_probability_predictions], partition_key=day,
        ).success  # fmt: skip
    perf = dg.materialize(
        _all_assets(), instance=instance, resources=RESOURCES, selection=[performance_report],
        run_config={"ops": {"performance_report": {"config": {"min_rows": 20}}}},
    )  # fmt: skip
    md = perf.asset_materializations_for_node("performance_report")[0].metadata
    assert md["resolved_rows"].value > 20
    assert "Brier ratio model/market" in md["finding"].value
    assert md["ratio_ci_low"].value <= md["brier_ratio"].value <= md["ratio_ci_high"].value


def test_drift_sensor_skips_when_the_warehouse_cannot_be_opened(instance, tmp_path):
    sensor = drift_retrain_sensor()
    broken = WarehouseResource(database_path=str(tmp_path / "not-a-dir" / "x" / "odds.duckdb"))
    (tmp_path / "not-a-dir").write_text("a file where a folder should be")
    ctx = dg.build_sensor_context(instance=instance, resources={"warehouse": broken})
    result = sensor(ctx)
    assert isinstance(result, dg.SkipReason) and "warehouse not readable" in result.skip_message


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


@dg.asset
def broken_odds_file():
    raise dg.Failure(
        description="E0.csv line 12: 24 fields where the header has 23",
        metadata={"file": "data/E0.csv", "line": 12},
        allow_retries=False,
    )


def test_a_failed_run_reaches_the_webhook_with_an_actionable_message(instance, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    try:
        url = f"http://127.0.0.1:{server.server_port}/services/T0/B0/SECRET"
        monkeypatch.setenv("ALERT_WEBHOOK_URL", url)
        monkeypatch.setenv("DAGSTER_UI_URL", "http://dagster.example:3000")
        failed = dg.materialize([broken_odds_file], instance=instance, raise_on_error=False)
        assert not failed.success
        run = instance.get_run_by_id(failed.run_id)
        event = next(e for e in failed.all_events if e.event_type_value == "PIPELINE_FAILURE")
        ctx = dg.build_run_status_sensor_context(
            sensor_name="alert_on_run_failure",
            dagster_event=event,
            dagster_instance=instance,
            dagster_run=run,
        ).for_run_failure()
        failure_alert_sensor()(ctx)
    finally:
        server.shutdown()
    assert len(_Hook.received) == 1
    message = json.dumps(_Hook.received[0])
    assert "24 fields where the header has 23" in message
    assert "broken_odds_file" in message
    assert f"http://dagster.example:3000/runs/{failed.run_id}" in message
    assert "data/E0.csv" in message and "Traceback" not in message
    assert "SECRET" not in message


def test_backtest_report_on_champion_predictions(instance):
    from odds_pipeline.defs.backtest import backtest_report

    _champion_on_the_simulator(instance)
    days = _query("SELECT DISTINCT strftime(commence_time, '%Y-%m-%d') d FROM events ORDER BY 1")
    for day in days["d"]:
        assert dg.materialize(
            _all_assets(), instance=instance, resources=RESOURCES,
            selection=[win_probability_predictions], partition_key=day,
        ).success  # fmt: skip
    result = dg.materialize(
        [*_all_assets(), backtest_report], instance=instance, resources=RESOURCES,
        selection=[backtest_report],
        run_config={"ops": {"backtest_report": {"config": {"n_boot": 200}}}},
    )  # fmt: skip
    md = result.asset_materializations_for_node("backtest_report")[0].metadata
    verdicts = md["verdicts"].value
    assert "lstm_champion" in verdicts and "market" in verdicts and "favourite" in verdicts
    assert "oracle" in verdicts  # the simulator's true probability, the best a model could do
    bets = _query("SELECT * FROM backtest_bets")
    assert len(bets) == md["dagster/row_count"].value > 0
    assert (bets["stake"] >= 0).all()
    from pathlib import Path

    assert Path(md["equity_plot"].value).stat().st_size > 0
    run_id = md["mlflow_run"].value.rsplit("/", 1)[-1]
    assert [a.path for a in tracking.client().list_artifacts(run_id, "plots")] == [
        "plots/backtest_equity.png"
    ]
