"""A live poll flows by itself: the sensor asks for features of the touched events, scores, scan."""

import dagster as dg

from odds_pipeline.definitions import defs
from odds_pipeline.defs.sensors import live_data_sensor
from odds_pipeline_tests.mlflow_fixtures import mlflow_db_template, mlflow_store  # noqa: F401

DAY = "2025-11-13"  # a day of the bundled NFL replay snapshots


def test_replayed_polls_flow_by_themselves_to_an_arbitrage_alert_with_stakes(alert_webhook):
    import json

    _poll_then_refresh()
    received = alert_webhook
    # The replayed day's third snapshot opens one actionable window (NFL, 2025-11-13 16:34).
    assert len(received) == 1
    text = json.dumps(received[0])
    assert "Arbitrage" in text and "stake" in text and "guaranteed profit" in text


def _poll_then_refresh() -> None:
    """Three polls as the schedule makes them, each followed by the sensor's tick and the run it
    asks for; the replay moves on one snapshot a poll, and the third opens a window."""
    alerts, cursor = [], None
    with dg.instance_for_test() as instance:
        for _ in range(3):
            poll = defs.resolve_job_def("odds_api_live_poll").execute_in_process(
                instance=instance, partition_key=DAY
            )
            assert poll.success
            tick = dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor)
            request = live_data_sensor()(tick)
            cursor = tick.cursor
            requests = list(request) if not isinstance(request, dg.RunRequest) else [request]
            assert len(requests) == 1 and requests[0].partition_key == DAY
            ops = requests[0].run_config["ops"]
            assert ops["quote_features"]["config"]["only_load_ids"] == [f"odds_api_live:{DAY}"]
            refresh = defs.resolve_job_def("live_refresh").execute_in_process(
                instance=instance, partition_key=DAY, run_config=requests[0].run_config
            )
            assert refresh.success
            done = {
                e.asset_key.to_user_string() for e in refresh.get_asset_materialization_events()
            }
            assert {
                "quote_features",
                "win_probability_predictions",
                "arbitrage_opportunities",
            } <= done
            scan = refresh.asset_materializations_for_node("arbitrage_opportunities")[0].metadata
            alerts.append((scan["actionable_windows"].value, scan["alerts_sent"].value))
    assert alerts == [(0, 0), (0, 0), (1, 1)]
