"""The ingestion group end to end on the bundled samples, in a temporary state home."""

import hashlib
from pathlib import Path

import dagster as dg
import pytest

from odds_pipeline.definitions import defs
from odds_pipeline.defs.ingestion import odds_api_live
from odds_pipeline.defs.resources import ReplayOddsFeedResource, WarehouseResource
from odds_pipeline.ingestion.store import OddsStore

SMALL_SIM = {"ops": {"simulated_market": {"config": {"n_events": 12, "seed": 3}}}}
TABLES = ("odds_quotes", "rejected_quotes", "events", "results", "loads")


def run_default(
    instance: dg.DagsterInstance, run_config: dict | None = None, raise_on_error: bool = True
):
    job = defs.resolve_job_def("ingestion")
    return job.execute_in_process(
        instance=instance, run_config=run_config or SMALL_SIM, raise_on_error=raise_on_error
    )


def table_digest(path: Path) -> dict[str, str]:
    """Content of every table, order-independent, so two states can be compared exactly."""
    store = OddsStore(path)
    out = {}
    with store.connection(read_only=True) as con:
        for table in TABLES:
            rows = con.execute(f"SELECT * FROM {table}").fetchall()
            out[table] = (
                hashlib.sha256("\n".join(sorted(map(repr, rows))).encode()).hexdigest()
                + f":{len(rows)}"
            )
    return out


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_default_pipeline_ingests_samples_and_accounts_for_every_price(
    instance, isolated_state_home
):
    result = run_default(instance)
    assert result.success
    checks = result.get_asset_check_evaluations()
    failed = [(c.asset_key.to_user_string(), c.check_name) for c in checks if not c.passed]
    assert failed == []
    warehouse = WarehouseResource().resolved_path()
    assert warehouse.is_relative_to(isolated_state_home)
    store = OddsStore(warehouse)
    per_source = store.query(
        """SELECT l.source, sum(l.prices_read) AS read, sum(l.quotes_accepted) AS acc, sum(l.quotes_rejected) AS rej
           FROM loads l GROUP BY 1 ORDER BY 1"""
    ).set_index("source")
    assert set(per_source.index) == {"football_data", "odds_api", "sbr", "simulator"}
    assert (per_source["read"] == per_source["acc"] + per_source["rej"]).all()
    stored = store.query("SELECT source, count(*) AS n FROM odds_quotes GROUP BY 1").set_index(
        "source"
    )["n"]
    assert (stored == per_source["acc"]).all()
    mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
    meta = mats["football_data_odds"].step_materialization_data.materialization.metadata
    assert (
        meta["prices_read"].value == meta["quotes_accepted"].value + meta["quotes_rejected"].value
    )


def test_rematerializing_leaves_identical_tables(instance):
    run_default(instance)
    first = table_digest(WarehouseResource().resolved_path())
    run_default(instance)
    assert table_digest(WarehouseResource().resolved_path()) == first


def test_malformed_file_fails_clearly_and_writes_nothing(instance, tmp_path):
    run_default(instance)
    before = table_digest(WarehouseResource().resolved_path())
    good = Path(__file__).resolve().parents[2] / "data" / "samples" / "football_data"
    bad = tmp_path / "E0_broken.csv"
    bad.write_text("Div,HomeTeam,B365H\nE0,Arsenal,2.0\n")
    config = {
        "ops": {
            **SMALL_SIM["ops"],
            "football_data_odds": {"config": {"paths": [str(good / "*.csv"), str(bad)]}},
        }
    }
    result = run_default(instance, config, raise_on_error=False)
    assert not result.success
    failure = next(
        e for e in result.all_events if e.is_step_failure and e.step_key == "football_data_odds"
    )
    message = failure.step_failure_data.error.message
    assert "E0_broken.csv" in message and "Nothing" in message
    assert failure.step_failure_data.user_failure_data.metadata["file"].value.endswith(
        "E0_broken.csv"
    )
    assert table_digest(WarehouseResource().resolved_path()) == before


def test_reject_ratio_check_blocks_downstream_tables(instance, tmp_path):
    csv = tmp_path / "E0_bad_prices.csv"
    csv.write_text(
        "Div,Date,HomeTeam,AwayTeam,FTHG,FTAG,FTR,B365H,B365D,B365A\n"
        "E0,01/08/2020,A,B,1,0,H,0.5,0.9,abc\n"
        "E0,02/08/2020,C,D,1,0,H,2.0,3.0,4.0\n"
    )
    config = {
        "ops": {
            **SMALL_SIM["ops"],
            "football_data_odds": {"config": {"paths": [str(csv)]}},
        }
    }
    result = run_default(instance, config, raise_on_error=False)
    evals = {
        (c.asset_key.to_user_string(), c.check_name): c
        for c in result.get_asset_check_evaluations()
    }
    assert not evals[("football_data_odds", "reject_ratio_below_threshold")].passed
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert "odds_quotes" not in materialized


def test_live_partition_polls_the_feed_and_is_idempotent(instance, isolated_state_home):
    samples = Path(__file__).resolve().parents[2] / "data" / "samples" / "odds_api"
    feed = ReplayOddsFeedResource(paths=[str(samples / "wnba.json")], sports=["basketball_wnba"])
    asset = odds_api_live
    resources = {"warehouse": WarehouseResource(), "odds_feed": feed}
    run_config = {"ops": {"odds_api_live": {"config": {"keep_in_play": True}}}}
    first = dg.materialize(
        [asset],
        resources=resources,
        partition_key="2026-08-08",
        instance=instance,
        run_config=run_config,
    )
    assert first.success
    meta = first.get_asset_materialization_events()[
        0
    ].step_materialization_data.materialization.metadata
    assert meta["quotes_accepted"].value > 0 and "basketball_wnba" in meta["quota"].value
    digest = table_digest(WarehouseResource().resolved_path())
    dg.materialize(
        [asset],
        resources=resources,
        partition_key="2026-08-08",
        instance=instance,
        run_config=run_config,
    )
    assert table_digest(WarehouseResource().resolved_path()) == digest
    assert list((isolated_state_home / "raw" / "odds_api" / "2026-08-08").glob("*.json.gz"))


def test_a_backfill_of_a_past_day_reloads_its_saved_responses_and_polls_nothing(
    instance, isolated_state_home, monkeypatch
):
    """Before: every partition run polled the API now and filed today's odds under the past day."""
    import json
    from datetime import UTC, datetime

    from odds_pipeline.defs.resources import LiveOddsApiResource
    from odds_pipeline_tests.ingestion.sources.test_odds_api import LocalApi

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    samples = Path(__file__).resolve().parents[2] / "data" / "samples" / "odds_api"
    payload = json.loads((samples / "wnba.json").read_text())
    payload = payload["data"] if isinstance(payload, dict) else payload
    api = LocalApi()
    api.answer((200, payload, {"x-requests-remaining": "499", "x-requests-used": "1"}))
    feed = LiveOddsApiResource(
        api_key="test-key", base_url=api.base_url, sports=["basketball_wnba"]
    )
    resources = {"warehouse": WarehouseResource(), "odds_feed": feed}
    run_config = {"ops": {"odds_api_live": {"config": {"keep_in_play": True}}}}
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    try:
        polled = dg.materialize(
            [odds_api_live], resources=resources, partition_key=today, instance=instance,
            run_config=run_config,
        )  # fmt: skip
        assert polled.success and len(api.paths) == 1
        # The day is over: its response is moved to where a past day's would be, and backfilled.
        past = "2026-01-02"
        (isolated_state_home / "raw" / "odds_api" / today).rename(
            isolated_state_home / "raw" / "odds_api" / past
        )
        backfill = dg.materialize(
            [odds_api_live], resources=resources, partition_key=past, instance=instance,
            run_config=run_config,
        )  # fmt: skip
    finally:
        api.close()
    assert backfill.success and len(api.paths) == 1  # no second request
    meta = backfill.get_asset_materialization_events()[0].step_materialization_data
    metadata = meta.materialization.metadata
    assert metadata["polled"].value is False and metadata["raw_responses"].value == 1
    assert metadata["quotes_accepted"].value > 0
    assert len(list((isolated_state_home / "raw" / "odds_api" / past).glob("*.json.gz"))) == 1
