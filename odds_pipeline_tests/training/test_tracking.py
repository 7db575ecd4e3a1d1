"""MLflow helpers and Optuna studies: runs always end, models serve, studies resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from odds_pipeline.training import tracking, tuning
from odds_pipeline_tests.mlflow_fixtures import mlflow_db_template, mlflow_store  # noqa: F401  (fixtures)


def _client():
    return tracking.client()


def _run(run_id: str):
    return _client().get_run(run_id)


def test_store_lives_under_the_state_home_with_absolute_paths(isolated_state_home):
    uri = tracking.tracking_uri()
    assert uri.startswith("sqlite:////")
    assert Path(uri.removeprefix("sqlite:///")) == isolated_state_home / "mlflow" / "mlflow.db"
    experiment_id = tracking.get_or_create_experiment("odds-lstm")
    location = _client().get_experiment(experiment_id).artifact_location
    assert location == (isolated_state_home / "mlflow" / "artifacts" / "odds-lstm").as_uri()
    assert tracking.get_or_create_experiment("odds-lstm") == experiment_id


def test_tracked_run_ends_finished_or_failed_and_closes_forgotten_nested_runs():
    import mlflow

    with tracking.tracked_run("exp", "ok") as run:
        tracking.log_params({"a": 1, "nested": {"b": [1, 2]}})
        tracking.log_metrics({"loss": 0.5, "undefined": float("nan"), "label": "x"}, step=1)
    ok = _run(run.info.run_id)
    assert ok.info.status == "FINISHED"
    assert ok.data.params == {"a": "1", "nested.b": "[1, 2]"}
    assert set(ok.data.metrics) == {"loss", "undefined"}

    with pytest.raises(RuntimeError, match="boom"), tracking.tracked_run("exp", "bad") as run:
        mlflow.start_run(nested=True)  # forgotten by the body
        raise RuntimeError("boom")
    bad = _run(run.info.run_id)
    assert bad.info.status == "FAILED"
    assert bad.data.tags["error"] == "RuntimeError: boom"
    assert mlflow.active_run() is None
    assert tracking.running_runs() == []


def test_expected_exceptions_end_finished_and_nested_runs_link_to_their_parent():
    class Pruned(Exception):
        pass

    with (
        tracking.tracked_run("exp", "parent") as parent,
        pytest.raises(Pruned),
        tracking.tracked_run("exp", "child", nested=True, finished_on=(Pruned,)) as child,
    ):
        raise Pruned
    assert _run(child.info.run_id).info.status == "FINISHED"
    assert _run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert _run(parent.info.run_id).info.status == "FINISHED"


def test_orphaned_runs_of_finished_dagster_runs_are_closed():
    client = _client()
    experiment_id = tracking.get_or_create_experiment("exp")
    dead = client.create_run(experiment_id, tags={tracking.DAGSTER_RUN_TAG: "dead"})
    alive = client.create_run(experiment_id, tags={tracking.DAGSTER_RUN_TAG: "alive"})
    closed = tracking.close_orphaned_runs(lambda run_id: run_id == "dead")
    assert closed == [dead.info.run_id]
    assert _run(dead.info.run_id).info.status == "KILLED"
    assert _run(alive.info.run_id).info.status == "RUNNING"
    client.set_terminated(alive.info.run_id)


def test_provenance_names_commit_versions_and_dataset():
    params = tracking.provenance_params("abc123")
    assert params["dataset_hash"] == "abc123"
    assert params["version.torch"].startswith("2.")
    assert params["git_commit"] == "unknown" or len(params["git_commit"]) == 40


def _lstm_example(n: int = 6, t: int = 5, f: int = 3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, t, f)).astype(np.float32)
    mask = np.ones((n, t), dtype=bool)
    mask[0, 2:] = False
    x[0, 3] = np.nan  # padded garbage must not matter
    return x, mask


def test_packing_puts_features_then_mask_and_zeroes_padding():
    x, mask = _lstm_example()
    x[1, 1, 0] = np.nan  # a real step without a value stays NaN ("no value")
    packed = tracking.pack_lstm_input(x, mask)
    assert packed.dtype == np.float32 and packed.shape == (6, 5, 4)
    assert np.isnan(packed).sum() == 1 and np.isnan(packed[1, 1, 0])
    assert (packed[0, 2:, :3] == 0).all()
    assert (packed[..., -1] == mask).all()
    pair = tracking.pack_pair_input(x, x, mask, np.array([0, 1, 2, 0, 1, 2]))
    assert pair.shape == (6, 5, 8)
    assert (pair[:, :, -1] == np.array([0, 1, 2, 0, 1, 2])[:, None]).all()


@pytest.mark.parametrize("kind", ["lstm", "pair"])
def test_logged_model_serves_one_float32_array_and_gets_the_challenger_alias(kind):
    import mlflow
    import torch

    from odds_pipeline.training.models import DualStreamArbTransformer, MaskedLSTM

    torch.manual_seed(0)
    x, mask = _lstm_example()
    x[1, 2, 1] = np.nan  # missing value on a real step: served like training (-> 0 after scaling)
    if kind == "lstm":
        model = MaskedLSTM(3, hidden=8, num_layers=1)
        packed = tracking.pack_lstm_input(x, mask)
        name = tracking.LSTM_MODEL_NAME
    else:
        model = DualStreamArbTransformer(3, d_model=8, n_heads=2, n_layers=1, mlp_hidden=8)
        packed = tracking.pack_pair_input(x, x[:, ::-1], mask, np.arange(6) % 3)
        name = tracking.TRANSFORMER_MODEL_NAME
    spec = tracking.ServingSpec(
        kind=kind,
        hparams=model.hparams,
        seq_len=5,
        feature_names=["a", "b", "c"],
        label="y",
        scaler={
            "mean": {k: [0.1, 0.0, -0.2] for k in ("x", "x_a", "x_b")},
            "std": {k: [2.0, 1.0, 0.0] for k in ("x", "x_a", "x_b")},
        },
        dataset_hash="d" * 16,
    )
    expected = tracking.SequenceScorer(model, spec).predict(packed)
    with tracking.tracked_run(name, "log-model"):
        info = tracking.log_sequence_model(model, spec, packed[:3])
        version = tracking.register_challenger(info.model_uri, name)
    assert tracking.running_runs() == []

    client = _client()
    assert client.get_model_version_by_alias(name, tracking.CHALLENGER).version == version.version
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@{tracking.CHALLENGER}")
    example = np.asarray(loaded.input_example, dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(example), expected[:3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.predict(packed), expected, rtol=1e-5, atol=1e-6)
    inputs = loaded.metadata.get_input_schema().inputs
    assert len(inputs) == 1 and inputs[0].type == np.dtype(np.float32)
    assert inputs[0].shape == (-1, 5, spec.n_channels)
    requirements = Path(mlflow.pyfunc.get_model_dependencies(info.model_uri)).read_text()
    assert "torch==" in requirements and "mlflow==" in requirements
    with pytest.raises(ValueError, match="expected a float32 array"):
        tracking.SequenceScorer(model, spec).predict(packed[..., :-1])


# ----------------------------------------------------------------------------- Optuna


def _quadratic(params, on_epoch):
    """A fake training run: the loss falls per epoch towards (lr - 3e-3)^2-ish."""
    target = abs(np.log10(params["lr"]) - np.log10(3e-3)) + params["dropout"]
    for epoch in range(1, 4):
        on_epoch(epoch, {"val_loss": target + 1.0 / epoch, "train_loss": target})
    return target, {"auc": 0.5}


def test_study_resumes_by_name_and_each_trial_is_a_nested_finished_run():
    with tracking.tracked_run("odds-lstm", "tuning-1") as parent:
        study = tuning.load_or_create_study("lstm-test", seed=1, n_startup_trials=2)
        first = tuning.run_study(study, _quadratic, kind="lstm", n_trials=3, experiment="odds-lstm")
    assert (first.trials_before, first.trials_after) == (0, 3)
    with tracking.tracked_run("odds-lstm", "tuning-2"):
        study = tuning.load_or_create_study("lstm-test", seed=1, n_startup_trials=2)
        second = tuning.run_study(
            study, _quadratic, kind="lstm", n_trials=2, experiment="odds-lstm"
        )
    assert (second.trials_before, second.trials_after) == (3, 5)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 5, "a resumed study must not replay the first session's points"

    best = tuning.best_params("lstm-test")
    assert best is not None
    best_params, number, value = best
    assert value == min(v for v in second.trials_table[tuning.OBJECTIVE] if not np.isnan(v))
    assert set(best_params) >= {"hidden", "lr", "dropout"}
    assert tuning.best_params("no-such-study") is None
    assert tuning.find_study("no-such-study") is None

    runs = _client().search_runs(
        [tracking.get_or_create_experiment("odds-lstm")],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert len(runs) == 3
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all("val_loss" in r.data.metrics for r in runs)
    assert tracking.running_runs() == []


def test_pruned_trials_end_finished_and_are_tagged():
    import optuna

    def noisy(params, on_epoch):
        # trial 0 and 1 complete low; later ones are clearly worse at epoch 2 -> pruned
        worse = 10.0 if params["hidden"] != -1 and noisy.calls >= 2 else 0.0
        noisy.calls += 1
        for epoch in range(1, 5):
            on_epoch(epoch, {"val_loss": worse + 1.0 / epoch})
        return worse + 0.25

    noisy.calls = 0
    with tracking.tracked_run("odds-lstm", "tuning"):
        study = tuning.load_or_create_study(
            "prune-test", seed=3, pruner_startup_trials=2, pruner_warmup_epochs=1
        )
        summary = tuning.run_study(study, noisy, kind="lstm", n_trials=4, experiment="odds-lstm")
    assert summary.states.get("PRUNED", 0) >= 1
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    run = _run(pruned[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["optuna.state"] == "PRUNED"
    assert tracking.running_runs() == []


def test_failing_trial_fails_the_session_and_its_run():
    def broken(params, on_epoch):
        raise ValueError("bad data")

    with (
        pytest.raises(ValueError, match="bad data"),
        tracking.tracked_run("odds-lstm", "tuning") as parent,
    ):
        study = tuning.load_or_create_study("fail-test")
        tuning.run_study(study, broken, kind="pair", n_trials=2, experiment="odds-lstm")
    assert _run(parent.info.run_id).info.status == "FAILED"
    assert tracking.running_runs() == []
