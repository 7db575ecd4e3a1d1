"""A live poll flows by itself: the sensor asks for features of the touched events, scores, scan."""

import dagster as dg

from odds_pipeline.definitions import defs
from odds_pipeline.defs.sensors import live_data_sensor
from odds_pipeline_tests.mlflow_fixtures import mlflow_db_template, mlflow_store  # noqa: F401

DAY = "2025-11-13"  # a day of the bundled NFL replay snapshots


def test_a_replayed_poll_triggers_an_incremental_refresh_that_runs():
    with dg.instance_for_test() as instance:
        poll = defs.resolve_job_def("odds_api_live_poll").execute_in_process(
            instance=instance, partition_key=DAY
        )
        assert poll.success
        request = live_data_sensor()(dg.build_sensor_context(instance=instance, definitions=defs))
        requests = list(request) if not isinstance(request, dg.RunRequest) else [request]
        assert len(requests) == 1 and requests[0].partition_key == DAY
        ops = requests[0].run_config["ops"]
        assert ops["quote_features"]["config"]["only_load_ids"] == [f"odds_api_live:{DAY}"]
        refresh = defs.resolve_job_def("live_refresh").execute_in_process(
            instance=instance, partition_key=DAY, run_config=requests[0].run_config
        )
        assert refresh.success
        done = {e.asset_key.to_user_string() for e in refresh.get_asset_materialization_events()}
        assert {"quote_features", "win_probability_predictions", "arbitrage_opportunities"} <= done
