"""Training assets end to end: MLflow runs always end, models register and serve, studies resume.

Most tests feed the training assets small synthetic datasets through stand-in assets with
the real dataset keys (fast, and every branch reachable); one test runs the real chain
simulator -> features -> datasets -> candidates on a tiny market.
"""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from odds_pipeline.datasets.sequences import SequenceDataset, assign_splits
from odds_pipeline.defs.datasets import (
    DATASET_ASSETS,
    LstmSequencesConfig,
    PairSequencesConfig,
    _report,
)
from odds_pipeline.defs.resources import MlflowResource
from odds_pipeline.defs.training import CANDIDATE_ASSETS, lstm_candidate, transformer_candidate
from odds_pipeline.defs.tuning import TUNING_ASSETS, lstm_tuning
from odds_pipeline.training import tracking, tuning
from odds_pipeline_tests.mlflow_fixtures import mlflow_db_template, mlflow_store  # noqa: F401  (fixtures)

T, F = 6, 3
TINY_LSTM = {"epochs": 3, "hidden": 8, "num_layers": 1, "batch_size": 64, "device": "cpu"}
TINY_PAIR = {
    "epochs": 2,
    "d_model": 8,
    "n_heads": 2,
    "n_layers": 1,
    "ff_mult": 1,
    "mlp_hidden": 8,
    "batch_size": 64,
    "device": "cpu",
}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _synthetic_lstm(n_events: int = 90, seed: int = 0, flat_validation: bool = False):
    """Two sides per event; the label follows feature 0 over real steps, market knows it too."""
    rng = np.random.default_rng(seed)
    n = 2 * n_events
    x = rng.normal(size=(n, T, F)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=n)
    mask = np.arange(T)[None, :] >= (T - lengths)[:, None]  # real steps end at the decision
    signal = (x[..., 0] * mask).sum(1) / lengths
    y = (signal + 0.5 * rng.normal(size=n) > 0).astype(np.float32)
    x[~mask] = 0.0
    x[0, -1, 1] = np.nan  # a real step without a value
    events = np.repeat([f"ev{i:03d}" for i in range(n_events)], 2)
    commence = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        np.repeat(np.arange(n_events), 2), unit="h"
    )
    market = 1.0 / (1.0 + np.exp(-2.0 * signal))
    simulated = np.repeat(np.arange(n_events) % 2 == 0, 2)  # every other event has an oracle
    meta = pd.DataFrame(
        {
            "event_id": events,
            "side": np.tile(["home", "away"], n_events),
            "league": np.where(simulated, "SIM", "EPL"),
            "commence_time": commence,
            "seq_len": mask.sum(1).astype(np.int64),
            "market_prob": market,
            "true_prob": np.where(simulated, market * 0.9 + 0.05, np.nan),
        }
    )
    if flat_validation:
        y[:] = 1.0
    return SequenceDataset(
        name="lstm_sequences",
        mask=mask,
        y=y,
        meta=meta,
        feature_names=[f"f{i}" for i in range(F)],
        config={"synthetic": True},
        x=x,
        times=np.zeros((n, T), dtype=np.int64),
        target="won",
    )


def _synthetic_pairs(n: int = 200, seed: int = 1):
    rng = np.random.default_rng(seed)
    x_a = rng.normal(size=(n, T, F)).astype(np.float32)
    x_b = rng.normal(size=(n, T, F)).astype(np.float32)
    lengths = rng.integers(2, T + 1, size=n)
    mask = np.arange(T)[None, :] < lengths[:, None]
    implied = 1.0 + 0.05 * rng.normal(size=(n, T))
    last = implied[np.arange(n), lengths - 1]
    arb_ahead = (last + 0.02 * rng.normal(size=n) < 0.99).astype(np.float32)
    arb_ahead[:4] = [1, 0, 1, 0]
    commence = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) // 2, unit="h")
    meta = pd.DataFrame(
        {
            "event_id": [f"ev{i // 2:03d}" for i in range(n)],
            "market": "h2h",
            "commence_time": commence,
            "seq_len": lengths.astype(np.int64),
            "implied_sum_last": last,
            "implied_sum_min": np.where(mask, implied, np.inf).min(1),
            "implied_sum_slope": rng.normal(size=n),
        }
    )
    x_a[..., 0] = np.where(mask, implied, 0.0)
    return SequenceDataset(
        name="arbitrage_pair_sequences",
        mask=mask,
        y={"arb_ahead": arb_ahead, "arb_now": (meta["implied_sum_min"] < 1).to_numpy(np.float32)},
        meta=meta,
        feature_names=[f"g{i}" for i in range(F)],
        config={"synthetic": True},
        x_a=x_a,
        x_b=x_b,
        market_type=np.zeros(n, dtype=np.int64),
        times=np.zeros((n, T), dtype=np.int64),
        target="arb_ahead",
    )


class StubDatasetConfig(dg.Config):
    flat_validation: bool = False
    seed: int = 0


def _stub_assets() -> list[dg.AssetsDefinition]:
    """Stand-ins with the real dataset keys, saving synthetic data the real way."""

    @dg.asset(name="lstm_sequences", group_name="datasets")
    def stub_lstm(context: dg.AssetExecutionContext, config: StubDatasetConfig):
        ds = _synthetic_lstm(seed=config.seed, flat_validation=config.flat_validation)
        return _report(assign_splits(ds), context)

    @dg.asset(name="arbitrage_pair_sequences", group_name="datasets")
    def stub_pairs(context: dg.AssetExecutionContext):
        return _report(assign_splits(_synthetic_pairs()), context)

    return [stub_lstm, stub_pairs]


def _defs() -> dg.Definitions:
    stubs = _stub_assets()
    job = dg.define_asset_job(
        "train_candidates",
        selection=dg.AssetSelection.assets(*stubs, lstm_candidate, transformer_candidate),
    )
    return dg.Definitions(
        assets=[*stubs, *TUNING_ASSETS, *CANDIDATE_ASSETS],
        jobs=[job],
        resources={"mlflow": MlflowResource()},
    )


def _materialize(instance, selection, run_config=None, raise_on_error=True):
    defs = _defs()
    assets = list(defs.assets or [])
    return dg.materialize(
        assets,
        instance=instance,
        selection=selection,
        resources={"mlflow": MlflowResource()},
        run_config=run_config or {},
        raise_on_error=raise_on_error,
    )


def _metadata(result, key: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == key:
            md = event.step_materialization_data.materialization.metadata
            return {k: v.value for k, v in md.items()}
    raise AssertionError(f"no materialization of {key}")


def _no_running_runs() -> None:
    assert tracking.running_runs() == [], "an MLflow run was left RUNNING"


def _client():
    return tracking.client()


# ----------------------------------------------------------------------------- tests


def test_job_execution_trains_registers_and_leaves_no_run_running(instance):
    defs = _defs()
    job = defs.resolve_job_def("train_candidates")
    result = job.execute_in_process(
        instance=instance,
        run_config={
            "ops": {
                "lstm_candidate": {"config": TINY_LSTM},
                "transformer_candidate": {"config": TINY_PAIR},
            }
        },
    )
    assert result.success
    _no_running_runs()
    client = _client()
    for key, name in (
        ("lstm_candidate", tracking.LSTM_MODEL_NAME),
        ("transformer_candidate", tracking.TRANSFORMER_MODEL_NAME),
    ):
        md = _metadata(result, key)
        version = client.get_model_version_by_alias(name, tracking.CHALLENGER)
        assert str(md["model_version"]) == str(version.version)
        assert md["model_alias"] == tracking.CHALLENGER
        assert md["mlflow_run"].startswith("http")
        run = client.get_run(md["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags[tracking.DAGSTER_RUN_TAG] == result.run_id
        assert run.data.params["dataset_hash"] == md["dataset_hash"]
        inputs = run.inputs.dataset_inputs
        assert [i.dataset.digest for i in inputs] == [md["dataset_hash"][:36]]
        assert client.get_registered_model(name).description
        assert md["headline_ratio_ci_low"] <= md["headline_ratio"] <= md["headline_ratio_ci_high"]
        assert "git_commit" in run.data.params and "version.torch" in run.data.params
        assert "train_loss" in run.data.metrics and "val_loss" in run.data.metrics
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
        best = client.get_metric_history(run.info.run_id, "best_val_loss")
        assert min(m.step for m in best) >= 1  # no final value plotted at step 0
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        for png in ("test_calibration.png", "test_roc.png", "test_pr.png"):
            assert f"evaluation/{png}" in artifacts
        assert "evaluation/test_accuracy_by_length.png" in artifacts
        assert "| model |" in md["evaluation"]

    lstm = _metadata(result, "lstm_candidate")
    assert "| market |" in lstm["evaluation"] and "| oracle |" in lstm["evaluation"]
    assert "By sequence length" in lstm["evaluation"]
    pair = _metadata(result, "transformer_candidate")
    for rule in ("rule_sum_now", "rule_sum_min", "rule_sum_slope"):
        assert f"| {rule} |" in pair["evaluation"]
    lstm_run = client.get_run(lstm["mlflow_run_id"])
    for forecast in ("model", "market"):
        assert f"test.{forecast}.brier" in lstm_run.data.metrics
    assert "simulator.oracle.brier" in lstm_run.data.metrics


def test_materialize_logs_a_model_that_serves_its_input_example(instance):
    import mlflow

    result = _materialize(
        instance,
        dg.AssetSelection.assets("lstm_sequences", lstm_candidate),
        {"ops": {"lstm_candidate": {"config": TINY_LSTM}}},
    )
    assert result.success
    _no_running_runs()
    md = _metadata(result, "lstm_candidate")
    model = mlflow.pyfunc.load_model(f"models:/{tracking.LSTM_MODEL_NAME}@{tracking.CHALLENGER}")
    example = np.asarray(model.input_example, dtype=np.float32)
    assert example.shape[1:] == (T, F + 1)
    p = model.predict(example)
    assert p.dtype == np.float32 and p.shape == (example.shape[0],)
    assert np.all((p > 0) & (p < 1))
    assert md["model_uri"].startswith("models:/")


def test_same_data_and_config_give_the_same_metrics_on_cpu(instance):
    selection = dg.AssetSelection.assets("lstm_sequences", lstm_candidate)
    config = {"ops": {"lstm_candidate": {"config": {**TINY_LSTM, "register_model": False}}}}
    first = _metadata(_materialize(instance, selection, config), "lstm_candidate")
    second = _metadata(_materialize(instance, selection, config), "lstm_candidate")
    metrics = sorted(k for k in first if k.startswith("test_"))
    assert metrics and {k: first[k] for k in metrics} == {k: second[k] for k in metrics}
    assert "model_version" not in first
    assert first["mlflow_run_id"] != second["mlflow_run_id"]
    _no_running_runs()


def test_failure_mid_training_fails_the_mlflow_run_and_registers_nothing(instance, monkeypatch):
    from odds_pipeline.training import loop as training

    real_step = training.train_step
    calls = {"n": 0}

    def failing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("GPU fell off the bus")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", failing_step)
    result = _materialize(
        instance,
        dg.AssetSelection.assets("lstm_sequences", lstm_candidate),
        {"ops": {"lstm_candidate": {"config": TINY_LSTM}}},
        raise_on_error=False,
    )
    assert not result.success
    assert calls["n"] == 4
    _no_running_runs()
    client = _client()
    experiment = client.get_experiment_by_name(tracking.LSTM_MODEL_NAME)
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "GPU fell off the bus" in runs[0].data.tags["error"]
    assert client.search_registered_models() == []


def test_data_and_config_problems_fail_without_retry_and_start_no_run(instance):
    bad_data = _materialize(
        instance,
        dg.AssetSelection.assets("lstm_sequences", lstm_candidate),
        {
            "ops": {
                "lstm_sequences": {"config": {"flat_validation": True}},
                "lstm_candidate": {"config": TINY_LSTM},
            }
        },
        raise_on_error=False,
    )
    assert not bad_data.success
    failure = [e for e in bad_data.get_step_failure_events() if e.step_key == "lstm_candidate"]
    assert "both classes" in failure[0].step_failure_data.error.message
    assert failure[0].step_failure_data.user_failure_data.metadata["positives"]

    no_gpu = _materialize(
        instance,
        dg.AssetSelection.assets("lstm_sequences", lstm_candidate),
        {"ops": {"lstm_candidate": {"config": {**TINY_LSTM, "device": "cuda"}}}},
        raise_on_error=False,
    )
    assert not no_gpu.success
    message = no_gpu.get_step_failure_events()[0].step_failure_data.error.message
    assert "CUDA is not available" in message
    experiment = _client().get_experiment_by_name(tracking.LSTM_MODEL_NAME)
    assert experiment is None or _client().search_runs([experiment.experiment_id]) == []


def test_tuning_resumes_its_study_and_the_candidate_takes_the_best_trial(instance):
    tune = {"ops": {"lstm_tuning": {"config": {"n_trials": 2, "epochs": 2, "device": "cpu"}}}}
    selection = dg.AssetSelection.assets("lstm_sequences", lstm_tuning)
    first = _metadata(_materialize(instance, selection, tune), "lstm_tuning")
    second = _metadata(_materialize(instance, selection, tune), "lstm_tuning")
    assert (first["trials_before"], first["trials_total"]) == (0, 2)
    assert (second["trials_before"], second["trials_total"]) == (2, 4)
    study = tuning.find_study("odds-lstm")
    assert study is not None and len(study.trials) == 4
    _no_running_runs()

    client = _client()
    children = client.search_runs(
        [client.get_experiment_by_name(tracking.LSTM_MODEL_NAME).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{second['mlflow_run_id']}'",
    )
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}

    candidate = _metadata(
        _materialize(
            instance,
            dg.AssetSelection.assets(lstm_candidate),
            {"ops": {"lstm_candidate": {"config": {**TINY_LSTM, "register_model": False}}}},
        ),
        "lstm_candidate",
    )
    best_params, number, _ = tuning.best_params("odds-lstm")
    assert candidate["params_source"] == f"optuna:odds-lstm#trial{number}"
    assert candidate["params"]["hidden"] == best_params["hidden"]
    _no_running_runs()


def test_resource_teardown_ends_runs_an_asset_left_open(instance):
    @dg.asset
    def sloppy(mlflow: MlflowResource) -> None:
        import mlflow as mlflow_lib

        tracking.configure(mlflow.uri())
        mlflow_lib.start_run(
            experiment_id=tracking.get_or_create_experiment("sloppy", mlflow.uri())
        )

    assert dg.materialize([sloppy], instance=instance, resources={"mlflow": MlflowResource()})
    _no_running_runs()


def test_training_definitions_load_without_heavy_imports():
    code = (
        "import sys; import odds_pipeline.defs.training, odds_pipeline.defs.tuning, odds_pipeline.defs.datasets; "
        "print([m for m in ('torch', 'mlflow', 'optuna', 'sklearn') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_assets_sit_in_their_groups_and_pools():
    from odds_pipeline.defs.resources import WarehouseResource

    defs = dg.Definitions(
        assets=[*DATASET_ASSETS, *TUNING_ASSETS, *CANDIDATE_ASSETS],
        resources={"warehouse": WarehouseResource(), "mlflow": MlflowResource()},
    )
    graph = defs.resolve_asset_graph()
    for asset in DATASET_ASSETS:
        assert graph.get(asset.key).group_name == "datasets"
    for asset in [*TUNING_ASSETS, *CANDIDATE_ASSETS]:
        node = graph.get(asset.key)
        assert node.group_name == "training"
        assert asset.op.pool == "gpu"
    # a study is optional: not an upstream that every Materialize would ask about
    assert dg.AssetKey("lstm_tuning") not in graph.get(lstm_candidate.key).parent_keys


def test_dataset_asset_defaults_follow_the_library_except_documented_ones():
    from odds_pipeline.datasets.sequences import LstmSequenceConfig, PairSequenceConfig

    lib = LstmSequenceConfig()
    ours = LstmSequencesConfig()
    for name in ("lookback_hours", "steps", "decision_offset_hours", "ttl_hours", "fresh_only"):
        assert getattr(ours, name) == getattr(lib, name), name
    assert tuple(ours.sides) == lib.sides
    pair_lib, pair_ours = PairSequenceConfig(), PairSequencesConfig()
    for name in ("horizon_minutes", "window_hours", "min_len", "max_book_pairs", "slope_steps"):
        assert getattr(pair_ours, name) == getattr(pair_lib, name), name
    assert tuple(pair_ours.markets) == pair_lib.markets


# ----------------------------------------------------------------------------- real chain


def test_real_chain_from_the_simulator_to_registered_candidates(instance):
    """simulated_market -> features -> datasets -> both candidates, tiny everywhere."""
    from odds_pipeline.defs.features import market_features, pair_features, quote_features
    from odds_pipeline.defs.ingestion import canonical_odds_tables, simulated_market
    from odds_pipeline.defs.resources import WarehouseResource

    assets = [
        simulated_market,
        canonical_odds_tables,
        quote_features,
        market_features,
        pair_features,
        *DATASET_ASSETS,
        *TUNING_ASSETS,
        *CANDIDATE_ASSETS,
    ]
    selection = dg.AssetSelection.assets(
        simulated_market,
        canonical_odds_tables,
        quote_features,
        market_features,
        pair_features,
        *DATASET_ASSETS,
        lstm_candidate,
        transformer_candidate,
    )
    result = dg.materialize(
        assets,
        instance=instance,
        selection=selection,
        resources={"warehouse": WarehouseResource(), "mlflow": MlflowResource()},
        run_config={
            "ops": {
                "simulated_market": {"config": {"n_events": 24, "seed": 5, "arbitrage_rate": 3.0}},
                "arbitrage_pair_sequences": {
                    "config": {"max_len": 16, "min_len": 4, "cut_stride": 64, "max_book_pairs": 3}
                },
                "lstm_candidate": {"config": TINY_LSTM},
                "transformer_candidate": {"config": {**TINY_PAIR, "epochs": 1}},
            }
        },
    )
    assert result.success
    _no_running_runs()
    lstm_data = _metadata(result, "lstm_sequences")
    assert Path(lstm_data["path"]).is_dir()
    assert Path(lstm_data["path"]).name.endswith(lstm_data["content_hash"][:12])
    lstm = _metadata(result, "lstm_candidate")
    assert "| oracle |" in lstm["evaluation"]  # every row is simulated: one table
    assert lstm["dataset_hash"] == lstm_data["content_hash"]
    for name in (tracking.LSTM_MODEL_NAME, tracking.TRANSFORMER_MODEL_NAME):
        assert _client().get_model_version_by_alias(name, tracking.CHALLENGER)
