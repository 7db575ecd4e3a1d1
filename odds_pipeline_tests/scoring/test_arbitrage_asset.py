"""arbitrage_opportunities on the simulator: windows land in a table with stakes and reasons."""

import json

import dagster as dg

from odds_pipeline.defs.ingestion import canonical_odds_tables, simulated_market
from odds_pipeline.defs.resources import WarehouseResource
from odds_pipeline.defs.serving import arbitrage_opportunities


def test_windows_are_stored_with_stakes_and_kept_apart_with_reasons():
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [simulated_market, canonical_odds_tables, arbitrage_opportunities],
            instance=instance,
            resources={"warehouse": WarehouseResource()},
            run_config={
                "ops": {
                    "simulated_market": {
                        "config": {"n_events": 30, "seed": 3, "arbitrage_rate": 4.0}
                    },
                    "arbitrage_opportunities": {"config": {"staleness_seconds": 3600}},
                }
            },
        )
    assert result.success
    md = result.asset_materializations_for_node("arbitrage_opportunities")[0].metadata
    assert md["actionable_windows"].value > 0
    with WarehouseResource().store().connection(read_only=True) as con:
        windows = con.execute("SELECT * FROM arbitrage_windows").df()
    assert len(windows) == md["dagster/row_count"].value
    actionable = windows[windows["status"] == "actionable"]
    assert (actionable["guaranteed_profit"] > 0).all()
    assert (actionable["best_margin"] <= 0.05).all()
    assert windows.loc[windows["status"] == "suspicious", "reason"].notna().all()
    stakes = json.loads(actionable["stakes"].iloc[0])
    assert all(float(s) % 1.0 == 0 and float(s) >= 0 for s in stakes.values())
    assert windows["arb_ahead_score"].isna().all()  # no champion scores yet


def test_new_windows_reach_the_alert_sink_once_with_their_stakes(monkeypatch):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    run_config = {
        "ops": {
            "simulated_market": {"config": {"n_events": 30, "seed": 3, "arbitrage_rate": 4.0}},
            "arbitrage_opportunities": {
                "config": {"staleness_seconds": 3600, "alert_max_age_minutes": 100000}
            },
        }
    }
    assets = [simulated_market, canonical_odds_tables, arbitrage_opportunities]
    try:
        with dg.instance_for_test() as instance:
            first = dg.materialize(
                assets, instance=instance, resources={"warehouse": WarehouseResource()},
                run_config=run_config,
            )  # fmt: skip
            sent = first.asset_materializations_for_node("arbitrage_opportunities")[0].metadata
            again = dg.materialize(
                assets, instance=instance, resources={"warehouse": WarehouseResource()},
                run_config={"ops": {"arbitrage_opportunities": run_config["ops"]["arbitrage_opportunities"]}},
                selection=[arbitrage_opportunities],
            )  # fmt: skip
            resent = again.asset_materializations_for_node("arbitrage_opportunities")[0].metadata
    finally:
        server.shutdown()
    n = min(sent["actionable_windows"].value, 20)
    assert sent["alerts_sent"].value == n == len(received) > 0
    assert resent["alerts_sent"].value == 0  # the same windows are not alerted twice
    text = json.dumps(received[0])
    assert "Arbitrage" in text and "stake" in text and "guaranteed profit" in text
