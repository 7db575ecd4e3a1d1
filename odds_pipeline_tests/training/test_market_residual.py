"""The market-residual LSTM: it starts as the market, serves exactly what it predicted in
training (calibration included), calibrates on validation only, ignores never-seen inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from odds_pipeline.datasets.scaling import fit_scaler
from odds_pipeline.datasets.sequences import SequenceDataset
from odds_pipeline.features.compute import LSTM_FEATURES
from odds_pipeline.training import candidate, tracking
from odds_pipeline.training.kinds import KINDS, LSTM_MARKET_FEATURE, lstm_market_channel
from odds_pipeline.training.loop import (
    TrainConfig,
    choose_calibration,
    fit,
    fit_platt,
    predict_logits,
    predict_proba,
)
from odds_pipeline.training.models import MarketResidualLSTM, MaskedLSTM

T = 6
NAMES = [*LSTM_FEATURES, "consensus_prob", "best_price", "sharp_source"]
F = len(NAMES)
MARKET = NAMES.index(LSTM_MARKET_FEATURE)
KIND = KINDS["lstm"]
PARAMS = {"hidden": 8, "num_layers": 1, "dropout": 0.0}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dataset(n_events: int = 120, seed: int = 0) -> SequenceDataset:
    """Home/away samples whose label follows a signal the market only half prices in.

    Real steps end at the decision; some values are NaN (unknown) and the ``tod_*``
    channels are NaN on every sample of the first half (an era with imputed kickoff times).
    """
    rng = np.random.default_rng(seed)
    n = 2 * n_events
    lengths = rng.integers(1, T + 1, size=n)
    mask = np.arange(T)[None, :] >= (T - lengths)[:, None]
    x = rng.normal(size=(n, T, F)).astype(np.float32)
    signal = rng.normal(size=n)
    p_true = 1.0 / (1.0 + np.exp(-signal))
    market = 1.0 / (1.0 + np.exp(-0.5 * signal))
    x[..., MARKET] = market[:, None]
    x[..., 0] = signal[:, None]  # the network can see what the market misses
    x[rng.random((n, T, F)) < 0.05] = np.nan  # some unknown values on real steps...
    x[np.arange(n), T - 1, MARKET] = market  # ...but the market at the decision is known
    for name in ("tod_sin", "tod_cos"):
        x[: n // 2, :, NAMES.index(name)] = np.nan
    x[~mask] = 0.0
    y = (rng.random(n) < p_true).astype(np.float32)
    events = np.repeat([f"ev{i:03d}" for i in range(n_events)], 2)
    commence = pd.Timestamp("2020-01-01", tz="UTC") + pd.to_timedelta(
        np.repeat(np.arange(n_events), 2), unit="D"
    )
    third = n_events // 3
    split = np.repeat(np.r_[["train"] * third, ["validation"] * third], 2)
    split = np.r_[split, ["test"] * (n - len(split))]
    meta = pd.DataFrame(
        {
            "event_id": events,
            "side": np.tile(["home", "away"], n_events),
            "commence_time": commence,
            "seq_len": mask.sum(1).astype(np.int64),
            "market_prob": market,
            "split": split,
        }
    )
    return SequenceDataset(
        name="lstm_sequences",
        mask=mask,
        y=y,
        meta=meta,
        feature_names=list(NAMES),
        config={"synthetic": True},
        x=x,
        times=np.zeros((n, T), dtype=np.int64),
        target="won",
    )


@pytest.fixture(scope="module")
def prepared():
    return candidate.prepare(_dataset(), KIND, "won")


@pytest.fixture(scope="module")
def trained(prepared):
    # calibration_alpha=None: the Platt fit is applied whatever its evidence, so the tests
    # below see a non-identity calibration that must travel to the served model
    config = TrainConfig(
        epochs=6, batch_size=32, lr=1e-2, patience=6, device="cpu", seed=3, calibration_alpha=None
    )
    factory = candidate.model_factory(KIND, prepared.n_features, PARAMS)
    return fit(
        factory,
        prepared.arrays["train"],
        prepared.arrays["validation"],
        input_keys=KIND.input_keys,
        config=config,
    )


def test_the_kind_builds_the_residual_network_on_the_market_channel():
    model = KIND.network(F, PARAMS)
    assert isinstance(model, MarketResidualLSTM)
    assert model.hparams["market_channel"] == lstm_market_channel(F) == MARKET
    assert isinstance(KIND.network(F, {**PARAMS, "market_residual": False}), MaskedLSTM)
    # a logged model's hparams pick its class: old plain LSTMs stay plain
    plain = MaskedLSTM(3, hidden=4, num_layers=1)
    assert isinstance(KIND.network_from_hparams(plain.hparams), MaskedLSTM)
    assert isinstance(KIND.network_from_hparams(model.hparams), MarketResidualLSTM)


def test_an_untrained_model_reproduces_the_market(prepared):
    torch.manual_seed(0)
    model = KIND.network(F, PARAMS).eval()
    test = prepared.arrays["test"]
    p = predict_proba(model, test, input_keys=KIND.input_keys)
    np.testing.assert_allclose(p, prepared.raw["test"].meta["market_prob"], atol=1e-6)
    # and through the served path: pack the raw rows, unpack, scale, run
    spec = tracking.ServingSpec(
        kind=KIND.name,
        hparams=dict(model.hparams),
        seq_len=T,
        feature_names=list(NAMES),
        label="won",
        scaler=prepared.scaler.to_dict(),
    )
    served = tracking.SequenceScorer(model, spec).predict(KIND.pack(prepared.raw["test"]))
    np.testing.assert_allclose(served, prepared.raw["test"].meta["market_prob"], atol=1e-6)


def test_rows_without_a_market_fall_back_to_the_learned_base():
    model = MarketResidualLSTM(4, hidden=4, market_channel=1).eval()
    x_raw = torch.tensor(
        [[[0.0, 0.7, 0.0, 0.0]], [[0.0, float("nan"), 0.0, 0.0]], [[0.0, 1.5, 0.0, 0.0]]]
    )
    mask = torch.ones(3, 1, dtype=torch.bool)
    x = torch.nan_to_num(x_raw)
    with torch.no_grad():
        p = torch.sigmoid(model(x, mask, x_raw)).numpy()
        _, known = model.market_logit(mask, x_raw)
        model.fallback_logit.fill_(1.0)
        moved = torch.sigmoid(model(x, mask, x_raw)).numpy()
    assert known.tolist() == [True, False, False]  # NaN and out-of-range are no market
    np.testing.assert_allclose(p, [0.7, 0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(moved[1:], 1 / (1 + np.exp(-1.0)), atol=1e-6)
    assert moved[0] == pytest.approx(0.7, abs=1e-6)
    # no real step at all: finite, the base
    empty = model(torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1, 2, 4))
    assert torch.isfinite(empty).all()


def test_the_served_model_equals_the_in_training_prediction(prepared, trained, tmp_path: Path):
    model = trained.model
    assert model.hparams["calibration"] != [1.0, 0.0]  # calibrated, and it must travel
    p_training = predict_proba(model, prepared.arrays["test"], input_keys=KIND.input_keys)
    market = prepared.raw["test"].meta["market_prob"].to_numpy()
    assert np.abs(p_training - market).max() > 1e-3  # it learned something
    spec = tracking.ServingSpec(
        kind=KIND.name,
        hparams=dict(model.hparams),
        seq_len=T,
        feature_names=list(NAMES),
        label="won",
        scaler=prepared.scaler.to_dict(),
    )
    (tmp_path / "spec.json").write_text(spec.to_json())
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    scorer = tracking.SequenceScorer.from_files(tmp_path / "spec.json", tmp_path / "weights.pt")
    assert (
        json.loads((tmp_path / "spec.json").read_text())["hparams"]["calibration"]
        == (model.hparams["calibration"])
    )
    packed = KIND.pack(prepared.raw["test"])
    assert (
        packed.shape == (len(prepared.raw["test"]), T, spec.n_channels) == (len(packed), T, F + 1)
    )
    np.testing.assert_allclose(scorer.predict(packed), p_training, rtol=1e-5, atol=1e-6)


def test_calibration_is_fit_on_the_validation_window_only(prepared, trained):
    """Platt on the validation logits, and nothing else: test rows would move it."""
    model = trained.model
    slope, intercept = model.hparams["calibration"]
    model.set_calibration(1.0, 0.0)
    try:
        logits = {
            s: predict_logits(model, prepared.arrays[s], input_keys=KIND.input_keys)
            for s in ("validation", "test")
        }
    finally:
        model.set_calibration(slope, intercept)
    y = {s: prepared.arrays[s]["y"] for s in ("validation", "test")}
    expected = fit_platt(logits["validation"], y["validation"])
    cal = trained.calibration
    assert (cal["fitted_slope"], cal["fitted_intercept"]) == pytest.approx(expected, abs=1e-9)
    assert cal["slope"] == slope and cal["intercept"] == intercept
    assert cal["applied"] == 1.0 and (slope, intercept) == pytest.approx(expected, abs=1e-9)
    leaked = fit_platt(
        np.r_[logits["validation"], logits["test"]], np.r_[y["validation"], y["test"]]
    )
    assert not np.allclose(leaked, expected, atol=1e-3)  # the check above would catch a leak


def test_calibration_is_applied_only_when_validation_shows_it():
    """A Platt fit of chance miscalibration stays off; a real one is applied (LR test)."""
    rng = np.random.default_rng(1)
    z = rng.normal(scale=1.0, size=760)
    calibrated = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(float)
    chance = choose_calibration(z, calibrated)
    assert chance["p_value"] >= 0.05 and chance["applied"] == 0.0
    assert (chance["slope"], chance["intercept"]) == (1.0, 0.0)
    assert chance["fitted_slope"] != 1.0  # a fit exists, it is just not used
    assert chance["val_log_loss_after"] == chance["val_log_loss_before"]
    off = (rng.random(z.size) < 1 / (1 + np.exp(-(0.5 * z - 0.4)))).astype(float)
    real = choose_calibration(z, off)
    assert real["p_value"] < 0.05 and real["applied"] == 1.0
    assert (real["slope"], real["intercept"]) == (real["fitted_slope"], real["fitted_intercept"])
    assert real["val_log_loss_after"] < real["val_log_loss_before"]
    always = choose_calibration(z, calibrated, alpha=None)
    assert always["applied"] == 1.0 and always["slope"] == chance["fitted_slope"]
    # two parameters against the identity: chi-square with 2 degrees of freedom
    assert real["p_value"] == pytest.approx(np.exp(-real["lr_statistic"] / 2))
    assert chance["p_value"] == pytest.approx(np.exp(-chance["lr_statistic"] / 2))


def test_a_window_that_cannot_judge_a_calibration_keeps_the_identity():
    one_class = choose_calibration(np.array([0.3, -0.2, 1.0]), np.ones(3), alpha=None)
    broken = choose_calibration(np.array([np.nan, 0.1]), np.array([0.0, 1.0]), alpha=None)
    for cal in (one_class, broken):
        assert (cal["slope"], cal["intercept"], cal["applied"]) == (1.0, 0.0, 0.0)


def test_fit_platt_recovers_a_known_miscalibration():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=20_000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-(0.5 * z - 0.3)))).astype(float)
    slope, intercept = fit_platt(z, y)
    assert slope == pytest.approx(0.5, abs=0.03) and intercept == pytest.approx(-0.3, abs=0.05)
    assert fit_platt(-z, y) == (1.0, 0.0)  # backwards ranking: the identity, not a flip


def test_a_channel_never_known_in_training_cannot_move_the_forecast(prepared, trained):
    """Time of day is NaN throughout the train window (imputed era): its weights stay 0."""
    model = trained.model
    test = prepared.raw["test"]
    k = [NAMES.index("tod_sin"), NAMES.index("tod_cos")]
    without = test.subset(np.arange(len(test)))
    without.x = test.x.copy()
    without.x[:, :, k] = np.where(test.mask[..., None], np.nan, 0.0)
    arrays = candidate.model_arrays(KIND, without, prepared.scaler, "won")
    p_known = predict_proba(model, prepared.arrays["test"], input_keys=KIND.input_keys)
    p_unknown = predict_proba(model, arrays, input_keys=KIND.input_keys)
    np.testing.assert_allclose(p_known, p_unknown, atol=1e-7)
    rows = prepared.raw["train"].x[:, :, k][prepared.raw["train"].mask]
    assert np.isnan(rows).all() and not np.isnan(test.x[:, :, k][test.mask]).all()


def test_training_arrays_carry_what_the_served_model_derives(prepared):
    arrays = prepared.arrays["train"]
    assert set(KIND.input_keys) <= set(arrays)
    raw = prepared.raw["train"]
    np.testing.assert_array_equal(np.isnan(arrays["x_raw"]), np.isnan(raw.x) & raw.mask[..., None])
    # the scaler was fit on train only, and the raw values are not scaled
    assert fit_scaler(raw).mean == prepared.scaler.mean
    np.testing.assert_array_equal(np.nan_to_num(arrays["x_raw"]), np.nan_to_num(raw.x))


def test_the_launchpad_calibration_level_reaches_training():
    """The LSTM candidate's config (Launchpad) sets the calibration test's level; None = always."""
    from odds_pipeline.defs.training import LstmTrainingConfig
    from odds_pipeline.training.kinds import CALIBRATION_ALPHA

    params = LstmTrainingConfig().model_dump()
    assert params["calibration_alpha"] == CALIBRATION_ALPHA
    assert candidate.train_config(params).calibration_alpha == CALIBRATION_ALPHA
    params["calibration_alpha"] = None
    assert candidate.train_config(params).calibration_alpha is None
