"""arbitrage_opportunities on the simulator: windows land in a table with stakes and reasons."""

import json

import dagster as dg
import pandas as pd

from odds_pipeline.defs.ingestion import canonical_odds_tables, simulated_market
from odds_pipeline.defs.resources import WarehouseResource
from odds_pipeline.defs.serving import arbitrage_opportunities

SIMULATED = {"simulated_market": {"config": {"n_events": 30, "seed": 3, "arbitrage_rate": 4.0}}}


def _simulated_days() -> list[str]:
    with WarehouseResource().store().connection(read_only=True) as con:
        first, last = con.execute(
            "SELECT min(observed_at), max(observed_at) FROM odds_quotes"
        ).fetchone()
    return [d.strftime("%Y-%m-%d") for d in pd.date_range(first.date(), last.date(), freq="D")]


def test_windows_are_stored_by_day_with_stakes_and_kept_apart_with_reasons():
    scan_config = {"arbitrage_opportunities": {"config": {"staleness_seconds": 3600}}}
    with dg.instance_for_test() as instance:
        ingest = dg.materialize(
            [simulated_market, canonical_odds_tables],
            instance=instance,
            resources={"warehouse": WarehouseResource()},
            run_config={"ops": SIMULATED},
        )
        assert ingest.success
        days = _simulated_days()
        metadata = {}
        for day in days:  # a backfill of the simulated days, one partition a run
            result = dg.materialize(
                [arbitrage_opportunities],
                instance=instance,
                resources={"warehouse": WarehouseResource()},
                run_config={"ops": scan_config},
                partition_key=day,
            )
            assert result.success
            metadata[day] = result.asset_materializations_for_node("arbitrage_opportunities")[
                0
            ].metadata
    assert len(days) >= 3 and sum(md["actionable_windows"].value for md in metadata.values()) > 0
    with WarehouseResource().store().connection(read_only=True) as con:
        windows = con.execute("SELECT * FROM arbitrage_windows").df()
    per_day = windows.groupby("opened_day").size()
    for day, md in metadata.items():
        assert per_day.get(day, 0) == md["dagster/row_count"].value
    actionable = windows[windows["status"] == "actionable"]
    assert (actionable["guaranteed_profit"] > 0).all()
    assert (actionable["best_margin"] <= 0.05).all()
    assert windows.loc[windows["status"] == "suspicious", "reason"].notna().all()
    stakes = json.loads(actionable["stakes"].iloc[0])
    assert all(float(s) % 1.0 == 0 and float(s) >= 0 for s in stakes.values())
    assert windows["arb_ahead_score"].isna().all()  # no champion scores yet


def test_new_windows_reach_the_alert_sink_once_with_their_stakes(alert_webhook):
    received = alert_webhook
    scan_config = {
        "arbitrage_opportunities": {
            "config": {"staleness_seconds": 3600, "alert_max_age_minutes": 100000}
        },
    }
    resources = {"warehouse": WarehouseResource()}
    with dg.instance_for_test() as instance:
        dg.materialize(
            [simulated_market, canonical_odds_tables], instance=instance,
            resources=resources, run_config={"ops": SIMULATED},
        )  # fmt: skip
        runs = [
            dg.materialize(
                [arbitrage_opportunities], instance=instance, resources=resources,
                run_config={"ops": scan_config}, partition_key=day,
            ).asset_materializations_for_node("arbitrage_opportunities")[0].metadata
            for day in _simulated_days()
        ]  # fmt: skip
        sent = max(runs, key=lambda md: md["actionable_windows"].value)
        day = next(d for d, md in zip(_simulated_days(), runs, strict=True) if md is sent)
        again = dg.materialize(
            [arbitrage_opportunities], instance=instance, resources=resources,
            run_config={"ops": scan_config}, partition_key=day,
        )  # fmt: skip
        resent = again.asset_materializations_for_node("arbitrage_opportunities")[0].metadata
    n = sum(min(md["actionable_windows"].value, 20) for md in runs)
    assert sum(md["alerts_sent"].value for md in runs) == n == len(received) > 0
    assert resent["alerts_sent"].value == 0  # the same windows are not alerted twice
    text = json.dumps(received[0])
    assert "Arbitrage" in text and "stake" in text and "guaranteed profit" in text


def test_a_range_backfill_from_the_cli_writes_each_day_once_and_is_idempotent(
    tmp_path, alert_webhook
):
    """`dagster asset materialize --partition-range` (single-run backfill policy): the days of
    the range hold exactly what one scan of everything finds for them, and a rerun changes nothing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from odds_pipeline.defs.serving import ArbitrageScanConfig
    from odds_pipeline.scoring.arbitrage import scan

    with dg.instance_for_test() as instance:
        dg.materialize(
            [simulated_market, canonical_odds_tables], instance=instance,
            resources={"warehouse": WarehouseResource()}, run_config={"ops": SIMULATED},
        )  # fmt: skip
    days = _simulated_days()[:3]
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    command = [
        str(Path(sys.executable).parent / "dagster"), "asset", "materialize",
        "-m", "odds_pipeline.definitions", "--select", "arbitrage_opportunities",
        "--partition-range", f"{days[0]}...{days[-1]}",
    ]  # fmt: skip
    env = {**os.environ, "DAGSTER_HOME": str(home)}

    def stored() -> pd.DataFrame:
        with WarehouseResource().store().connection(read_only=True) as con:
            frame = con.execute("SELECT * FROM arbitrage_windows").df()
        return frame.sort_values(["opened_at", "event_id", "market", "n_legs"]).reset_index(
            drop=True
        )

    for attempt in range(2):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        table = stored()
        if attempt == 0:
            first = table
    pd.testing.assert_frame_equal(first, table)
    assert sorted(set(table["opened_day"])) == days
    with WarehouseResource().store().connection(read_only=True) as con:
        whole = scan(con, ArbitrageScanConfig().scan_config()).windows  # the asset's defaults
    expected = whole[whole["opened_at"].dt.strftime("%Y-%m-%d").isin(days)]
    columns = ["event_id", "market", "line", "opened_at", "n_legs", "closed_at", "best_margin",
               "stakes", "status", "reason", "still_open"]  # fmt: skip

    def ordered(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[columns].sort_values(["opened_at", "event_id", "market", "line", "n_legs"])
        return frame.reset_index(drop=True)

    assert len(expected) > 0
    pd.testing.assert_frame_equal(ordered(table), ordered(expected), check_dtype=False)
    assert alert_webhook == []  # a range backfill re-finds old windows: it sends no alert
