"""Issue #4 targets: model quality against the right baseline, measured on held-out time.

Run: .venv/bin/python benchmarks/bench_model_targets.py --part PART [options]
     PART = lstm-epl | lstm-epl-walk | lstm-sim | transformer-sim | transformer-real |
            determinism | all

Only the domain modules are used (sources, store, features, datasets, models, training,
evaluation): no Dagster, no MLflow. Every store is a DuckDB file in a temporary folder.
Training runs on CPU with one torch thread (on this shared 2-core machine two threads
were 8-14x slower for the transformer). Progress goes to stderr, one JSON object to stdout.

- lstm-epl: every EPL season of $ODDS_SHARED_DATA/football-data/E0 (one load per file),
  features, `build_lstm_sequences` with its defaults (72 h lookback, 24 steps, decision
  1 h before kickoff: football-data has pre-match prices at kickoff - 72 h and closing
  prices at kickoff, so one step is real). Split by commence time: train < --val-from
  (2019-07-01) <= validation < --test-from (2021-07-01) <= test; validation (2019/20,
  2020/21) drives early stopping (epoch 0 = the untrained model competes) and the
  post-hoc Platt calibration. The LSTM is the pipeline's (``KINDS["lstm"]``: the
  market-residual LSTM, logit(market) + a correction that starts at zero; ``--lstm-variant
  plain`` = the old MaskedLSTM), trained on ``candidate.model_arrays`` as the candidate is.
  Reported on the same test rows, overall and per side: the served model (Platt
  calibration applied only when its likelihood-ratio test on validation rejects the identity) and
  the model before calibration, against ``market_at_decision`` (meta ``market_prob``:
  de-vigged sharp book, else consensus, at the last real step: the gates' baseline) and,
  separately, against ``market_closing`` (the de-vigged closing price, see
  ``MARKET_DEFINITIONS``); Brier ratios with the gates' event-level paired bootstrap
  (10,000 resamples; target: upper 95% bound <= 1.00 vs the market at the decision);
  ECE-10 with an event-bootstrap interval beside the ECE a perfectly calibrated forecast
  shows with the same p and n; the quality gates' verdicts. Reference: the market
  probability recalibrated on train (logistic on logit p and side).
  ``covariate_shift_validation`` lists channels whose train-scaled validation values are
  far from N(0, 1) (time of day is NaN before 2019/20 now: imputed kickoff times);
  ``--drop-channels a,b`` removes channels (scaled value 0, raw value unknown).
- lstm-epl-walk: walk-forward on the same data, one fold per test season S
  (--walk-test-seasons 2015-2022, seasons by starting year, boundary 1 August): train on
  every season before S - --walk-val-seasons, validate on the seasons just before S, test on
  S; the folds' test rows pooled and judged as lstm-epl's. References fit on every season
  before S by logistic regression: the market recalibrated, + the other books' channels at
  the decision, + a goal-weighted Elo rating from results resolved before the decision.
- lstm-sim: the simulator (--events 1500, seed 7), split 70/15/15 of events by commence
  time; model, market and oracle (true probability at the decision time) side by side.
- transformer-sim: `build_arbitrage_pair_sequences` on the simulator with more positives
  than the defaults: arbitrage_rate 2, horizon 120 min, cut_stride 16 (default 32),
  max_len 32 (sequences average ~25 real steps; halves the cost), 600 events.
  DualStreamArbTransformer (d_model 32, 2 layers, ff_mult 2) on ``arb_ahead``, pos_weight
  auto, vs the classical rules on the same test rows: Σ implied at the last step, its
  window minimum, its slope, each scored with the a-priori orientation (1 - Σ, 1 - min Σ,
  -slope; ranks, AUCs only) and calibrated on the train window (1-D logistic: orientation
  learned). Also logistic regressions on all three rules (with and without market-type
  dummies: the model sees the market type), the positive rate (AUC-PR of a random score)
  and an event-level bootstrap of AUC-PR(model) - AUC-PR(best rule). The train split is
  cut to --max-train-rows (60k) by keeping every positive and a seeded random subset of
  negatives (CPU time; ranking metrics do not depend on the train prior); validation and
  test are whole.
- transformer-real: the same on the real MLB and WNBA change logs (features.
  load_odds_api_change_log; in-play quotes deleted, so pre-match only; every pair of the
  11 books, labels from the data), 70/15/15 of events by commence time; cut_stride 16
  (MLB) and 4 (WNBA) so each league has 150-420k samples.
- determinism: the LSTM trained twice on the same small simulator dataset and config on
  CPU; metrics, predictions and weights compared bit for bit (run the command twice to
  compare ``predictions_sha256`` across processes).

Memory (issue #10, part 3): each part reports ``part_peak_rss_mb`` and
``phase_peak_rss_mb`` (load, features, build, split, subsample, scale, train, predict,
report_total), the peak resident set (VmHWM, file-backed pages included) while the phase
ran: the peak is reset at every phase boundary (/proc/self/clear_refs) and a nested phase
counts in its parents. The transformer parts build the pair dataset chunk by chunk into
``.npy`` files in the part's temporary folder (``--chunk-samples``), split it as memory-
mapped views, gather only the subsampled train rows, scale into memory-mapped files and
train from those batch by batch; DuckDB gets ``SET memory_limit`` (``--duckdb-memory-limit``).
Same values as the in-memory path (odds_pipeline_tests/test_lean_datasets.py).

The feature store trips a pandas 2.3 bug (see `_to_datetime_without_cache`): worked
around here for the duration of each part, to be fixed in feature_store.py.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import SHARED_DATA, emit, peak_rss_mb

from odds_pipeline.datasets import scaling as S
from odds_pipeline.datasets import sequences as D
from odds_pipeline.features import compute as F
from odds_pipeline.ingestion.sources import football_data, load_id_for
from odds_pipeline.ingestion.sources.simulator import SimulatorConfig, generate
from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.training.baselines import rank01
from odds_pipeline.training.evaluation import binary_metrics
from odds_pipeline.training.kinds import CALIBRATION_ALPHA

PARTS = (
    "lstm-epl",
    "lstm-epl-walk",
    "lstm-sim",
    "transformer-sim",
    "transformer-real",
    "determinism",
)
RULES = {"sum_now": "implied_sum_last", "sum_min": "implied_sum_min", "slope": "implied_sum_slope"}


# --------------------------------------------------------------------------- helpers


@contextmanager
def _to_datetime_without_cache() -> Iterator[None]:
    """Work around a pandas 2.3 bug hit by ``FeatureStore.get_historical_features``.

    ``pd.to_datetime(int64_series_with_NA, unit="us", utc=True)`` can raise "'indices'
    contains values less than allowed" when pandas decides to cache (many repeated
    values, some NA: entity rows with no feature row). feature_store.py calls it that way
    for the ``*_observed_at`` columns (include_timestamps=True, which build_lstm_sequences
    uses), so the LSTM builds fail on the simulator (>= 300 events) and on EPL. Until
    feature_store passes ``cache=False`` itself, masked-integer inputs are converted
    without the cache here (same values, NA -> NaT).
    """
    original = pd.to_datetime

    def patched(arg: Any, *a: Any, **k: Any) -> Any:
        if isinstance(arg, pd.Series) and isinstance(arg.dtype, pd.Int64Dtype):
            k.setdefault("cache", False)
        return original(arg, *a, **k)

    pd.to_datetime = patched
    try:
        yield
    finally:
        pd.to_datetime = original


def _r(value: Any, digits: int = 5) -> Any:
    if isinstance(value, dict):
        return {k: _r(v, digits) for k, v in value.items()}
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else round(float(value), digits)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- peak RSS by phase

_PHASE_STACK: list[str] = []
_PHASE_PEAKS: dict[str, float] = {}


def _vm_hwm_mb() -> float:
    """This process's peak resident set since the last reset (VmHWM), in MB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()  # no /proc: the process's peak so far


def _phase_boundary() -> None:
    """Credit the peak since the last boundary to every open phase, then reset it."""
    peak = _vm_hwm_mb()
    for name in _PHASE_STACK:
        _PHASE_PEAKS[name] = max(_PHASE_PEAKS.get(name, 0.0), peak)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


@contextmanager
def _phase(name: str) -> Iterator[None]:
    """Peak RSS while the block runs, kept under ``name`` (the maximum over repeats)."""
    _phase_boundary()
    _PHASE_STACK.append(name)
    try:
        yield
    finally:
        _phase_boundary()
        _PHASE_STACK.pop()


def _phase_peaks() -> dict[str, float]:
    out = {k: round(v, 1) for k, v in _PHASE_PEAKS.items()}
    _PHASE_PEAKS.clear()
    return out


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    m = binary_metrics(y, p)
    keep = ("n", "positives", "base_rate", "mean_p", "brier", "log_loss", "auc_roc", "auc_pr")
    return _r({k: m[k] for k in (*keep, "ece_10", "accuracy")})


def _compute_features(con, *, lstm: bool = True, pairs: bool = False) -> dict[str, Any]:
    """quote features, then market features (LSTM) and/or every pair of books' features."""
    out: dict[str, Any] = {}
    start = time.perf_counter()
    F.compute_quote_features(con)
    out["quote_features_s"] = round(time.perf_counter() - start, 2)
    if lstm:
        start = time.perf_counter()
        F.compute_market_features(con)
        out["market_features_s"] = round(time.perf_counter() - start, 2)
    if pairs:
        start = time.perf_counter()
        F.compute_pair_features(con)
        out["pair_features_s"] = round(time.perf_counter() - start, 2)
        out["pair_feature_rows"] = int(
            con.execute(f"SELECT count(*) FROM {F.PAIR_TABLE}").fetchone()[0]
        )
    return out


def _simulate(store: OddsStore, cfg: SimulatorConfig) -> tuple[Any, dict[str, Any]]:
    start = time.perf_counter()
    result = generate(cfg)
    store.replace_load(result.notes["load_id"], "simulator", result)
    return result.notes["truth"], {
        "events": cfg.n_events,
        "seed": cfg.seed,
        "arbitrage_rate": cfg.arbitrage_rate,
        "quotes": len(result.quotes),
        "load_s": round(time.perf_counter() - start, 2),
    }


def _split(
    ds: D.SequenceDataset, cuts: tuple[str, str] | None, train_from: str | None = None
) -> dict[str, D.SequenceDataset]:
    """Time split (explicit cuts, else 70/15/15 of events); ``train_from`` drops older rows."""
    if train_from:
        start = pd.Timestamp(train_from, tz="UTC")
        ds = ds.subset((pd.to_datetime(ds.meta["commence_time"], utc=True) >= start).to_numpy())
    return D.split_by_time(ds, cuts=cuts) if cuts else D.split_by_time(ds, (0.7, 0.15, 0.15))


def _scaled(
    splits: dict[str, D.SequenceDataset], label: str | None = None, out_dir: Path | None = None
) -> dict:
    """Train-fit scaler applied to every split; with ``out_dir`` into memory-mapped files."""
    scaler = S.fit_scaler(splits["train"])
    return {
        s: S.apply_scaler(d, scaler, out_dir=None if out_dir is None else out_dir / s).to_arrays(
            label
        )
        for s, d in splits.items()
    }


def _lstm_arrays(splits: dict[str, D.SequenceDataset]) -> dict:
    """What the LSTM candidate trains on: train-fit scaler, plus the served model's raw inputs."""
    from odds_pipeline.training.candidate import model_arrays
    from odds_pipeline.training.kinds import KINDS

    scaler = S.fit_scaler(splits["train"])
    return {s: model_arrays(KINDS["lstm"], d, scaler, "won") for s, d in splits.items()}


def _split_summary(splits: dict[str, D.SequenceDataset], label: str | None = None) -> dict:
    out = {}
    for name, d in splits.items():
        y = d.labels[label or d.target]
        c = d.meta["commence_time"]
        out[name] = {
            "rows": len(d),
            "events": int(d.meta["event_id"].nunique()),
            "positives": int(np.sum(y)),
            "commence": [str(c.min())[:16], str(c.max())[:16]] if len(d) else None,
        }
    return out


# Per kind: its network parameters and TrainConfig settings from the part's options (the
# network itself comes from the kinds registry, as in the pipeline's candidates).
NETWORK_PARAMS = {
    "lstm": lambda a: {
        "hidden": a.hidden,
        "num_layers": a.num_layers,
        "dropout": a.dropout,
        "market_residual": a.lstm_variant == "residual",
    },
    "pair": lambda a: {
        "d_model": a.d_model,
        "n_heads": 4,
        "n_layers": 2,
        "cross_from_layer": 1,
        "dropout": a.dropout,
        "mlp_hidden": a.d_model,
        "ff_mult": 2,
    },
}
TRAIN_SETTINGS = {
    # keep_initial / calibrate as the pipeline's candidate (candidate.train_config, fit)
    "lstm": lambda a: {
        "torch_threads": 1,
        "keep_initial": not a.no_keep_initial,
        "calibration_alpha": None if a.calibration_alpha == "none" else float(a.calibration_alpha),
    },
    "pair": lambda a: {"pos_weight": _pos_weight(a.pos_weight), "torch_threads": a.threads},
}


def _train(kind: str, n_features: int, arrays: dict, args: argparse.Namespace, **overrides):
    """fit() with the kind's network and the part's TrainConfig; (TrainResult, test p, info)."""
    import torch

    from odds_pipeline.training.kinds import KINDS
    from odds_pipeline.training.loop import TrainConfig, fit, predict_proba
    from odds_pipeline.training.models import count_parameters

    model_kind = KINDS[kind]
    params = NETWORK_PARAMS[kind](args)

    def factory():
        return model_kind.network(n_features, params)

    keys = model_kind.input_keys
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        patience=args.patience,
        seed=args.seed,
        device="cpu",
        **TRAIN_SETTINGS[kind](args),
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    with _phase("train"):
        res = fit(factory, arrays["train"], arrays["validation"], input_keys=keys, config=cfg)
    with_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads or with_threads)
    try:
        with _phase("predict"):
            p = predict_proba(res.model, arrays["test"], input_keys=keys)
    finally:
        torch.set_num_threads(with_threads)
    info = {
        **_r(res.summary()),
        "network": type(res.model).__name__,
        "network_params": params,
        "parameters": count_parameters(res.model),
        "val_loss_by_epoch": [round(h["val_loss"], 5) for h in res.history],
        "train_samples_per_s": round(
            float(np.median([h["samples_per_s"] for h in res.history])), 1
        ),
        "config": {k: v for k, v in cfg.to_dict().items() if k not in ("num_workers",)},
    }
    return res, p, info


def _pos_weight(value: str) -> float | str | None:
    return None if value == "none" else "auto" if value == "auto" else float(value)


# --------------------------------------------------------------------------- LSTM parts


# What each market forecast is (the report says which is which).
MARKET_DEFINITIONS = {
    "market_at_decision": "de-vigged market probability at the decision time (kickoff - "
    "decision offset): meta market_prob = market_features.sharp_prob (de-vigged sharp books, "
    "else consensus) at the sample's last real step; on football-data the pre-match prices "
    "(observed at kickoff - 72 h). What a user could have bet at the decision: the gates' baseline.",
    "market_closing": "de-vigged closing probability: market_features.sharp_prob at the latest "
    "market row with observed_at <= kickoff and > the decision time (football-data's closing "
    "columns, observed at kickoff); NaN when no price arrived after the decision. Known only "
    "after the decision: a reference, not an available baseline.",
}


def _closing_probs(con, decisions: pd.DataFrame) -> np.ndarray:
    """De-vigged closing probability per (event, side) row of ``decisions`` (see above)."""
    closing = con.execute(
        """
        SELECT m.event_id, m.outcome AS side,
               arg_max(m.sharp_prob, m.observed_at) AS closing_prob,
               max(m.observed_at) AS closing_at
        FROM market_features m JOIN events e ON e.event_id = m.event_id
        WHERE m.market = 'h2h' AND m.sharp_prob IS NOT NULL
          AND m.observed_at <= e.commence_time
        GROUP BY m.event_id, m.outcome
        """
    ).df()
    rows = decisions[["event_id", "side", "decision_time"]].merge(
        closing, on=["event_id", "side"], how="left"
    )
    after = pd.to_datetime(rows["closing_at"], utc=True) > pd.to_datetime(
        rows["decision_time"], utc=True
    )
    return np.where(after.to_numpy(), rows["closing_prob"].to_numpy(np.float64), np.nan)


def _ratio_ci(y: np.ndarray, p: np.ndarray, base: np.ndarray, events: np.ndarray) -> dict:
    """Brier(p) / Brier(base), event-level paired bootstrap 95% CI (the gate's own routine)."""
    from odds_pipeline.registry.gates import paired_bootstrap_ratio

    res = paired_bootstrap_ratio(y, p, base, events, metric="brier", n_resamples=10_000, seed=7)
    return _r(
        {
            "ratio": res["ratio"],
            "ci95": [res["ci_low"], res["ci_high"]],
            "brier": res["model"],
            "baseline_brier": res["base"],
            "n": res["n"],
            "events": res["n_groups"],
        }
    )


def _ece_report(
    y: np.ndarray, p: np.ndarray, events: np.ndarray, n: int = 2000, bins: int = 10
) -> dict[str, Any]:
    """ECE-10 with an event-level bootstrap 95% interval, and the ECE a perfectly calibrated
    forecast with the same probabilities shows on the same n (y ~ Bernoulli(p), 2000
    simulations, seed 7, as the calibration gate): its 2.5/50/97.5% quantiles and the 95%
    quantile the gate uses.

    ECE sums absolute per-bin gaps, so it is biased upwards and resampling adds to the
    bias: the bootstrap distribution sits above the point estimate (the interval may even
    exclude it). The comparison that says "calibrated or not" is with the perfectly
    calibrated forecast's ECE on the same n, not with 0.
    """
    from odds_pipeline.registry.gates import ece, ece_null_quantile

    codes, inv = np.unique(events, return_inverse=True)
    idx = np.minimum((p * bins).astype(np.intp), bins - 1)
    gaps = np.zeros((len(codes), bins))
    np.add.at(gaps, (inv, idx), p - y)
    counts = np.bincount(inv, minlength=len(codes)).astype(np.float64)
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(codes), size=(n, len(codes)))
    w = np.stack([np.bincount(d, minlength=len(codes)) for d in draws]).astype(np.float64)
    boot = np.abs(w @ gaps).sum(axis=1) / (w @ counts)
    return _r(
        {
            "ece": ece(y, p, bins),
            "bootstrap_ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "bootstrap_median": float(np.median(boot)),
            "perfectly_calibrated_same_p_n": {
                f"q{round(q * 1000) / 10:g}": ece_null_quantile(p, bins=bins, q=q)
                for q in (0.025, 0.5, 0.95, 0.975)
            },
            "n": int(len(y)),
        }
    )


def _uncalibrated(res: Any, arrays: dict) -> np.ndarray | None:
    """Test probabilities of the trained model without its post-hoc calibration (if any)."""
    from odds_pipeline.training.kinds import KINDS
    from odds_pipeline.training.loop import predict_proba

    model = res.model
    if not callable(getattr(model, "set_calibration", None)):
        return None
    slope, intercept = model.hparams["calibration"]
    model.set_calibration(1.0, 0.0)
    try:
        return predict_proba(model, arrays["test"], input_keys=KINDS["lstm"].input_keys)
    finally:
        model.set_calibration(slope, intercept)


def _lstm_report(
    ds: D.SequenceDataset,
    cuts: tuple[str, str] | None,
    args: argparse.Namespace,
    oracle: bool = False,
) -> dict[str, Any]:
    splits = _split(ds, cuts, args.train_from)
    out: dict[str, Any] = {"splits": _split_summary(splits)}
    arrays = _lstm_arrays(splits)
    out["covariate_shift_validation"] = _shifted_channels(arrays, ds.feature_names)
    if args.drop_channels:
        idx = [ds.feature_names.index(c) for c in args.drop_channels.split(",")]
        for a in arrays.values():
            a["x"][..., idx] = 0.0  # the channel's train mean: no signal, no shift
            a["x_raw"][..., idx] = np.nan  # and, for the residual LSTM, not known
        out["dropped_channels"] = args.drop_channels.split(",")
    _log(f"training LSTM ({args.lstm_variant}) on {len(splits['train'])} rows")
    res_fit, p, info = _train("lstm", len(ds.feature_names), arrays, args)
    out["training"] = info
    test = splits["test"]
    y = test.y.astype(np.float64)
    events = test.meta["event_id"].to_numpy(dtype=object)
    market = test.meta["market_prob"].to_numpy(np.float64)
    rows = np.isfinite(market)
    forecasts = {"model": p}
    p_uncal = _uncalibrated(res_fit, arrays)
    if p_uncal is not None:
        forecasts["model_uncalibrated"] = p_uncal
    forecasts["market_at_decision"] = market
    if oracle:
        truth = test.meta["true_prob"].to_numpy(np.float64)
        rows &= np.isfinite(truth)
        forecasts["oracle"] = truth
    out["test_rows_without_baseline"] = int((~rows).sum())
    out["baseline_source"] = {
        str(k): int(v)
        for k, v in test.meta.loc[rows, "market_prob_source"].value_counts(dropna=False).items()
    }
    # reference: the market probability recalibrated on the train window (logistic on
    # logit(p) and the side), what a model that only recalibrates the market would score
    train = splits["train"]
    tr_rows = np.isfinite(train.meta["market_prob"].to_numpy(np.float64))
    recal = _logreg(_market_design(train.meta)[tr_rows], train.y[tr_rows])
    forecasts["market_recalibrated_on_train"] = recal(_market_design(test.meta))
    closing = (
        test.meta["closing_prob"].to_numpy(np.float64) if "closing_prob" in test.meta else None
    )
    if closing is not None:
        forecasts["market_closing"] = closing
        out["market_definitions"] = MARKET_DEFINITIONS
    sides = test.meta["side"].to_numpy(dtype=object)
    groups = {"overall": rows, **{f"side_{s}": rows & (sides == s) for s in np.unique(sides)}}
    res: dict[str, Any] = {}
    for g, sel in groups.items():
        block = {
            name: _metrics(y[sel & np.isfinite(f)], f[sel & np.isfinite(f)])
            for name, f in forecasts.items()
        }
        block["brier_ratio_model_market_at_decision"] = _r(
            block["model"]["brier"] / block["market_at_decision"]["brier"]
        )
        if oracle:
            block["brier_ratio_oracle_market"] = _r(
                block["oracle"]["brier"] / block["market_at_decision"]["brier"]
            )
        res[g] = block
    res["overall"]["mean_abs_model_minus_market_at_decision"] = _r(
        float(np.mean(np.abs(p - market)[rows]))
    )
    out["test"] = res
    # Brier ratios with event-bootstrap CIs: against the market at the decision time (the
    # baseline), and separately against the closing price (on rows that have one)
    compared = ("model", "model_uncalibrated", "market_recalibrated_on_train")
    vs_decision = {
        k: _ratio_ci(y[rows], forecasts[k][rows], market[rows], events[rows])
        for k in compared
        if k in forecasts
    }
    out["brier_ratio_vs_market_at_decision"] = vs_decision
    if closing is not None:
        has_close = rows & np.isfinite(closing)
        out["brier_ratio_vs_market_closing"] = {
            k: _ratio_ci(
                y[has_close], forecasts[k][has_close], closing[has_close], events[has_close]
            )
            for k in ("model", "model_uncalibrated", "market_at_decision")
            if k in forecasts
        }
        out["brier_ratio_vs_market_closing"]["rows_with_closing_price"] = int(has_close.sum())
    out["ece_10"] = {
        k: _ece_report(
            y[rows & np.isfinite(f)], f[rows & np.isfinite(f)], events[rows & np.isfinite(f)]
        )
        for k, f in forecasts.items()
        if k != "market_recalibrated_on_train"
    }
    if p_uncal is not None:
        cal = res_fit.calibration or {}
        out["calibration"] = {
            "method": "Platt (slope, intercept) on the output logit, fit on the validation window",
            **_r(cal),
            "test_brier_before_after": [
                res["overall"]["model_uncalibrated"]["brier"],
                res["overall"]["model"]["brier"],
            ],
            "test_log_loss_before_after": [
                res["overall"]["model_uncalibrated"]["log_loss"],
                res["overall"]["model"]["log_loss"],
            ],
            "test_ece_before_after": [
                out["ece_10"]["model_uncalibrated"]["ece"],
                out["ece_10"]["model"]["ece"],
            ],
        }
    head = vs_decision["model"]
    out["target"] = {
        "brier_ratio_vs_market_at_decision_upper_le_1_00": head["ci95"][1] is not None
        and head["ci95"][1] <= 1.0,
        "model": "the served model (post-hoc calibration applied only where validation shows it)",
        "ratio": head["ratio"],
        "ci95": head["ci95"],
    }
    out["quality_gates"] = _gates(
        y,
        p,
        market,
        events,
        "brier",
        "market",
        splits["train"].y,
    )
    return out


def _gates(
    y: np.ndarray,
    p: np.ndarray,
    baseline: np.ndarray,
    events: np.ndarray,
    metric: str,
    baseline_name: str,
    y_train: np.ndarray,
) -> dict[str, Any]:
    """The quality gates' verdicts (registry.decision, default thresholds) on these test rows.

    No champion (a first promotion); the dataset checks are the pipeline's, not a benchmark's.
    """
    from odds_pipeline.registry.decision import GateThresholds, judge

    rows = pd.DataFrame(
        {"event_id": events.astype(str), "y": y, "model": np.clip(p, 0, 1), "baseline": baseline}
    )
    info = {
        "metric": metric,
        "baseline_name": baseline_name,
        "dataset_hash": "benchmark",
        "train_rows": len(y_train),
        "train_positives": int(np.sum(y_train)),
    }
    results = judge(
        rows,
        info,
        GateThresholds(),
        champion=None,
        dataset_hash_now="benchmark",
        dataset_verified=True,
        steps_after_decision=0,
    )
    skip = ("dataset_hash", "point_in_time", "not_worse_than_champion")
    verdicts = {k: r.summary for k, r in results.items() if k not in skip}
    return {"promoted": all(r.passed for k, r in results.items()), "gates": verdicts}


def _market_design(meta: pd.DataFrame) -> np.ndarray:
    p = np.clip(meta["market_prob"].to_numpy(np.float64), 1e-6, 1 - 1e-6)
    side = meta["side"].to_numpy(dtype=object)
    return np.c_[np.log(p / (1 - p)), side == "home", side == "draw"].astype(np.float64)


def _shifted_channels(arrays: dict, names: list[str], limit: float = 3.0) -> dict[str, Any]:
    """Label-free check: channels whose scaled values on validation are far from N(0, 1).

    A channel nearly constant in train (e.g. time of day when kickoff times are imputed)
    gets a tiny std, so later windows show huge z-scores the model never saw in training.
    """
    out = {}
    val = arrays["validation"]
    real = val["x"][val["mask"]]
    if not len(real):
        return out
    for i, name in enumerate(names):
        sd, mu = float(real[:, i].std()), float(real[:, i].mean())
        if sd > limit or abs(mu) > limit:
            out[name] = {"val_std_z": round(sd, 2), "val_mean_z": round(mu, 2)}
    return out


def _epl_dataset(args: argparse.Namespace, root: Path) -> tuple[Any, dict[str, Any], OddsStore]:
    """Every EPL season loaded, features, the LSTM dataset (+ closing prices): (ds, info, store)."""
    paths = sorted((SHARED_DATA / "football-data" / "E0").glob("E0_*.csv"))
    if not paths:
        return None, {"skipped": f"no EPL files under {SHARED_DATA / 'football-data' / 'E0'}"}, None
    store = OddsStore(root / "epl.duckdb")
    start = time.perf_counter()
    per_load = {load_id_for("football_data", p): football_data.parse_file(p) for p in paths}
    store.replace_loads("football_data", per_load)
    out: dict[str, Any] = {
        "files": len(paths),
        "seasons": [paths[0].stem[3:], paths[-1].stem[3:]],
        "quotes": int(sum(len(r.quotes) for r in per_load.values())),
        "load_s": round(time.perf_counter() - start, 2),
    }
    del per_load
    cfg = D.LstmSequenceConfig(
        decision_offset_hours=args.decision_offset_hours,
        sides=tuple(args.sides.split(",")),
    )
    with store.connection() as con:
        out.update(_compute_features(con))
        start = time.perf_counter()
        ds = D.build_lstm_sequences(con, cfg)
        out["build_s"] = round(time.perf_counter() - start, 2)
        ds.meta["closing_prob"] = _closing_probs(con, ds.meta)
    out["dataset"] = {
        "rows": len(ds),
        "features": len(ds.feature_names),
        "seq_len_mean": round(float(ds.mask.sum(1).mean()), 3),
        "stats": {k: v for k, v in ds.stats.items()},
        "config": {"decision_offset_hours": cfg.decision_offset_hours, "sides": cfg.sides},
    }
    _log(f"EPL dataset {len(ds)} rows")
    return ds, out, store


def part_lstm_epl(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    ds, out, _ = _epl_dataset(args, root)
    if ds is None:
        return out
    out.update(_lstm_report(ds, (args.val_from, args.test_from), args))
    return out


def _season_start(commence: pd.Series) -> np.ndarray:
    """Football season of each kickoff, by its starting year.

    The boundary is 1 August: every EPL season of 2000-2023 starts after it, and 2019/20,
    delayed by COVID, ended on 26 July 2020 (a 1 July boundary put its last 66 matches in
    the next season).
    """
    t = pd.to_datetime(commence, utc=True)
    return np.where(t.dt.month >= 8, t.dt.year, t.dt.year - 1).astype(int)


def _elo_difference(
    con, decision_offset_hours: float, k: float = 20.0, home_edge: float = 60.0
) -> dict[str, float]:
    """Goal-weighted Elo: home rating minus away rating at each event's decision time.

    Point in time: a result updates the ratings only once its ``resolved_at`` is at or
    before the decision time (kickoff - ``decision_offset_hours``) of the event being rated,
    so matches played at the same time never see each other. A reference built from results
    alone (information the odds may not carry).
    """
    rows = con.execute(
        """
        SELECT e.event_id, e.commence_time, e.home_team, e.away_team,
               r.home_score, r.away_score, r.resolved_at
        FROM events e LEFT JOIN results r USING (event_id)
        ORDER BY e.commence_time, e.event_id
        """
    ).df()
    done = rows.dropna(subset=["home_score", "away_score", "resolved_at"]).sort_values(
        "resolved_at", kind="stable"
    )
    pending = list(done.itertuples(index=False))
    rating: dict[str, float] = {}
    before: dict[str, float] = {}
    applied = 0
    offset = pd.Timedelta(hours=decision_offset_hours)
    for ev in rows.itertuples(index=False):
        decision = ev.commence_time - offset
        while applied < len(pending) and pending[applied].resolved_at <= decision:
            r = pending[applied]
            a, b = rating.get(r.home_team, 1500.0), rating.get(r.away_team, 1500.0)
            expected = 1.0 / (1.0 + 10 ** (-(a + home_edge - b) / 400))
            diff = r.home_score - r.away_score
            score = 1.0 if diff > 0 else 0.5 if diff == 0 else 0.0
            step = k * (1.0 + math.log1p(abs(diff))) * (score - expected)
            rating[r.home_team], rating[r.away_team] = a + step, b - step
            applied += 1
        before[ev.event_id] = rating.get(ev.home_team, 1500.0) - rating.get(ev.away_team, 1500.0)
    return before


# Channels of the last step a bookmaker-savvy user could add to the market price: the
# consensus of the other books, how far retail is from sharp, their spread, the best price.
BOOK_CHANNELS = ("consensus_prob", "retail_minus_sharp", "odds_std", "best_price", "n_books")


def _reference_designs(ds: D.SequenceDataset, elo: dict[str, float]) -> dict[str, np.ndarray]:
    """Design matrices of the logistic references (fit on everything before a test season)."""
    meta = ds.meta
    market = _market_design(meta)
    last = ds.x[np.arange(len(ds)), np.maximum(ds.mask.sum(1) - 1, 0)]
    book = np.c_[tuple(last[:, ds.feature_names.index(c)] for c in BOOK_CHANNELS)]
    consensus = np.clip(np.nan_to_num(book[:, 0], nan=0.5), 1e-6, 1 - 1e-6)
    side = meta["side"].to_numpy(dtype=object)
    rating = meta["event_id"].map(elo).to_numpy(np.float64) / 400.0
    rating = np.where(side == "home", rating, np.where(side == "away", -rating, 0.0))
    return {
        "market_recalibrated": market,
        "market_and_books": np.c_[market, np.log(consensus / (1 - consensus)), book[:, 1:]],
        "market_and_elo": np.c_[market, rating],
    }


def part_lstm_epl_walk(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Walk-forward on EPL: one fold per test season, trained on every earlier season.

    Fold for season S: train = seasons before S - ``--walk-val-seasons``, validation = the
    ``--walk-val-seasons`` seasons before S (early stopping and the Platt calibration),
    test = season S. Test rows of all folds are pooled (each scored by its own fold's
    model) and judged as the single split is: Brier ratios with the event bootstrap,
    against the market at the decision and the closing price, ECE, the quality gates.
    References fit by logistic regression on every season before S (train + validation):
    the market recalibrated, + the other books' channels, + an Elo rating from results:
    what the information at hand allows beyond the market, without a network.
    """
    ds, out, store = _epl_dataset(args, root)
    if ds is None:
        return out
    with store.connection() as con:
        elo = _elo_difference(con, args.decision_offset_hours)
    designs = _reference_designs(ds, elo)
    seasons = _season_start(ds.meta["commence_time"])
    first, last = (int(v) for v in args.walk_test_seasons.split("-"))
    gap = args.walk_val_seasons
    y_all = ds.y.astype(np.float64)
    market_all = ds.meta["market_prob"].to_numpy(np.float64)
    pooled: dict[str, list[np.ndarray]] = {}
    folds = []
    for season in range(first, last + 1):
        keep = seasons <= season
        fold_ds = ds.subset(keep)
        cuts = (f"{season - gap}-08-01", f"{season}-08-01")
        splits = _split(fold_ds, cuts, args.train_from)
        arrays = _lstm_arrays(splits)
        _log(f"walk-forward fold {season}: train {len(splits['train'])} rows")
        res_fit, p, info = _train("lstm", len(ds.feature_names), arrays, args)
        test_rows = np.flatnonzero(seasons == season)
        before = np.flatnonzero(seasons < season)
        fitted = np.isfinite(market_all[before])
        forecasts = {"model": p}
        p_uncal = _uncalibrated(res_fit, arrays)
        if p_uncal is not None:
            forecasts["model_uncalibrated"] = p_uncal
        for name, X in designs.items():
            fit_ref = _logreg(X[before][fitted], y_all[before][fitted])
            forecasts[name] = fit_ref(X[test_rows])
        y, market = y_all[test_rows], market_all[test_rows]
        rows = np.isfinite(market)
        brier_market = float(np.mean((market[rows] - y[rows]) ** 2))
        folds.append(
            _r(
                {
                    "test_season": f"{season}/{season + 1}",
                    "splits": _split_summary(splits),
                    "best_epoch": info["best_epoch"],
                    "calibration": res_fit.calibration,
                    "brier_market_at_decision": brier_market,
                    "brier_ratio_vs_market_at_decision": {
                        k: float(np.mean((f[rows] - y[rows]) ** 2)) / brier_market
                        for k, f in forecasts.items()
                    },
                }
            )
        )
        for k, v in {**forecasts, "y": y, "market": market, "rows": test_rows}.items():
            pooled.setdefault(k, []).append(np.asarray(v))
        last_train_y = splits["train"].y
    cat = {k: np.concatenate(v) for k, v in pooled.items()}
    y, market, idx = cat.pop("y"), cat.pop("market"), cat.pop("rows")
    events = ds.meta["event_id"].to_numpy(dtype=object)[idx]
    closing = ds.meta["closing_prob"].to_numpy(np.float64)[idx]
    rows = np.isfinite(market)
    out["folds"] = folds
    out["pooled_test"] = {
        "seasons": f"{first}/{first + 1} to {last}/{last + 1}",
        "rows": int(rows.sum()),
        "events": int(len(np.unique(events[rows]))),
        "market_definitions": MARKET_DEFINITIONS,
    }
    out["brier_ratio_vs_market_at_decision"] = {
        k: _ratio_ci(y[rows], f[rows], market[rows], events[rows]) for k, f in cat.items()
    }
    has_close = rows & np.isfinite(closing)
    out["brier_ratio_vs_market_closing"] = {
        k: _ratio_ci(y[has_close], f[has_close], closing[has_close], events[has_close])
        for k, f in {**cat, "market_at_decision": market}.items()
    }
    out["ece_10"] = {
        k: _ece_report(y[rows], f[rows], events[rows])
        for k, f in {"model": cat["model"], "market_at_decision": market}.items()
    }
    head = out["brier_ratio_vs_market_at_decision"]["model"]
    out["target"] = {
        "brier_ratio_vs_market_at_decision_upper_le_1_00": head["ci95"][1] <= 1.0,
        "ratio": head["ratio"],
        "ci95": head["ci95"],
    }
    out["quality_gates"] = _gates(
        y[rows], cat["model"][rows], market[rows], events[rows], "brier", "market", last_train_y
    )
    return out


def _sim_lstm_data(args: argparse.Namespace, root: Path, name: str = "sim") -> tuple:
    store = OddsStore(root / f"{name}.duckdb")
    truth, info = _simulate(store, SimulatorConfig(n_events=args.events, seed=args.sim_seed))
    with store.connection() as con:
        info.update(_compute_features(con))
        start = time.perf_counter()
        ds = D.build_lstm_sequences(con, D.LstmSequenceConfig(), truth=truth)
        info["build_s"] = round(time.perf_counter() - start, 2)
    info["dataset"] = {
        "rows": len(ds),
        "seq_len_mean": round(float(ds.mask.sum(1).mean()), 3),
        "stats": ds.stats,
    }
    return ds, info


def part_lstm_sim(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    ds, out = _sim_lstm_data(args, root)
    _log(f"sim LSTM dataset {len(ds)} rows")
    out.update(_lstm_report(ds, None, args, oracle=True))
    return out


def part_determinism(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    ds, out = _sim_lstm_data(args, root, "det")
    splits = _split(ds, None)
    arrays = _lstm_arrays(splits)
    runs = []
    for _ in range(2):
        res, p, info = _train("lstm", len(ds.feature_names), arrays, args)
        y = splits["test"].y.astype(np.float64)
        runs.append(
            {
                "p": p,
                "metrics": _metrics(y, p),
                "best_epoch": res.best_epoch,
                "val_losses": [h["val_loss"] for h in res.history],
                "state": {k: v.clone() for k, v in res.model.state_dict().items()},
            }
        )
    a, b = runs
    same_weights = all(bool((a["state"][k] == b["state"][k]).all()) for k in a["state"])
    out.update(
        {
            "run_1": {"metrics": a["metrics"], "best_epoch": a["best_epoch"]},
            "run_2": {"metrics": b["metrics"], "best_epoch": b["best_epoch"]},
            "val_losses_identical": a["val_losses"] == b["val_losses"],
            "predictions_identical": bool(np.array_equal(a["p"], b["p"])),
            "max_abs_prediction_diff": float(np.max(np.abs(a["p"] - b["p"]))),
            "weights_identical": same_weights,
            # compare across processes: run the command twice, these must match
            "predictions_sha256": hashlib.sha256(a["p"].tobytes()).hexdigest()[:16],
            "metrics_identical": a["metrics"] == b["metrics"],
        }
    )
    out["target"] = {
        "same_metrics_twice": out["metrics_identical"] and out["predictions_identical"]
    }
    return out


# --------------------------------------------------------------------------- transformer parts


def _platt(score_train: np.ndarray, y_train: np.ndarray):
    """1-D logistic fit of a score on the train window (orientation learned); Newton + tiny L2."""
    return _logreg(score_train[:, None], y_train)


def _logreg(X_train: np.ndarray, y_train: np.ndarray):
    X = np.nan_to_num(np.asarray(X_train, dtype=np.float64))
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    Z = np.c_[np.ones(len(X)), (X - mu) / sd]
    y = np.asarray(y_train, dtype=np.float64)
    w = np.zeros(Z.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(Z @ w)))
        grad = Z.T @ (p - y) + 1e-4 * w
        hess = (Z * (p * (1 - p))[:, None]).T @ Z + 1e-4 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break

    def predict(X_new: np.ndarray) -> np.ndarray:
        Zn = np.c_[np.ones(len(X_new)), (np.nan_to_num(np.asarray(X_new, np.float64)) - mu) / sd]
        return np.clip(1.0 / (1.0 + np.exp(-(Zn @ w))), 0.0, 1.0)

    predict.weights = w  # type: ignore[attr-defined]
    return predict


def _subsample_negatives(d: D.SequenceDataset, label: str, max_rows: int | None, seed: int):
    """Every positive and a seeded random subset of negatives, at most ``max_rows`` rows.

    Training cost on a 2-core CPU, not accuracy, is why: AUC-ROC / AUC-PR rank test rows
    and do not depend on the train prior (pos_weight "auto" rebalances the loss anyway).
    """
    y = d.labels[label]
    if not max_rows or len(d) <= max_rows:
        return d, None
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    keep_neg = max(0, max_rows - len(pos))
    rng = np.random.default_rng(seed)
    chosen = np.sort(np.r_[pos, rng.choice(neg, size=min(keep_neg, len(neg)), replace=False)])
    return d.subset(chosen), {
        "train_rows_before": len(d),
        "negatives_kept": int(len(chosen) - len(pos)),
    }


def _bootstrap_auc_pr_diff(
    y: np.ndarray, p: np.ndarray, q: np.ndarray, events: np.ndarray, n: int = 200
) -> dict[str, Any]:
    """Event-level bootstrap of AUC-PR(model) - AUC-PR(rule) on the same resampled rows."""
    from odds_pipeline.training.evaluation import average_precision

    codes, inv = np.unique(events, return_inverse=True)
    members = np.split(np.argsort(inv, kind="stable"), np.cumsum(np.bincount(inv))[:-1])
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(n):
        rows = np.concatenate([members[i] for i in rng.integers(0, len(codes), len(codes))])
        if 0 < y[rows].sum() < len(rows):
            diffs.append(average_precision(y[rows], p[rows]) - average_precision(y[rows], q[rows]))
    diffs = np.asarray(diffs)
    return _r(
        {
            "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))],
            "p_model_better": float(np.mean(diffs > 0)),
            "resamples": int(len(diffs)),
        }
    )


def _pair_report(
    ds: D.SequenceDataset,
    args: argparse.Namespace,
    label: str = "arb_ahead",
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Model vs rules on the test window; ``work_dir`` holds the scaled, memory-mapped splits."""
    with _phase("report_total"):
        return _pair_report_body(ds, args, label, work_dir)


def _pair_report_body(
    ds: D.SequenceDataset, args: argparse.Namespace, label: str, work_dir: Path | None
) -> dict[str, Any]:
    with _phase("split"):  # memory-mapped views: splits are contiguous in commence order
        splits = _split(ds, None)
    out: dict[str, Any] = {"splits": _split_summary(splits, label)}
    for s in ("train", "validation"):
        pos = int(splits[s].labels[label].sum())
        if pos == 0 or pos == len(splits[s]):
            out["error"] = f"{s} window has {pos} positives of {len(splits[s])}: cannot train"
            return out
    train_full = splits["train"]
    fit_splits = dict(splits)
    with _phase("subsample"):  # only the kept rows are read into memory
        fit_splits["train"], info = _subsample_negatives(
            train_full, label, args.max_train_rows, args.seed
        )
    if info:
        out["train_subsample"] = info
    with _phase("scale"):
        arrays = _scaled(fit_splits, label, out_dir=work_dir)
    _log(f"training transformer on {len(fit_splits['train'])} rows")
    del fit_splits  # the scaled copies (memory-mapped with work_dir) are what training reads
    _, p, info = _train("pair", len(ds.feature_names), arrays, args)
    out["training"] = info
    test = splits["test"]
    y = test.labels[label].astype(np.float64)
    y_tr = train_full.labels[label].astype(np.float64)
    if y.sum() == 0:
        out["error"] = "no positive in the test window"
        return out
    forecasts: dict[str, np.ndarray] = {"model": p}
    prior = {"sum_now": -1.0, "sum_min": -1.0, "slope": -1.0}  # higher = arb more likely
    orientation = {}
    for name, col in RULES.items():
        s_test = test.meta[col].to_numpy(np.float64)
        s_train = train_full.meta[col].to_numpy(np.float64)
        forecasts[f"rule_{name}_prior"] = rank01(prior[name] * s_test)
        cal = _platt(s_train, y_tr)
        orientation[name] = (
            "higher raw value -> arb" if cal.weights[1] > 0 else "lower raw value -> arb"
        )
        forecasts[f"rule_{name}_calibrated"] = cal(s_test)
    cols = list(RULES.values())
    lr = _logreg(train_full.meta[cols].to_numpy(np.float64), y_tr)
    forecasts["rules_logreg"] = lr(test.meta[cols].to_numpy(np.float64))

    # the model sees the market type (an embedding): the same for the rules, per market
    def with_market(meta: pd.DataFrame) -> np.ndarray:
        m = meta["market"].to_numpy(dtype=object)
        return np.c_[meta[cols].to_numpy(np.float64), m == "spreads", m == "totals"]

    lr_m = _logreg(with_market(train_full.meta), y_tr)
    forecasts["rules_logreg_with_market"] = lr_m(with_market(test.meta))
    metrics = {name: _metrics(y, f) for name, f in forecasts.items()}
    # Brier / log loss / ECE of rank scores mean nothing: keep their AUCs only. The model's
    # are those of a pos_weight-trained (and subsampled) model: ranking is what is compared.
    for name in metrics:
        if name.endswith("_prior"):
            metrics[name] = {k: metrics[name][k] for k in ("n", "positives", "auc_roc", "auc_pr")}
    out["test"] = metrics
    out["rule_orientation_learned_on_train"] = orientation
    single = {k: v["auc_pr"] for k, v in metrics.items() if k.startswith("rule_")}
    best = max(single, key=lambda k: -1 if single[k] is None else single[k])
    out["positive_rate_test"] = _r(float(y.mean()))
    out["best_rule"] = {"name": best, "auc_pr": single[best], "auc_roc": metrics[best]["auc_roc"]}
    out["model_auc_pr"] = metrics["model"]["auc_pr"]
    out["model_auc_roc"] = metrics["model"]["auc_roc"]
    out["bootstrap_auc_pr_model_minus_best_rule"] = _bootstrap_auc_pr_diff(
        y, p, forecasts[best], test.meta["event_id"].to_numpy(dtype=object)
    )
    out["target"] = {
        "auc_pr_above_best_rule": (metrics["model"]["auc_pr"] or 0) > (single[best] or 0),
        "margin": _r((metrics["model"]["auc_pr"] or 0) - (single[best] or 0)),
        "also_above_rules_logreg": (metrics["model"]["auc_pr"] or 0)
        > (metrics["rules_logreg"]["auc_pr"] or 0),
        "also_above_rules_logreg_with_market": (metrics["model"]["auc_pr"] or 0)
        > (metrics["rules_logreg_with_market"]["auc_pr"] or 0),
        "test_positives": int(y.sum()),
    }
    by_market = {}
    market = test.meta["market"].to_numpy(dtype=object)
    for m in np.unique(market):
        sel = market == m
        if 0 < y[sel].sum() < sel.sum():
            by_market[str(m)] = {
                "n": int(sel.sum()),
                "positives": int(y[sel].sum()),
                "model_auc_pr": _metrics(y[sel], p[sel])["auc_pr"],
                "best_rule_auc_pr": _metrics(y[sel], forecasts[best][sel])["auc_pr"],
            }
    out["test_by_market"] = by_market
    # The gates' baseline: the calibrated rule with the best AUC-PR on validation (not test).
    val = splits["validation"]
    y_val = val.labels[label].astype(np.float64)
    val_scores = {
        name: _metrics(
            y_val,
            _platt(train_full.meta[col].to_numpy(np.float64), y_tr)(
                val.meta[col].to_numpy(np.float64)
            ),
        )["auc_pr"]
        or 0.0
        for name, col in RULES.items()
    }
    chosen = max(val_scores, key=val_scores.get)
    out["quality_gates"] = _gates(
        y,
        p,
        forecasts[f"rule_{chosen}_calibrated"],
        test.meta["event_id"].to_numpy(dtype=object),
        "auc_pr",
        f"rule_{chosen} (best on validation)",
        y_tr,
    )
    return out


def _pair_config(args: argparse.Namespace, cut_stride: int | None = None) -> D.PairSequenceConfig:
    return D.PairSequenceConfig(
        max_len=args.max_len,
        horizon_minutes=args.horizon,
        cut_stride=cut_stride or args.cut_stride,
        min_len=args.min_len,
        max_book_pairs=args.max_book_pairs,
    )


def _pair_dataset_info(ds: D.SequenceDataset) -> dict[str, Any]:
    return {
        "rows": len(ds),
        "events": int(ds.meta["event_id"].nunique()) if len(ds) else 0,
        "arb_ahead_rate": _r(float(ds.labels["arb_ahead"].mean())) if len(ds) else None,
        "arb_now_rate": _r(float(ds.labels["arb_now"].mean())) if len(ds) else None,
        "seq_len_mean": round(float(ds.mask.sum(1).mean()), 2) if len(ds) else 0,
        "markets": {str(k): int(v) for k, v in ds.meta["market"].value_counts().items()},
        "book_pairs": ds.stats.get("book_pairs"),
    }


def part_transformer_sim(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    store = OddsStore(root / "sim_pairs.duckdb")
    cfg = SimulatorConfig(
        n_events=args.events, seed=args.sim_seed, arbitrage_rate=args.arbitrage_rate
    )
    with _phase("load"):
        _, out = _simulate(store, cfg)
    pair_cfg = _pair_config(args)
    with store.connection() as con:
        _limit_duckdb(con, args)
        with _phase("features"):
            out.update(_compute_features(con, lstm=False, pairs=True))
        start = time.perf_counter()
        with _phase("build"):
            ds = D.build_arbitrage_pair_sequences(
                con, pair_cfg, chunk_samples=args.chunk_samples, out_dir=root / "pairs_sim"
            )
        out["build_s"] = round(time.perf_counter() - start, 2)
    out["pair_config"] = {
        k: getattr(pair_cfg, k)
        for k in ("max_len", "horizon_minutes", "cut_stride", "min_len", "max_book_pairs")
    }
    out["dataset"] = _pair_dataset_info(ds)
    _log(f"sim pair dataset {len(ds)} rows, arb_ahead rate {out['dataset']['arb_ahead_rate']}")
    out.update(_pair_report(ds, args, work_dir=root / "scaled_sim"))
    return out


def _limit_duckdb(con, args: argparse.Namespace) -> None:
    """DuckDB's memory limit for the feature and build queries (spills beyond it)."""
    if args.duckdb_memory_limit:
        con.execute(f"SET memory_limit='{args.duckdb_memory_limit}'")


def _real_league(path: Path, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    store = OddsStore(root / f"{path.stem}.duckdb")
    out: dict[str, Any] = {"file": path.name}
    with store.connection() as con:
        _limit_duckdb(con, args)
        start = time.perf_counter()
        with _phase("load"):
            out["quotes_loaded"] = F.load_odds_api_change_log(con, [path])
        out["in_play_deleted"] = int(
            con.execute("SELECT count(*) FROM odds_quotes WHERE in_play").fetchone()[0]
        )
        con.execute("DELETE FROM odds_quotes WHERE in_play")
        out["load_s"] = round(time.perf_counter() - start, 2)
        out["books"] = int(
            con.execute("SELECT count(DISTINCT bookmaker) FROM odds_quotes").fetchone()[0]
        )
        with _phase("features"):
            out.update(_compute_features(con, lstm=False, pairs=True))  # every pair of books
        stride = args.cut_stride or REAL_CUT_STRIDE.get(path.stem.split("_")[0], 8)
        pair_cfg = _pair_config(args, cut_stride=stride)
        out["cut_stride"] = stride
        start = time.perf_counter()
        with _phase("build"):
            ds = D.build_arbitrage_pair_sequences(
                con, pair_cfg, chunk_samples=args.chunk_samples, out_dir=root / f"{path.stem}_pairs"
            )
        out["build_s"] = round(time.perf_counter() - start, 2)
    out["dataset"] = _pair_dataset_info(ds)
    _log(f"{path.stem}: {len(ds)} rows, arb_ahead rate {out['dataset']['arb_ahead_rate']}")
    if len(ds) == 0:
        out["error"] = "no samples"
        return out
    out.update(_pair_report(ds, args, work_dir=root / f"{path.stem}_scaled"))
    return out


def part_transformer_real(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    base = SHARED_DATA / "odds-api" / "changes"
    out: dict[str, Any] = {
        "pair_config": {
            "max_len": args.max_len,
            "horizon_minutes": args.horizon,
            "min_len": args.min_len,
            "max_book_pairs": args.max_book_pairs,
            "cut_stride": args.cut_stride or REAL_CUT_STRIDE,
        }
    }
    for league in args.leagues.split(","):
        path = base / f"{league}_changes.parquet"
        if not path.exists():
            out[league] = {"skipped": f"{path} missing"}
            continue
        out[league] = _real_league(path, args, root)
    return out


# --------------------------------------------------------------------------- main

DEFAULTS: dict[str, dict[str, Any]] = {
    "lstm-epl": dict(
        epochs=30, patience=5, batch_size=256, lr=1e-3, hidden=32, num_layers=2, dropout=0.2
    ),
    "lstm-epl-walk": dict(
        epochs=30, patience=5, batch_size=256, lr=1e-3, hidden=32, num_layers=2, dropout=0.2
    ),
    "lstm-sim": dict(
        epochs=30,
        patience=5,
        batch_size=256,
        lr=1e-3,
        hidden=32,
        num_layers=2,
        dropout=0.2,
        events=1500,
    ),
    "determinism": dict(
        epochs=8,
        patience=5,
        batch_size=256,
        lr=1e-3,
        hidden=32,
        num_layers=2,
        dropout=0.2,
        events=300,
    ),
    "transformer-sim": dict(
        epochs=8,
        patience=3,
        batch_size=128,
        lr=1e-3,
        d_model=32,
        dropout=0.1,
        events=600,
        horizon=120.0,
        cut_stride=16,
        arbitrage_rate=2.0,
        max_len=32,
        min_len=8,
        max_book_pairs=10,
        max_train_rows=60000,
    ),
    "transformer-real": dict(
        epochs=8,
        patience=3,
        batch_size=128,
        lr=1e-3,
        d_model=32,
        dropout=0.1,
        horizon=120.0,
        cut_stride=0,
        max_len=32,
        min_len=8,
        max_book_pairs=55,
        max_train_rows=60000,
    ),
}
# change logs differ ~6x in size: cuts every N-th instant of a pair key, per league
REAL_CUT_STRIDE = {"mlb": 16, "wnba": 4}
RUNNERS = {
    "lstm-epl": part_lstm_epl,
    "lstm-epl-walk": part_lstm_epl_walk,
    "lstm-sim": part_lstm_sim,
    "transformer-sim": part_transformer_sim,
    "transformer-real": part_transformer_real,
    "determinism": part_determinism,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    # every option defaults to the part's own value (DEFAULTS) when not given
    for name, typ in (
        ("epochs", int),
        ("patience", int),
        ("batch-size", int),
        ("lr", float),
        ("hidden", int),
        ("d-model", int),
        ("dropout", float),
        ("events", int),
        ("horizon", float),
        ("cut-stride", int),
        ("arbitrage-rate", float),
        ("max-len", int),
        ("min-len", int),
        ("max-book-pairs", int),
        ("num-layers", int),
    ):
        parser.add_argument(f"--{name}", type=typ, default=None)
    parser.add_argument(
        "--no-keep-initial",
        action="store_true",
        help="LSTM: early stopping among trained epochs only (default: epoch 0 competes)",
    )
    parser.add_argument(
        "--calibration-alpha",
        default=str(CALIBRATION_ALPHA),
        help="LSTM: level of the calibration's likelihood-ratio test ('none': always applied)",
    )
    parser.add_argument("--weight-decay", type=float, default=1e-2)
    parser.add_argument(
        "--pos-weight", default="auto", help="transformer BCE pos_weight: auto, none or a number"
    )
    parser.add_argument(
        "--drop-channels", default=None, help="LSTM channels zeroed after scaling (a,b,...)"
    )
    parser.add_argument(
        "--lstm-variant",
        choices=("residual", "plain"),
        default="residual",
        help="LSTM network: market-residual (the pipeline's) or the plain MaskedLSTM",
    )
    parser.add_argument("--train-from", default=None, help="drop samples before this date")
    parser.add_argument("--seed", type=int, default=7, help="training seed")
    parser.add_argument("--sim-seed", type=int, default=7, help="simulator seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (transformer)")
    parser.add_argument("--val-from", default="2019-07-01", help="EPL validation start")
    parser.add_argument("--test-from", default="2021-07-01", help="EPL test start")
    parser.add_argument(
        "--walk-test-seasons",
        default="2015-2022",
        help="lstm-epl-walk: first-last test season (by starting year), one fold each",
    )
    parser.add_argument(
        "--walk-val-seasons", type=int, default=1, help="lstm-epl-walk: validation seasons"
    )
    parser.add_argument("--decision-offset-hours", type=float, default=1.0, help="EPL decision")
    parser.add_argument("--sides", default="home,away", help="EPL sides (add draw for 3-way)")
    parser.add_argument("--leagues", default="mlb,wnba", help="change logs for transformer-real")
    parser.add_argument(
        "--chunk-samples",
        type=int,
        default=20_000,
        help="transformer: pair samples built at a time (memory; the values do not depend on it)",
    )
    parser.add_argument(
        "--duckdb-memory-limit",
        default="1GB",
        help="transformer: DuckDB memory_limit for features and the build ('' = DuckDB default)",
    )
    parser.add_argument(
        "--max-train-rows",
        type=int,
        default=None,
        help="transformer: keep every train positive and a seeded random subset of negatives",
    )
    args = parser.parse_args()

    parts = list(PARTS) if args.part == "all" else [args.part]
    figures: dict[str, Any] = {"benchmark": "model_targets", "load_avg_start": os.getloadavg()[0]}
    for part in parts:
        part_args = argparse.Namespace(**vars(args))
        for k, v in DEFAULTS[part].items():
            if getattr(part_args, k, None) is None:
                setattr(part_args, k, v)
        _log(f"part {part}")
        start = time.perf_counter()
        with (
            _to_datetime_without_cache(),
            tempfile.TemporaryDirectory(prefix="bench_targets_") as tmp,
            _phase("total"),
        ):
            result = RUNNERS[part](part_args, Path(tmp))
        result["wall_s"] = round(time.perf_counter() - start, 1)
        peaks = _phase_peaks()
        result["part_peak_rss_mb"] = peaks.pop("total", None)
        result["phase_peak_rss_mb"] = peaks
        figures[part] = result
    figures["load_avg_end"] = os.getloadavg()[0]
    # getrusage's peak restarts with every phase reset: the process peak is the parts' maximum
    part_peaks = [figures[p].get("part_peak_rss_mb") or 0.0 for p in parts]
    figures["peak_rss_mb"] = round(max([peak_rss_mb(), *part_peaks]), 1)
    emit(figures)


if __name__ == "__main__":
    main()
