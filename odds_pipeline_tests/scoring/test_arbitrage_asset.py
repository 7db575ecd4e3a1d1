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
