"""Group `training`: the two models' candidates and Optuna studies, tracked in MLflow.

`lstm_candidate` / `transformer_candidate` train on the train window of their dataset
(early stopping on the validation window), evaluate on the held-out test window side by
side with the baselines on the same rows (LSTM: the de-vigged market probability at
decision time, and the simulator's true probability where known; transformer: the
classical Σ-implied rules), log everything to MLflow, register the model and give the new
version the alias ``challenger``. `lstm_tuning` / `transformer_tuning` run Optuna studies
whose best parameters the candidates use when a study exists (see `tuning.py`).
"""

import time
from collections.abc import Callable
from typing import Any

import dagster as dg
import numpy as np
from pydantic import Field

from odds_pipeline.training import tracking
from odds_pipeline.training.kinds import CALIBRATION_ALPHA, KINDS, ModelKind

from .datasets import arbitrage_pair_sequences, load_materialized_dataset, lstm_sequences
from .metadata import data_failure
from .resources import MlflowResource

GROUP = "training"
OWNERS = ["team:odds-ml"]
POOL = "gpu"


# --------------------------------------------------------------------------- configs


class _TrainingConfig(dg.Config):
    """What both candidates share; editable in the Launchpad."""

    epochs: int = Field(default=6, description="Maximum epochs (early stopping may stop sooner).")
    batch_size: int = Field(default=128, description="Mini-batch size.")
    lr: float = Field(default=3e-3, description="Peak AdamW learning rate (cosine to 1%).")
    weight_decay: float = Field(default=1e-2, description="AdamW weight decay (matrices only).")
    patience: int = Field(default=3, description="Epochs without validation improvement.")
    dropout: float = Field(default=0.1, description="Dropout.")
    seed: int = Field(default=7, description="Same seed, data and config: same metrics on CPU.")
    device: str = Field(default="auto", description="auto (CUDA, then MPS, then CPU), cpu, cuda.")
    torch_threads: int = Field(
        default=1, description="CPU threads while fitting (1 is fastest for small models)."
    )
    use_tuned_params: bool = Field(
        default=True, description="Take the best trial's parameters when the study exists."
    )
    register_model: bool = Field(
        default=True, description="Register the model and give it the alias `challenger`."
    )


class LstmTrainingConfig(_TrainingConfig):
    epochs: int = Field(default=8, description="Maximum epochs (early stopping may stop sooner).")
    hidden: int = Field(default=32, description="LSTM hidden size.")
    num_layers: int = Field(default=2, description="Stacked LSTM layers.")
    calibration_alpha: float | None = Field(
        default=CALIBRATION_ALPHA,
        description="Platt calibration fit on validation is applied only when a likelihood-ratio "
        "test against no calibration rejects at this level; None applies it always.",
    )
    study_name: str = Field(
        default=KINDS["lstm"].study_name, description="Optuna study to take parameters from."
    )


class TransformerTrainingConfig(_TrainingConfig):
    lr: float = Field(default=1e-3, description="Peak AdamW learning rate (cosine to 1%).")
    epochs: int = Field(default=5, description="Maximum epochs (early stopping may stop sooner).")
    d_model: int = Field(default=32, description="Model width.")
    n_heads: int = Field(default=4, description="Attention heads (must divide d_model).")
    n_layers: int = Field(default=2, description="Dual-stream layers.")
    cross_from_layer: int = Field(
        default=1, description="First layer (0-based) with cross-attention; n_layers = none."
    )
    ff_mult: int = Field(default=2, description="Feed-forward width = ff_mult * d_model.")
    mlp_hidden: int = Field(default=32, description="Head MLP width.")
    label: str = Field(default="arb_ahead", description="Target: arb_ahead (default) or arb_now.")
    pos_weight: float | None = Field(
        default=None,
        description="Weight of positives in the loss; None keeps probabilities calibrated.",
    )
    study_name: str = Field(
        default=KINDS["pair"].study_name, description="Optuna study to take parameters from."
    )


# --------------------------------------------------------------------------- data


def check_device(device: str) -> str:
    """The device fit will use; an unavailable explicit choice is a config error, not a retry."""
    from odds_pipeline.training.loop import select_device

    try:
        return str(select_device(None if device == "auto" else device))
    except ValueError as exc:
        raise data_failure(f"{exc}; set `device` to auto or cpu in the run config") from exc


def epoch_logger(
    context: dg.AssetExecutionContext, total: int, prefix: str = ""
) -> Callable[[int, dict[str, float]], None]:
    """Per-epoch progress in the Dagster logs and as MLflow step metrics."""

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        context.log.info(
            f"{prefix}epoch {epoch}/{total} train_loss {metrics['train_loss']:.5f} "
            f"val_loss {metrics['val_loss']:.5f} lr {metrics['lr']:.2e} "
            f"{metrics['seconds']:.1f}s ({metrics['samples_per_s']:.0f} samples/s)"
        )
        tracking.log_metrics(
            {k: v for k, v in metrics.items() if k != "epoch"},
            step=epoch,
        )

    return on_epoch


# --------------------------------------------------------------------------- candidates


def prepared_candidate_data(context: dg.AssetExecutionContext, kind: ModelKind, label: str) -> Any:
    """The kind's latest dataset, split and scaled; a data problem fails the run clearly."""
    from odds_pipeline.training.candidate import CandidateDataError, prepare

    dataset, path = load_materialized_dataset(context, dg.AssetKey(kind.dataset_asset))
    try:
        return prepare(dataset, kind, label, path)
    except CandidateDataError as exc:
        raise data_failure(
            str(exc), **{k: dg.MetadataValue.json(v) for k, v in exc.metadata.items()}
        ) from exc


def _resolve_params(
    context: dg.AssetExecutionContext, config: _TrainingConfig, kind: ModelKind
) -> tuple[dict[str, Any], str]:
    """The config's parameters, with the study's best trial's over them when asked and found."""
    params = config.model_dump()
    source = "config"
    if config.use_tuned_params:
        from odds_pipeline.training import tuning

        best = tuning.best_params(config.study_name)
        if best is not None:
            best_params, number, value = best
            taken = {k: v for k, v in best_params.items() if k in kind.tuned_keys}
            params.update(taken)
            source = f"optuna:{config.study_name}#trial{number}"
            context.log.info(
                f"using the best trial of study {config.study_name!r} "
                f"(#{number}, {tuning.OBJECTIVE} {value:.5f}): {taken}"
            )
        else:
            context.log.info(f"no completed study {config.study_name!r}: using the config")
    return params, source


def train_candidate(
    context: dg.AssetExecutionContext,
    mlflow_resource: MlflowResource,
    config: _TrainingConfig,
    *,
    kind: ModelKind,
    label: str,
) -> dg.MaterializeResult:
    """Everything a candidate asset does; the two assets differ only in kind and config."""
    from odds_pipeline.training import candidate
    from odds_pipeline.training import loop as training

    experiment = model_name = kind.registered_model
    device = check_device(config.device)
    prepared = prepared_candidate_data(context, kind, label)
    params, source = _resolve_params(context, config, kind)
    tconfig = candidate.train_config(params)
    factory = candidate.model_factory(kind, prepared.n_features, params)
    started = time.perf_counter()

    with mlflow_resource.start_run(
        context, experiment, tags={"params_source": source, "label": label}
    ) as run:
        tracking.log_params(
            {
                **{k: v for k, v in params.items() if k not in ("study_name",)},
                "params_source": source,
                "label": label,
                "dataset_path": prepared.path,
                "rows": {s: len(d) for s, d in prepared.raw.items()},
                "positives": {s: int(np.sum(d.labels[label])) for s, d in prepared.raw.items()},
                **tracking.provenance_params(prepared.dataset_hash),
            }
        )
        candidate.mlflow_log_json(
            {"manifest.json": prepared.manifest, "scaler.json": prepared.scaler.to_dict()}
        )
        tracking.log_dataset_input(prepared.path, kind.dataset_asset, prepared.dataset_hash)
        context.log.info(
            f"training {kind.name} on {device}: {len(prepared.raw['train'])} train / "
            f"{len(prepared.raw['validation'])} validation / {len(prepared.raw['test'])} test rows"
        )
        result = training.fit(
            factory,
            prepared.arrays["train"],
            prepared.arrays["validation"],
            input_keys=prepared.input_keys,
            config=tconfig,
            on_epoch=epoch_logger(context, tconfig.epochs),
        )
        summary = result.summary()
        # At the last epoch's step: logged at step 0, best_val_loss's chart mixed the final
        # value with the per-epoch ones.
        tracking.log_metrics(
            {k: v for k, v in summary.items() if k not in ("n_train", "n_val")},
            step=result.epochs_run,
        )
        candidate.mlflow_log_json({"history.json": result.history})
        p_test = training.predict_proba(
            result.model, prepared.arrays["test"], input_keys=prepared.input_keys
        )
        comps = candidate.comparisons(prepared, p_test)
        rows_path = candidate.save_gate_rows(
            *candidate.gate_rows(prepared, p_test), run.info.run_id
        )
        tables = candidate.log_evaluation(comps, kind.length_edges, model_name)

        spec = tracking.ServingSpec(
            kind=kind.name,
            hparams=dict(result.model.hparams),
            seq_len=int(prepared.raw["test"].mask.shape[1]),
            feature_names=list(prepared.raw["train"].feature_names),
            label=label,
            scaler=prepared.scaler.to_dict(),
            dataset_hash=prepared.dataset_hash,
            extra={
                "params_source": source,
                "mlflow_experiment": experiment,
                # How to rebuild its inputs at scoring time (lookback, steps, decision offset).
                "dataset_config": dict(prepared.raw["train"].config),
            },
        )
        result.model.cpu()
        info = tracking.log_sequence_model(result.model, spec, candidate.input_example(prepared))
        version = None
        if config.register_model:
            version = tracking.register_challenger(
                info.model_uri,
                model_name,
                tags={"dataset_hash": prepared.dataset_hash, "dagster_run_id": context.run.run_id},
                uri=mlflow_resource.uri(),
            )
            context.log.info(
                f"registered {model_name} version {version.version} with alias "
                f"{tracking.CHALLENGER}"
            )
            tracking.describe_model(
                model_name,
                f"Runs of the {kind.title} candidate (`{kind.asset_prefix}_candidate`), each judged "
                f"on its test window against its baseline ({kind.baselines}).",
                f"{kind.title}. Aliases: `challenger` = latest candidate, `champion` = the version "
                "that passed every quality gate and serves, `previous_champion` = rollback target.",
                uri=mlflow_resource.uri(),
            )

    main = comps[0].metrics
    metadata: dict[str, Any] = {
        "evaluation": dg.MetadataValue.md("\n\n".join(tables.values())),
        "mlflow_run_id": dg.MetadataValue.text(run.info.run_id),
        "mlflow_run": dg.MetadataValue.url(mlflow_resource.run_url(run)),
        "model_uri": dg.MetadataValue.text(info.model_uri),
        "model_name": dg.MetadataValue.text(model_name),
        "dataset_hash": dg.MetadataValue.text(prepared.dataset_hash),
        "dataset_path": dg.MetadataValue.path(prepared.path),
        "params_source": dg.MetadataValue.text(source),
        "params": dg.MetadataValue.json(
            {k: v for k, v in params.items() if k in (*kind.tuned_keys, "epochs", "seed")}
        ),
        "device": dg.MetadataValue.text(result.device),
        "best_epoch": dg.MetadataValue.int(result.best_epoch),
        "epochs_run": dg.MetadataValue.int(result.epochs_run),
        "stop_reason": dg.MetadataValue.text(result.stop_reason),
        "train_seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "total_seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        "rows": dg.MetadataValue.json({s: len(d) for s, d in prepared.raw.items()}),
    }
    for name, metrics in main.items():
        for key in ("auc_roc", "auc_pr", "brier", "log_loss", "ece_10", "accuracy"):
            value = tracking.finite_or_none(metrics[key])
            if value is not None:
                metadata[f"test_{name}_{key}"] = dg.MetadataValue.float(value)
    metadata.update(_headline_metadata(rows_path))
    metadata["gate_rows_path"] = dg.MetadataValue.path(str(rows_path))
    if version is not None:
        metadata["model_version"] = dg.MetadataValue.int(int(version.version))
        metadata["model_alias"] = dg.MetadataValue.text(tracking.CHALLENGER)
        metadata["model_version_url"] = dg.MetadataValue.url(
            mlflow_resource.model_url(model_name, version.version)
        )
    return dg.MaterializeResult(metadata=metadata)


def _headline_metadata(rows_path: Any) -> dict[str, Any]:
    """Model vs its gate baseline on the test rows, with a paired event-level interval.

    Top-level rounded floats so the Dagster UI plots them across materializations; the
    quality gates on this asset re-judge the same rows with their full settings.
    """
    from odds_pipeline.registry.gates import paired_bootstrap_ratio
    from odds_pipeline.training.candidate import load_gate_rows

    rows, info = load_gate_rows(rows_path)
    known = rows[np.isfinite(rows["baseline"])]
    res = paired_bootstrap_ratio(
        known["y"].to_numpy(),
        known["model"].to_numpy(),
        known["baseline"].to_numpy(),
        known["event_id"].to_numpy(),
        metric=info["metric"],
        n_resamples=2000,
    )
    out: dict[str, Any] = {
        "headline_metric": dg.MetadataValue.text(f"{info['metric']} vs {info['baseline_name']}")
    }
    for key, value in (
        ("headline_model", res["model"]),
        ("headline_baseline", res["base"]),
        ("headline_difference", res["model"] - res["base"]),
        ("headline_ratio", res["ratio"]),
        ("headline_ratio_ci_low", res["ci_low"]),
        ("headline_ratio_ci_high", res["ci_high"]),
    ):
        number = tracking.finite_or_none(value)
        if number is not None:
            out[key] = dg.MetadataValue.float(round(number, 4))
    return out


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "mlflow"},
    pool=POOL,
    # Not a dependency: a study is optional (the config is used without one).
    deps=[lstm_sequences],
    description="Masked LSTM win-probability candidate: trained on the train window, early-stopped on "
    "validation, evaluated on the test window against the de-vigged market probability at decision time "
    "(and the simulator's true probability); registered as `odds-lstm` with alias `challenger`.",
)
def lstm_candidate(
    context: dg.AssetExecutionContext, config: LstmTrainingConfig, mlflow: MlflowResource
) -> dg.MaterializeResult:
    return train_candidate(context, mlflow, config, kind=KINDS["lstm"], label="won")


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "mlflow"},
    pool=POOL,
    deps=[arbitrage_pair_sequences],
    description="Dual-stream ALiBi transformer candidate for an arbitrage window opening ahead (arb_ahead): "
    "evaluated on the test window against the classical Σ-implied rules (now, window minimum, slope); "
    "registered as `arb-transformer` with alias `challenger`.",
)
def transformer_candidate(
    context: dg.AssetExecutionContext, config: TransformerTrainingConfig, mlflow: MlflowResource
) -> dg.MaterializeResult:
    return train_candidate(context, mlflow, config, kind=KINDS["pair"], label=config.label)


CANDIDATE_ASSETS = [lstm_candidate, transformer_candidate]
