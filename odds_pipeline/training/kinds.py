"""The one registry of model kinds: everything that differs between the LSTM and the transformer.

A kind names its network, the inputs it reads (and how they are packed into the one
float32 array a logged model serves on), its dataset asset and label, the Optuna search
space and which tuned parameters a candidate takes over, the sequence-length buckets of
its evaluation, and the names it is registered and tracked under. Code elsewhere asks the
kind (``KINDS[name]`` or ``kind_of(...)``) and never tests ``kind == "..."``: a third model
is one new entry here.

Serving layouts (raw, unscaled features; NaN on a real step means "no value"; padded
steps are ignored):

- ``lstm``: ``[N, T, F + 1]`` = the F features, then the mask (1 = real step, 0 = none).
  Unpacking gives the network the z-scored features, the mask and the *raw* features
  (``x_raw``): the market-residual LSTM reads its base (the de-vigged market probability
  at the decision time, channel ``sharp_prob`` at the last real step) and the per-channel
  "known" flags (NaN = unknown) from them, so nothing it needs is outside this one array.
  The plain ``MaskedLSTM`` (models logged before) ignores ``x_raw``; which network a
  logged LSTM is follows from its hyper-parameters (``market_channel`` = the residual one).
- ``pair``: ``[N, T, 2F + 2]`` = book A's F features, book B's F features, the mask, then
  the market-type index (read from step 0).

Numpy only at import (torch and optuna inside the functions): this module travels inside
every logged model and loads with the code location.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LSTM_MODEL_NAME = "odds-lstm"
TRANSFORMER_MODEL_NAME = "arb-transformer"


# --------------------------------------------------------------------------- packing


def _real_steps_only(x: Any, m: np.ndarray) -> np.ndarray:
    """Padded steps -> 0; NaN on real steps is kept (it means 'no value', as in training)."""
    return np.where(m, np.asarray(x, dtype=np.float32), np.float32(0.0)).astype(np.float32)


def pack_lstm_input(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[N, T, F] raw features + [N, T] mask -> the one float32 array the LSTM model serves on."""
    m = np.asarray(mask, dtype=bool)[..., None]
    return np.concatenate([_real_steps_only(x, m), m.astype(np.float32)], axis=-1)


def pack_pair_input(
    x_a: np.ndarray, x_b: np.ndarray, mask: np.ndarray, market_type: np.ndarray
) -> np.ndarray:
    """Two books' raw [N, T, F] + mask + market type -> the transformer's one float32 array."""
    m = np.asarray(mask, dtype=bool)[..., None]
    market = np.broadcast_to(
        np.asarray(market_type, dtype=np.float32).reshape(-1, 1, 1), m.shape
    ).astype(np.float32)
    return np.concatenate(
        [_real_steps_only(x_a, m), _real_steps_only(x_b, m), m.astype(np.float32), market],
        axis=-1,
    )


def _unpack_lstm(array: np.ndarray, f: int) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Values to z-score, the mask, and the raw values (unscaled, NaN kept) as they came."""
    raw = np.ascontiguousarray(array[..., :f], dtype=np.float32)
    return {"x": array[..., :f]}, array[..., -1] > 0.5, {"x_raw": raw}


def _unpack_pair(array: np.ndarray, f: int) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    mask = array[..., 2 * f] > 0.5
    market = np.rint(np.nan_to_num(array[:, 0, 2 * f + 1])).astype(np.int64)
    values = {"x_a": array[..., :f], "x_b": array[..., f : 2 * f]}
    return values, mask, {"market_type": market}


# --------------------------------------------------------------------------- networks


# The LSTM dataset channel holding the de-vigged market probability (sharp, else consensus):
# at the last real step it is the dataset's ``market_prob``, the residual model's base.
LSTM_MARKET_FEATURE = "sharp_prob"
# Post-hoc calibration is applied only when a likelihood-ratio test on validation rejects
# the identity at this level (``loop.choose_calibration``): one EPL season moves a Platt
# fit by +-0.2 in slope by chance, and applying every such fit cost 0.6% Brier on eight
# walk-forward test seasons (BENCHMARKS.md, issue #10 part 1).
CALIBRATION_ALPHA = 0.05


def lstm_market_channel(n_features: int) -> int | None:
    """Index of ``LSTM_MARKET_FEATURE`` in an ``lstm_sequences`` dataset of ``n_features``.

    The dataset's channels always start with ``features.LSTM_FEATURES`` in order (a tested
    contract of ``build_lstm_sequences``); fewer channels = not such a dataset = no market.
    """
    from odds_pipeline.features.compute import LSTM_FEATURES

    names = list(LSTM_FEATURES)
    return names.index(LSTM_MARKET_FEATURE) if n_features >= len(names) else None


def _lstm_args(n_features: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """The market-residual LSTM by default; ``market_residual: False`` = the plain one."""
    args = {
        "n_features": n_features,
        "hidden": int(params["hidden"]),
        "num_layers": int(params["num_layers"]),
        "dropout": float(params["dropout"]),
    }
    if params.get("market_residual", True):
        args["market_channel"] = lstm_market_channel(n_features)
    return args


def _pair_args(n_features: int, params: Mapping[str, Any]) -> dict[str, Any]:
    n_layers = int(params["n_layers"])
    return {
        "n_features_per_book": n_features,
        "d_model": int(params["d_model"]),
        "n_heads": int(params["n_heads"]),
        "n_layers": n_layers,
        "cross_from_layer": min(int(params["cross_from_layer"]), n_layers),
        "dropout": float(params["dropout"]),
        "mlp_hidden": int(params.get("mlp_hidden", params["d_model"])),
        "ff_mult": int(params["ff_mult"]),
    }


def _lstm_class(hparams: Mapping[str, Any]) -> type:
    """``market_channel`` among the hyper-parameters (even None) = the market-residual LSTM."""
    from odds_pipeline.training.models import MarketResidualLSTM, MaskedLSTM

    return MarketResidualLSTM if "market_channel" in hparams else MaskedLSTM


def _pair_class(hparams: Mapping[str, Any]) -> type:
    from odds_pipeline.training.models import DualStreamArbTransformer

    return DualStreamArbTransformer


# --------------------------------------------------------------------------- search spaces


def lstm_search_space(trial: Any) -> dict[str, Any]:
    """Small on purpose: the default data is a few thousand sequences."""
    return {
        "hidden": trial.suggest_categorical("hidden", [16, 32, 64]),
        "num_layers": trial.suggest_int("num_layers", 1, 2),
        "dropout": trial.suggest_float("dropout", 0.0, 0.4),
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-4, 1e-1, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
    }


def transformer_search_space(trial: Any) -> dict[str, Any]:
    """Width, depth and where cross-attention starts; compute grows with d_model * ff_mult."""
    n_layers = trial.suggest_int("n_layers", 1, 3)
    return {
        "d_model": trial.suggest_categorical("d_model", [16, 32, 64]),
        "n_heads": trial.suggest_categorical("n_heads", [2, 4]),
        "n_layers": n_layers,
        # 0 = cross-attention from the first layer; clipped so it never exceeds n_layers.
        "cross_from_layer": min(trial.suggest_int("cross_from_layer", 0, 1), n_layers),
        "ff_mult": trial.suggest_categorical("ff_mult", [1, 2, 4]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "lr": trial.suggest_float("lr", 3e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-4, 1e-1, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
    }


# --------------------------------------------------------------------------- window sequences


def _known(config_class: type, values: Mapping[str, Any]) -> Any:
    """A dataset config from a champion's stored one (fields it does not know are ignored)."""
    from dataclasses import fields

    from odds_pipeline.datasets.sequences import config_from_mapping

    names = {f.name for f in fields(config_class)}
    return config_from_mapping(config_class, {k: v for k, v in values.items() if k in names})


def _lstm_window(con: Any, dataset_config: Mapping[str, Any], start: Any, end: Any) -> Any:
    """Every h2h side of the events commencing in [start, end), results known or not."""
    from odds_pipeline.datasets import sequences as S

    return S.build_lstm_sequences(
        con,
        _known(S.LstmSequenceConfig, dataset_config),
        include_unresolved=True,
        commence_from=start,
        commence_to=end,
    )


def _pair_window(con: Any, dataset_config: Mapping[str, Any], start: Any, end: Any) -> Any:
    """Each book pair's latest state at ``end`` (events not started)."""
    from odds_pipeline.datasets import sequences as S

    return S.build_arbitrage_pair_sequences(
        con, _known(S.PairSequenceConfig, dataset_config), score_at=end
    )


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class ModelKind:
    """Everything one model kind needs, from its dataset to its registered name."""

    name: str
    title: str
    # Asset names: <prefix>_candidate, <prefix>_tuning, <prefix>_champion.
    asset_prefix: str
    registered_model: str  # also the MLflow experiment of its runs
    dataset_asset: str
    default_label: str
    # The model's positional inputs, in order; value_keys are the z-scored ones; packed_keys
    # the dataset arrays the serving array is packed from (inputs not among them are
    # derived from that array by ``unpack``, see ``unpacked_inputs``).
    input_keys: tuple[str, ...]
    value_keys: tuple[str, ...]
    packed_keys: tuple[str, ...]
    length_edges: tuple[int, ...]
    study_name: str
    tuned_keys: tuple[str, ...]
    search_space: Callable[[Any], dict[str, Any]]
    network_class: Callable[[Mapping[str, Any]], type]  # the class for these constructor args
    network_args: Callable[[int, Mapping[str, Any]], dict[str, Any]]
    channels: Callable[[int], int]
    pack_fn: Callable[..., np.ndarray]
    unpack: Callable[[np.ndarray, int], tuple[dict[str, np.ndarray], np.ndarray, dict]]
    # The baselines a candidate is judged against (a key of training.candidate.BASELINES).
    baselines: str = "market"
    # The gates' headline metric against the baseline: "brier" (lower is better) or "auc_pr".
    gate_metric: str = "brier"
    # The meta column holding each sample's decision time (no step may come after it).
    decision_column: str = "decision_time"
    fixed_tuning_params: Mapping[str, Any] = field(default_factory=dict)
    # The sequences the model would score in a window (monitoring's current window):
    # (connection, the model's dataset config, start, end) -> dataset.
    window_sequences: Callable[..., Any] | None = None

    @property
    def experiment(self) -> str:
        return self.registered_model

    def network(self, n_features: int, params: Mapping[str, Any]) -> Any:
        """A fresh torch module from training parameters (config or tuned)."""
        args = self.network_args(n_features, params)
        return self.network_class(args)(**args)

    def network_from_hparams(self, hparams: Mapping[str, Any]) -> Any:
        """A fresh torch module from a logged model's saved hyper-parameters."""
        return self.network_class(hparams)(**hparams)

    def pack(self, arrays: Any, rows: int | None = None) -> np.ndarray:
        """The serving array from a dataset (or any object/mapping with the input arrays)."""

        def get(key: str) -> np.ndarray:
            value = arrays[key] if isinstance(arrays, Mapping) else getattr(arrays, key)
            return value if rows is None else value[:rows]

        return self.pack_fn(*(get(k) for k in self.packed_keys))

    def unpacked_inputs(self, arrays: Any, n_features: int) -> dict[str, np.ndarray]:
        """The unscaled inputs the served model derives from its array, derived the same way.

        Training adds these to its arrays, so the network sees exactly what it will be
        served: pack the raw dataset, unpack it, keep the inputs that are not z-scored
        values or the mask (LSTM: ``x_raw``; pair: ``market_type``).
        """
        _, _, other = self.unpack(self.pack(arrays), n_features)
        return {k: v for k, v in other.items() if k in self.input_keys}


KINDS: dict[str, ModelKind] = {
    kind.name: kind
    for kind in (
        ModelKind(
            name="lstm",
            title="market-residual LSTM win probability",
            asset_prefix="lstm",
            registered_model=LSTM_MODEL_NAME,
            dataset_asset="lstm_sequences",
            default_label="won",
            input_keys=("x", "mask", "x_raw"),
            value_keys=("x",),
            packed_keys=("x", "mask"),
            length_edges=(1, 2, 4, 8, 16, 32),
            study_name="odds-lstm",
            tuned_keys=("hidden", "num_layers", "dropout", "lr", "weight_decay", "batch_size"),
            search_space=lstm_search_space,
            network_class=_lstm_class,
            network_args=_lstm_args,
            channels=lambda f: f + 1,
            pack_fn=pack_lstm_input,
            unpack=_unpack_lstm,
            window_sequences=_lstm_window,
            baselines="market",
        ),
        ModelKind(
            name="pair",
            title="dual-stream transformer arbitrage ahead",
            asset_prefix="transformer",
            registered_model=TRANSFORMER_MODEL_NAME,
            dataset_asset="arbitrage_pair_sequences",
            default_label="arb_ahead",
            input_keys=("x_a", "x_b", "mask", "market_type"),
            value_keys=("x_a", "x_b"),
            packed_keys=("x_a", "x_b", "mask", "market_type"),
            length_edges=(1, 8, 16, 24, 32, 64),
            study_name="arb-transformer",
            tuned_keys=(
                "d_model",
                "n_heads",
                "n_layers",
                "cross_from_layer",
                "ff_mult",
                "dropout",
                "lr",
                "weight_decay",
                "batch_size",
            ),
            search_space=transformer_search_space,
            network_class=_pair_class,
            network_args=_pair_args,
            channels=lambda f: 2 * f + 2,
            pack_fn=pack_pair_input,
            unpack=_unpack_pair,
            window_sequences=_pair_window,
            baselines="rules",
            gate_metric="auc_pr",
            decision_column="cut_time",
            fixed_tuning_params={"mlp_hidden": 32},
        ),
    )
}


def kind_of(name: str) -> ModelKind:
    """The kind by its name, or a clear error listing the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r} (known: {sorted(KINDS)})") from None


def kind_for_model(registered_model: str) -> ModelKind:
    """The kind registered under ``registered_model`` (e.g. "odds-lstm")."""
    for kind in KINDS.values():
        if kind.registered_model == registered_model:
            return kind
    known = sorted(k.registered_model for k in KINDS.values())
    raise ValueError(f"unknown registered model {registered_model!r} (known: {known})")
