"""Gates, promotion, refusal and rollback through Dagster on tiny deterministic data."""

import json

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from odds_pipeline.datasets.sequences import SequenceDataset, assign_splits
from odds_pipeline.defs.datasets import _report
from odds_pipeline.defs.registry import (
    CHAMPION_ASSETS,
    GATE_CHECKS,
    rollback_champion,
)
from odds_pipeline.defs.resources import MlflowResource, WarehouseResource
from odds_pipeline.defs.training import lstm_candidate
from odds_pipeline.registry import promotion
from odds_pipeline.training import tracking
from odds_pipeline_tests.mlflow_fixtures import mlflow_db_template, mlflow_store  # noqa: F401

T, F = 6, 3
NAME = tracking.LSTM_MODEL_NAME
TINY_LSTM = {"epochs": 4, "hidden": 8, "num_layers": 1, "batch_size": 64, "device": "cpu"}
LAX = {
    "min_test_rows": 20,
    "min_test_positives": 5,
    "calibration_quantile": 1.0,
    "n_resamples": 300,
}


def _learnable_lstm(n_events: int = 240, seed: int = 0) -> SequenceDataset:
    """The label follows feature 0; the 'market' says 0.5 for everyone (easy to beat)."""
    rng = np.random.default_rng(seed)
    n = 2 * n_events
    x = rng.normal(size=(n, T, F)).astype(np.float32)
    mask = np.ones((n, T), dtype=bool)
    signal = x[..., 0].mean(1)
    y = (3.0 * signal + 0.3 * rng.normal(size=n) > 0).astype(np.float32)
    commence = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        np.repeat(np.arange(n_events), 2), unit="h"
    )
    decision = commence - pd.Timedelta(hours=1)
    steps = (
        decision.to_numpy("datetime64[us]").astype(np.int64)[:, None]
        - np.arange(T)[::-1] * 600_000_000
    )
    meta = pd.DataFrame(
        {
            "event_id": np.repeat([f"ev{i:03d}" for i in range(n_events)], 2),
            "side": np.tile(["home", "away"], n_events),
            "league": "SIM",
            "commence_time": commence,
            "decision_time": decision,
            "seq_len": np.full(n, T, dtype=np.int64),
            "market_prob": np.full(n, 0.5),
        }
    )
    return SequenceDataset(
        name="lstm_sequences",
        mask=mask,
        y=y,
        meta=meta,
        feature_names=[f"f{i}" for i in range(F)],
        config={"synthetic": True},
        x=x,
        times=steps.astype(np.int64),
        target="won",
    )


@dg.asset(name="lstm_sequences", group_name="datasets")
def stub_lstm(context: dg.AssetExecutionContext):
    return _report(assign_splits(_learnable_lstm()), context)


ASSETS = [stub_lstm, lstm_candidate, *GATE_CHECKS, *CHAMPION_ASSETS]
RESOURCES = {"mlflow": MlflowResource(), "warehouse": WarehouseResource()}


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _run(instance, gates: dict, raise_on_error: bool = True):
    lstm_checks = [c for c in GATE_CHECKS if "lstm" in c.node_def.name]
    selection = dg.AssetSelection.assets(stub_lstm, lstm_candidate, "lstm_champion")
    return dg.materialize(
        [stub_lstm, lstm_candidate, *lstm_checks, *CHAMPION_ASSETS],
        instance=instance,
        selection=selection | dg.AssetSelection.checks(*lstm_checks),
        resources=RESOURCES,
        run_config={
            "ops": {
                "lstm_candidate": {"config": TINY_LSTM},
                "lstm_quality_gates": {"config": gates},
            }
        },
        raise_on_error=raise_on_error,
    )


def _checks(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _decisions() -> pd.DataFrame:
    with WarehouseResource().store().connection(read_only=True) as con:
        return promotion.history(con, NAME, limit=50)


def test_promotion_refusal_and_rollback(instance):
    # 1. Every gate passes: champion moves to v1, with a card and gate tags.
    first = _run(instance, LAX)
    assert first.success
    assert all(_checks(first).values()), _checks(first)
    assert promotion.alias_version(NAME, tracking.CHAMPION) == "1"
    v1 = tracking.client().get_model_version(NAME, "1")
    assert v1.tags[promotion.GATES_PASSED_TAG] == "true"
    assert "beats_baseline" in v1.description and "dataset" in v1.description
    assert _decisions()["decision"].iloc[0] == "promoted"

    # 2. A gate fails: the run fails at that gate, the champion stays, the refusal is recorded.
    refused = _run(instance, {**LAX, "min_test_rows": 10**6}, raise_on_error=False)
    assert not refused.success
    assert _checks(refused)["enough_evidence"] is False
    assert promotion.alias_version(NAME, tracking.CHAMPION) == "1"
    row = _decisions().iloc[0]
    assert (row["decision"], row["to_version"], row["from_version"]) == ("refused", "2", "1")
    assert "enough_evidence" in json.loads(row["failed_gates"])
    tags = tracking.client().get_model_version(NAME, "2").tags
    assert tags["gate.enough_evidence"] == "fail" and tags[promotion.GATES_PASSED_TAG] == "false"

    # 3. Passing again: v3 is champion (re-scored v1 on the same rows), v1 previous_champion.
    third = _run(instance, LAX)
    assert third.success
    assert promotion.alias_version(NAME, tracking.CHAMPION) == "3"
    assert promotion.alias_version(NAME, tracking.PREVIOUS_CHAMPION) == "1"

    # 4. Rollback moves champion back and records it; a second one fails clearly.
    rolled = rollback_champion.execute_in_process(
        instance=instance,
        run_config={"ops": {"rollback_model": {"config": {"model": NAME, "reason": "test"}}}},
    )
    assert rolled.success
    assert promotion.alias_version(NAME, tracking.CHAMPION) == "1"
    assert promotion.alias_version(NAME, tracking.PREVIOUS_CHAMPION) is None
    # dagster-mlflow recorded the rollback as one finished MLflow run tagged with the Dagster run.
    client = tracking.client()
    logged = client.search_runs(
        [client.get_experiment_by_name("odds-registry").experiment_id],
        filter_string=f"tags.dagster_run_id = '{rolled.run_id}'",
    )
    assert len(logged) == 1 and logged[0].info.status == "FINISHED"
    assert logged[0].data.params["to_version"] == "1"
    assert tracking.running_runs() == []
    row = _decisions().iloc[0]
    assert (row["decision"], row["from_version"], row["to_version"]) == ("rollback", "3", "1")
    again = rollback_champion.execute_in_process(
        instance=instance,
        run_config={"ops": {"rollback_model": {"config": {"model": NAME}}}},
        raise_on_error=False,
    )
    assert not again.success
    assert promotion.alias_version(NAME, tracking.CHAMPION) == "1"
