"""Scoring with the champion or the market fallback, per day, idempotent, point in time."""

import dagster as dg
import pandas as pd
import pytest

from odds_pipeline.defs.datasets import lstm_sequences
from odds_pipeline.defs.features import market_features, pair_features, quote_features
from odds_pipeline.defs.ingestion import canonical_odds_tables, simulated_market
from odds_pipeline.defs.resources import MlflowResource, WarehouseResource
from odds_pipeline.defs.serving import arbitrage_scores, win_probability_predictions
from odds_pipeline.defs.training import lstm_candidate
from odds_pipeline.registry import promotion
from odds_pipeline.training import tracking
from odds_pipeline_tests.mlflow_fixtures import mlflow_db_template, mlflow_store  # noqa: F401

RESOURCES = {"mlflow": MlflowResource(), "warehouse": WarehouseResource()}
UPSTREAM = [simulated_market, canonical_odds_tables, quote_features, market_features, pair_features]
TINY_LSTM = {"epochs": 2, "hidden": 8, "num_layers": 1, "batch_size": 64, "device": "cpu"}


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _query(sql: str) -> pd.DataFrame:
    with WarehouseResource().store().connection(read_only=True) as con:
        return con.execute(sql).df()


def _busiest_day() -> str:
    day = _query(
        "SELECT strftime(commence_time, '%Y-%m-%d') AS d, count(*) n FROM events "
        "GROUP BY 1 ORDER BY n DESC, d LIMIT 1"
    )
    return str(day["d"].iloc[0])


def _score(instance, day: str):
    return dg.materialize(
        [*UPSTREAM, lstm_sequences, win_probability_predictions, arbitrage_scores],
        instance=instance,
        selection=[win_probability_predictions, arbitrage_scores],
        partition_key=day,
        resources=RESOURCES,
    )


def test_scoring_falls_back_to_the_market_then_uses_the_champion(instance):
    assert dg.materialize(
        [*UPSTREAM, lstm_sequences, lstm_candidate],
        instance=instance,
        resources=RESOURCES,
        run_config={
            "ops": {
                "simulated_market": {"config": {"n_events": 30, "seed": 5}},
                "lstm_candidate": {"config": TINY_LSTM},
            }
        },
    ).success
    day = _busiest_day()

    # No champion: the market's probability, said plainly, on every row.
    assert _score(instance, day).success
    first = _query("SELECT * FROM predictions ORDER BY event_id, side")
    assert len(first) > 0
    assert set(first["source"]) == {"market_fallback"}
    assert first["model_version"].isna().all()
    assert first["fallback_reason"].str.contains("no champion").all()
    assert (first["model_probability"] == first["market_probability"]).all()
    assert (first["last_step_at"] <= first["decision_time"]).all()  # never a later quote
    pairs = _query("SELECT * FROM arbitrage_scores")
    assert len(pairs) > 0 and set(pairs["source"]) == {"rule_fallback"}

    # Scoring the same day again replaces it: same rows, no duplicates.
    assert _score(instance, day).success
    again = _query("SELECT * FROM predictions ORDER BY event_id, side")
    assert len(again) == len(first)
    pd.testing.assert_frame_equal(
        again.drop(columns=["scored_at", "run_id"]), first.drop(columns=["scored_at", "run_id"])
    )

    # With a champion: its version on every row, its own probabilities.
    promotion.promote(tracking.LSTM_MODEL_NAME, "1")
    assert _score(instance, day).success
    scored = _query("SELECT * FROM predictions ORDER BY event_id, side")
    assert len(scored) == len(first)
    assert set(scored["source"]) == {"champion"} and set(scored["model_version"]) == {"1"}
    assert (scored["model_probability"] != scored["market_probability"]).any()
    assert scored["feature_snapshot_hash"].str.len().eq(16).all()
    assert (scored["last_step_at"] <= scored["decision_time"]).all()
