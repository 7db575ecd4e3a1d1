"""The drift drill closes the loop on small data: promote, drift, sensor, retrain, gates decide."""

import dagster as dg

from odds_pipeline.drill import run_drill
from odds_pipeline_tests.mlflow_fixtures import mlflow_db_template, mlflow_store  # noqa: F401


def test_the_drift_drill_closes_the_loop():
    with dg.instance_for_test() as instance:
        report = run_drill(instance, old_events=240, new_events=160)
        runs = instance.get_runs()
    text = "\n".join(report.steps)
    assert report.first_decision == "promoted", text
    assert report.drifted_reports == 2, text
    assert report.retrain_requested, text
    assert report.request_tags["odds_pipeline/trigger"] == "drift"
    assert report.retrain_decision in ("promoted", "refused", "kept"), text
    assert "[5] retrain run" in text and "decision:" in text
    # The sensor's run is a run of the retrain job tagged with what drifted.
    retrains = [r for r in runs if r.job_name == "retrain"]
    assert len(retrains) == 1 and "drift in 2 consecutive" in retrains[0].tags["odds_pipeline/why"]
