"""The features group on the bundled samples: computed, registered, served, retrievable point-in-time."""

import dagster as dg
import pandas as pd

from odds_pipeline.definitions import defs
from odds_pipeline.defs.resources import WarehouseResource
from odds_pipeline.features.compute import (
    FEATURE_DEFINITIONS,
    MARKET_TABLE,
    QUOTE_TABLE,
    view_specs,
)
from odds_pipeline.features.feature_store import FeatureStore

SMALL_SIM = {"ops": {"simulated_market": {"config": {"n_events": 12, "seed": 3}}}}


def test_default_pipeline_computes_features_registry_and_online_view():
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("ingestion_and_features").execute_in_process(
            instance=instance, run_config=SMALL_SIM
        )
    assert result.success
    mats = {
        m.asset_key.to_user_string(): m.step_materialization_data.materialization
        for m in result.get_asset_materialization_events()
    }
    assert {
        "quote_features",
        "market_features",
        "pair_features",
        "feature_registry",
        "online_features",
    } <= set(mats)
    registry_md = mats["feature_registry"].metadata["registry"].value
    assert all(d.name in registry_md for d in FEATURE_DEFINITIONS)
    assert mats["quote_features"].metadata["dagster/row_count"].value > 0
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["feature_versions_recorded"]

    path = WarehouseResource().resolved_path()
    store = FeatureStore(path)
    for name in (QUOTE_TABLE, MARKET_TABLE):
        spec = view_specs()[name]
        store.register_view(
            name,
            spec["table"],
            keys=spec["keys"],
            sequence=spec["sequence"],
            features=spec["features"],
        )
    with store._connection() as con:
        probe = con.execute(
            f"SELECT event_id, market, outcome, point, observed_at FROM {MARKET_TABLE} "
            "WHERE event_id LIKE 'sim:%' ORDER BY observed_at LIMIT 5"
        ).df()
    # Asked exactly at a market row's time, the store returns that row's value; a microsecond before, an older one.
    entities = probe.rename(columns={"observed_at": "as_of"})
    at = store.get_historical_features(
        entities, ["market_features:n_books"], include_timestamps=True
    )
    assert (at["market_features__observed_at"] <= at["as_of"]).all()
    before = entities.assign(as_of=entities["as_of"] - pd.Timedelta(microseconds=1))
    earlier = store.get_historical_features(
        before, ["market_features:n_books"], include_timestamps=True
    )
    assert (
        (earlier["market_features__observed_at"] < entities["as_of"])
        | earlier["market_features__observed_at"].isna()
    ).all()
    online = store.get_online_features(
        probe.drop(columns="observed_at"), ["market_features:n_books"]
    )
    assert online["n_books"].notna().all()
