"""Group `training`, its Optuna studies: `lstm_tuning` and `transformer_tuning`.

Each run adds trials to a persistent study (TPE, median pruning on validation loss,
stored under $ODDS_PIPELINE_HOME/optuna/); every trial is a nested MLflow run. The candidates in
`training.py` take the best trial's parameters when a study exists.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg
from pydantic import Field

from odds_pipeline.training import tracking
from odds_pipeline.training.kinds import KINDS, ModelKind

from .datasets import arbitrage_pair_sequences, lstm_sequences
from .resources import MlflowResource
from .training import GROUP, OWNERS, POOL, check_device, epoch_logger, prepared_candidate_data


class _TuningConfig(dg.Config):
    n_trials: int = Field(default=4, description="Trials to add to the study in this run.")
    epochs: int = Field(default=3, description="Maximum epochs per trial.")
    timeout_minutes: float = Field(default=0.0, description="Stop starting trials after (0 = off).")
    patience: int = Field(default=2, description="Early-stopping patience within a trial.")
    seed: int = Field(default=7, description="TPE seed (offset by the trials already stored).")
    startup_trials: int = Field(default=3, description="Random trials before TPE models.")
    pruner_warmup_epochs: int = Field(default=1, description="Epochs before pruning may act.")
    device: str = Field(default="auto", description="auto, cpu, cuda or mps.")
    torch_threads: int = Field(default=1, description="CPU threads while fitting.")


class LstmTuningConfig(_TuningConfig):
    study_name: str = Field(default=KINDS["lstm"].study_name, description="Resumed by name.")


class TransformerTuningConfig(_TuningConfig):
    study_name: str = Field(default=KINDS["pair"].study_name, description="Resumed by name.")
    label: str = Field(default="arb_ahead", description="Target label.")


def run_tuning(
    context: dg.AssetExecutionContext,
    mlflow_resource: MlflowResource,
    config: _TuningConfig,
    *,
    kind: ModelKind,
    label: str,
) -> dg.MaterializeResult:
    """One tuning session: more trials in the persistent study, each a nested MLflow run."""
    from odds_pipeline.training import candidate, evaluation, tuning
    from odds_pipeline.training import loop as training

    experiment = kind.experiment
    check_device(config.device)
    prepared = prepared_candidate_data(context, kind, label)
    base = {
        **kind.fixed_tuning_params,
        "epochs": config.epochs,
        "patience": config.patience,
        "seed": config.seed,
        "device": config.device,
        "torch_threads": config.torch_threads,
    }

    def objective(params: dict[str, Any], on_epoch: Callable) -> tuple[float, dict[str, float]]:
        tconfig = candidate.train_config(params)
        log_epoch = epoch_logger(context, tconfig.epochs, prefix="  ")

        def both(epoch: int, metrics: dict[str, float]) -> None:
            log_epoch(epoch, metrics)
            on_epoch(epoch, metrics)

        result = training.fit(
            candidate.model_factory(kind, prepared.n_features, params),
            prepared.arrays["train"],
            prepared.arrays["validation"],
            input_keys=prepared.input_keys,
            config=tconfig,
            on_epoch=both,
        )
        p_val = training.predict_proba(
            result.model, prepared.arrays["validation"], input_keys=prepared.input_keys
        )
        val = evaluation.binary_metrics(prepared.arrays["validation"]["y"], p_val)
        extra = {f"val_{k}": val[k] for k in ("auc_roc", "auc_pr", "brier", "ece_10")}
        return result.best_val_loss, extra

    def on_trial_end(trial: Any) -> None:
        context.log.info(
            f"trial {trial.number} {trial.state.name} value {trial.value} params {trial.params}"
        )

    with mlflow_resource.start_run(
        context, experiment, tags={"optuna.study": config.study_name, "label": label}
    ) as run:
        study = tuning.load_or_create_study(
            config.study_name,
            seed=config.seed,
            n_startup_trials=config.startup_trials,
            pruner_warmup_epochs=config.pruner_warmup_epochs,
        )
        tracking.log_params(
            {
                **config.model_dump(),
                "label": label,
                "trials_before": len(study.trials),
                **tracking.provenance_params(prepared.dataset_hash),
            }
        )
        study.set_user_attr(f"dataset_hash.{len(study.trials)}", prepared.dataset_hash)
        summary = tuning.run_study(
            study,
            objective,
            kind=kind.name,
            n_trials=config.n_trials,
            experiment=experiment,
            timeout_s=config.timeout_minutes * 60 or None,
            fixed_params=base,
            trial_tags={tracking.DAGSTER_RUN_TAG: context.run.run_id},
            on_trial_end=on_trial_end,
        )
        if summary.best_value is not None:
            tracking.log_metrics({f"best_{tuning.OBJECTIVE}": summary.best_value})
            tracking.log_params({f"best.{k}": v for k, v in (summary.best_params or {}).items()})
        candidate.mlflow_log_json({"trials.json": summary.trials_table})

    from odds_pipeline.training.evaluation import table_to_markdown

    metadata: dict[str, Any] = {
        "study_name": dg.MetadataValue.text(summary.study_name),
        "storage": dg.MetadataValue.path(tuning.storage_url().removeprefix("sqlite:///")),
        "trials_before": dg.MetadataValue.int(summary.trials_before),
        "trials_total": dg.MetadataValue.int(summary.trials_after),
        "new_trials": dg.MetadataValue.int(summary.new_trials),
        "states": dg.MetadataValue.json(summary.states),
        "best_params": dg.MetadataValue.json(summary.best_params or {}),
        "trials": dg.MetadataValue.md(table_to_markdown(summary.trials_table, ".5f")),
        "mlflow_run_id": dg.MetadataValue.text(run.info.run_id),
        "mlflow_run": dg.MetadataValue.url(mlflow_resource.run_url(run)),
        "dataset_hash": dg.MetadataValue.text(prepared.dataset_hash),
    }
    if summary.best_value is not None:
        metadata["best_value"] = dg.MetadataValue.float(summary.best_value)
        metadata["best_trial"] = dg.MetadataValue.int(int(summary.best_trial))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"optuna", "mlflow"},
    pool=POOL,
    deps=[lstm_sequences],
    description="Optuna study for the LSTM (TPE, median pruning on validation loss, persisted under "
    "$ODDS_PIPELINE_HOME/optuna/ so each run adds trials); each trial is a nested MLflow run. lstm_candidate uses "
    "the best trial's parameters.",
)
def lstm_tuning(
    context: dg.AssetExecutionContext, config: LstmTuningConfig, mlflow: MlflowResource
) -> dg.MaterializeResult:
    return run_tuning(
        context,
        mlflow,
        config,
        kind=KINDS["lstm"],
        label="won",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"optuna", "mlflow"},
    pool=POOL,
    deps=[arbitrage_pair_sequences],
    description="Optuna study for the arbitrage transformer (TPE, median pruning, persisted); each trial "
    "is a nested MLflow run. transformer_candidate uses the best trial's parameters.",
)
def transformer_tuning(
    context: dg.AssetExecutionContext, config: TransformerTuningConfig, mlflow: MlflowResource
) -> dg.MaterializeResult:
    return run_tuning(
        context,
        mlflow,
        config,
        kind=KINDS["pair"],
        label=config.label,
    )


TUNING_ASSETS = [lstm_tuning, transformer_tuning]
