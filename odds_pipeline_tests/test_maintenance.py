"""Maintenance: dropping a load from Dagster, the duplicate-key check's advice, stuck pool slots."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import EngineEventData

from odds_pipeline.defs.ingestion_checks import unique_quote_keys
from odds_pipeline.defs.maintenance import (
    MAINTENANCE_JOBS,
    MAINTENANCE_SENSORS,
    DropLoadConfig,
    drop_load,
    free_stuck_pool_slots,
)
from odds_pipeline.defs.resources import WarehouseResource
from odds_pipeline.ingestion.store import OddsStore

from .ingestion.test_store import parse_result, table_counts

REPO_ROOT = Path(__file__).resolve().parent.parent
POOL = "duckdb_writer"


@pytest.fixture
def store(tmp_path) -> OddsStore:
    store = OddsStore(tmp_path / "w.duckdb")
    store.replace_load("test:a.csv", "test", parse_result("test:a.csv", [2.0, 3.0], "a"))
    store.replace_load("test:b.csv", "test", parse_result("test:b.csv", [2.0], "b"))
    return store


def resource(store: OddsStore) -> WarehouseResource:
    return WarehouseResource(database_path=str(store.path))


def test_exports_load_in_a_code_location():
    assert drop_load in MAINTENANCE_JOBS
    assert free_stuck_pool_slots in MAINTENANCE_SENSORS
    dg.Definitions.validate_loadable(
        dg.Definitions(
            jobs=MAINTENANCE_JOBS,
            sensors=MAINTENANCE_SENSORS,
            resources={"warehouse": WarehouseResource()},
        )
    )


def test_drop_load_job_deletes_the_load_in_the_writer_pool(store):
    (op,) = drop_load.graph.node_defs
    assert op.pool == POOL
    result = drop_load.execute_in_process(
        run_config=dg.RunConfig({op.name: DropLoadConfig(load_id="test:a.csv")}),
        resources={"warehouse": resource(store)},
    )
    assert result.success
    assert store.query("SELECT load_id FROM loads")["load_id"].tolist() == ["test:b.csv"]
    assert table_counts(store)["odds_quotes"] == 1


def test_drop_load_job_refuses_an_unknown_load_with_advice(store):
    (op,) = drop_load.graph.node_defs
    result = drop_load.execute_in_process(
        run_config=dg.RunConfig({op.name: DropLoadConfig(load_id="test:nope.csv")}),
        resources={"warehouse": resource(store)},
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node(op.name).user_failure_data
    assert "test:nope.csv" in failure.description and "odds-pipeline loads" in failure.description
    assert table_counts(store)["loads"] == 2


def _duplicate(store: OddsStore) -> None:
    """A copy of a.csv ingested under another name: its one quote duplicates one of a.csv's."""
    store.replace_load("test:a_copy.csv", "test", parse_result("test:a_copy.csv", [2.0], "a"))
    with store.connection() as con:
        con.execute("UPDATE odds_quotes SET source_file = split_part(load_id, ':', 2)")


def test_unique_quote_keys_passes_on_unique_keys(store):
    result = unique_quote_keys(warehouse=resource(store))
    assert result.passed
    assert result.metadata["duplicated_keys"].value == 0


def test_unique_quote_keys_names_the_loads_files_and_the_fix(store):
    _duplicate(store)
    result = unique_quote_keys(warehouse=resource(store))
    assert not result.passed
    meta = {k: v.value for k, v in result.metadata.items()}
    assert meta["duplicated_keys"] == 1
    loads = {row["load_id"]: row for row in meta["loads_with_duplicates"]}
    assert set(loads) == {"test:a.csv", "test:a_copy.csv"}
    assert loads["test:a_copy.csv"]["files"] == ["a_copy.csv"]
    assert loads["test:a_copy.csv"]["duplicate_rows"] == 1
    sample = meta["sample_keys"][0]
    assert sample["event_id"] == "a" and sample["bookmaker"] == "book0"
    assert sorted(sample["load_ids"]) == ["test:a.csv", "test:a_copy.csv"]
    fix = "odds-pipeline drop-load test:a_copy.csv --yes"
    assert fix in meta["fix"]
    assert fix in result.description and "test:a.csv" in result.description
    assert (
        "drop-load" in next(iter(unique_quote_keys.check_specs)).description
    )  # the static description


def _run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    return instance.add_run(
        dg.DagsterRun(job_name="ingestion", run_id=str(uuid.uuid4()), status=status)
    )


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def _claimed(instance: dg.DagsterInstance) -> set[str]:
    info = instance.event_log_storage.get_concurrency_info(POOL)
    return {slot.run_id for slot in info.claimed_slots}


def test_free_stuck_pool_slots_frees_finished_and_dead_runs_only():
    with dg.instance_for_test(
        overrides={"concurrency": {"pools": {"default_limit": 1}}}
    ) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots(POOL, 4)
        failed = _run(instance, dg.DagsterRunStatus.STARTED)
        dead = _run(instance, dg.DagsterRunStatus.STARTED)
        alive = _run(instance, dg.DagsterRunStatus.STARTED)
        unknown = _run(instance, dg.DagsterRunStatus.STARTED)  # no pid recorded yet
        for run in (failed, dead, alive, unknown):
            assert storage.claim_concurrency_slot(POOL, run.run_id, "write").is_claimed
        instance.report_run_failed(failed, "killed")
        instance.report_engine_event(
            "Started process for run", dead, EngineEventData.in_process(_dead_pid())
        )
        instance.report_engine_event(
            "Started process for run", alive, EngineEventData.in_process(os.getpid())
        )

        outcome = free_stuck_pool_slots(dg.build_sensor_context(instance=instance))

        assert isinstance(outcome, dg.SkipReason)
        assert _claimed(instance) == {alive.run_id, unknown.run_id}
        assert "freed 2 slot(s)" in outcome.skip_message, outcome.skip_message
        assert dead.run_id in outcome.skip_message and failed.run_id in outcome.skip_message
        after = instance.get_run_by_id(dead.run_id)
        assert after.status == dg.DagsterRunStatus.FAILURE  # the alert sensor sees it
        assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED

        again = free_stuck_pool_slots(dg.build_sensor_context(instance=instance))
        assert isinstance(again, dg.SkipReason)
        assert "nothing to free" in again.skip_message and "2 slot(s) held" in again.skip_message


def test_free_stuck_pool_slots_is_running_by_default_and_says_what_it_does():
    assert free_stuck_pool_slots.default_status == dg.DefaultSensorStatus.RUNNING
    assert "slot" in free_stuck_pool_slots.description


def test_committed_instance_config_enables_run_monitoring(tmp_path):
    shutil.copy(REPO_ROOT / "data" / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert instance.run_monitoring_enabled
        settings = instance.run_monitoring_settings
        assert 0 < settings["free_slots_after_run_end_seconds"] <= 300
        assert settings.get("max_resume_run_attempts", 0) == 0  # the default launcher can't resume
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    finally:
        instance.dispose()
