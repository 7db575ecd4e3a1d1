"""The shared training loop: learning, early stopping, callbacks, reproducibility on CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from odds_pipeline.training.loop import (
    DEVICE_ENV,
    TrainConfig,
    fit,
    predict_logits,
    predict_proba,
    select_device,
    to_tensors,
)
from odds_pipeline.training.models import DualStreamArbTransformer, MaskedLSTM

T, F = 8, 4
TRANSFORMER_KEYS = ("x_a", "x_b", "mask", "market_type")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: intra-op threads only add contention on a shared 2-core runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lstm_data(n: int, seed: int) -> dict[str, np.ndarray]:
    """Label = sign of the mean of feature 0 over real steps (plus noise): learnable."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, T, F)).astype(np.float32)
    lengths = rng.integers(1, T + 1, size=n)
    mask = np.arange(T)[None, :] < lengths[:, None]
    signal = (x[..., 0] * mask).sum(1) / lengths
    y = (signal + 0.1 * rng.normal(size=n) > 0).astype(np.float32)
    x[~mask] = 0.0
    return {"x": x, "mask": mask, "y": y, "event_id": np.array([f"e{i}" for i in range(n)])}


def _pair_data(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x_a = rng.normal(size=(n, T, F)).astype(np.float32)
    x_b = rng.normal(size=(n, T, F)).astype(np.float32)
    mask = np.arange(T)[None, :] < rng.integers(1, T + 1, size=n)[:, None]
    y = ((x_a[:, -1, 0] + x_b[:, -1, 0]) > 1.5).astype(np.float32)  # imbalanced
    return {"x_a": x_a, "x_b": x_b, "mask": mask, "market_type": rng.integers(0, 3, n), "y": y}


def _lstm() -> MaskedLSTM:
    return MaskedLSTM(F, hidden=16, num_layers=2, dropout=0.1)


def _config(**overrides: object) -> TrainConfig:
    base = {"epochs": 4, "batch_size": 64, "lr": 3e-3, "patience": 3, "device": "cpu"}
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def lstm_data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    return _lstm_data(384, 0), _lstm_data(192, 1)


def test_select_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    if (
        expected is None
        and getattr(torch.backends, "mps", None)
        and torch.backends.mps.is_available()
    ):
        expected = "mps"
    assert select_device().type == (expected or "cpu")
    assert select_device("cpu").type == "cpu"
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert select_device().type == "cpu"
    assert select_device("auto").type == (expected or "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


def test_fit_learns_restores_best_epoch_and_reports_history(lstm_data) -> None:
    train, val = lstm_data
    seen: list[tuple[int, dict[str, float]]] = []
    result = fit(_lstm, train, val, config=_config(), on_epoch=lambda e, m: seen.append((e, m)))
    assert result.epochs_run == len(seen) == len(result.history) <= 4
    assert [e for e, _ in seen] == list(range(1, result.epochs_run + 1))
    for row in result.history:
        assert set(row) >= {"train_loss", "val_loss", "lr", "seconds", "samples_per_s"}
        assert row["samples_per_s"] > 0 and math.isfinite(row["val_loss"])
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    best = result.history[result.best_epoch - 1]["val_loss"]
    assert result.best_val_loss == pytest.approx(best)
    assert best < math.log(2)  # better than a coin flip

    # the returned weights are the best epoch's: recomputing its validation loss agrees
    p = predict_proba(result.model, val)
    y = val["y"]
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert bce == pytest.approx(best, rel=1e-5)
    assert p.shape == (len(y),) and p.dtype == np.float64
    assert result.summary()["device"] == "cpu" and result.n_train == 384


def test_same_data_and_config_give_the_same_metrics_twice(lstm_data) -> None:
    train, val = lstm_data
    first = fit(_lstm, train, val, config=_config(epochs=2))
    second = fit(_lstm, train, val, config=_config(epochs=2))
    keys = ("train_loss", "val_loss", "lr")
    assert [[r[k] for k in keys] for r in first.history] == [
        [r[k] for k in keys] for r in second.history
    ]
    assert np.array_equal(predict_logits(first.model, val), predict_logits(second.model, val))
    other_seed = fit(_lstm, train, val, config=_config(epochs=2, seed=8))
    assert other_seed.history[0]["train_loss"] != first.history[0]["train_loss"]


def test_early_stopping_with_patience(lstm_data) -> None:
    train, val = lstm_data
    # lr 0: the validation loss never improves after epoch 1
    result = fit(_lstm, train, val, config=_config(epochs=10, lr=0.0, patience=2))
    assert result.stopped_early and result.stop_reason == "early_stopping"
    assert result.best_epoch == 1 and result.epochs_run == 3


def test_on_epoch_can_stop_or_abort(lstm_data) -> None:
    train, val = lstm_data
    result = fit(_lstm, train, val, config=_config(epochs=5), on_epoch=lambda e, m: e >= 2)
    assert result.stop_reason == "callback" and result.epochs_run == 2 and result.stopped_early

    class Pruned(Exception):
        pass

    def prune(epoch: int, metrics: dict[str, float]) -> None:
        raise Pruned(epoch)

    with pytest.raises(Pruned):
        fit(_lstm, train, val, config=_config(epochs=5), on_epoch=prune)


def test_cosine_schedule_reaches_the_floor_at_the_planned_end(lstm_data) -> None:
    train, val = lstm_data
    result = fit(_lstm, train, val, config=_config(epochs=3, patience=10, min_lr_ratio=0.1))
    assert result.stop_reason == "completed"
    lrs = [r["lr"] for r in result.history]
    assert lrs[0] < 3e-3 and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] == pytest.approx(3e-4)


def test_transformer_through_the_same_loop_with_pos_weight() -> None:
    train, val = _pair_data(256, 2), _pair_data(128, 3)

    def build() -> DualStreamArbTransformer:
        return DualStreamArbTransformer(F, d_model=16, n_heads=2, n_layers=2, mlp_hidden=16)

    result = fit(
        build,
        train,
        val,
        input_keys=TRANSFORMER_KEYS,
        config=_config(epochs=2, pos_weight="auto"),
    )
    positives = train["y"].sum()
    assert result.pos_weight == pytest.approx((len(train["y"]) - positives) / positives)
    p = predict_proba(result.model, val, input_keys=TRANSFORMER_KEYS, batch_size=50)
    assert p.shape == (128,) and np.all((p >= 0) & (p <= 1))

    # a function can assemble the inputs instead of a key list
    def inputs(batch):
        return batch["x_a"], batch["x_b"], batch["mask"], batch["market_type"]

    again = fit(build, train, val, input_keys=inputs, config=_config(epochs=2, pos_weight="auto"))
    assert again.history[0]["val_loss"] == result.history[0]["val_loss"]


def test_dataloader_path_with_workers(lstm_data) -> None:
    train, val = lstm_data
    result = fit(_lstm, train, val, config=_config(epochs=1, num_workers=1))
    assert result.epochs_run == 1 and math.isfinite(result.best_val_loss)


def test_bad_inputs_fail_with_a_clear_error(lstm_data) -> None:
    train, val = lstm_data
    with pytest.raises(ValueError, match="differ in length"):
        to_tensors({"x": np.zeros((3, 2)), "y": np.zeros(2)})
    with pytest.raises(KeyError, match="'label'"):
        fit(_lstm, train, val, label_key="label", config=_config(epochs=1))
    poisoned = dict(train, x=np.where(train["mask"][..., None], np.nan, train["x"]))
    with pytest.raises(FloatingPointError, match="epoch 1"):
        fit(_lstm, poisoned, val, config=_config(epochs=1))


def test_predict_proba_is_stable_for_extreme_logits() -> None:
    class Constant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.w

    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = predict_proba(Constant(), {"x": np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])}, ("x",))
    assert p[0] == 0.0 and p[-1] == 1.0 and p[2] == 0.5
    assert p[1] == pytest.approx(math.exp(-40.0), rel=1e-6)
