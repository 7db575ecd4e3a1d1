"""Group `training`: the two models' candidates and Optuna studies, tracked in MLflow.

`lstm_candidate` / `transformer_candidate` train on the train window of their dataset
(early stopping on the validation window), evaluate on the held-out test window side by
side with the baselines on the same rows (LSTM: the de-vigged market probability at
decision time, and the simulator's true probability where known; transformer: the
classical Σ-implied rules), log everything to MLflow, register the model and give the new
version the alias ``challenger``. `lstm_tuning` / `transformer_tuning` run Optuna studies
whose best parameters the candidates use when a study exists.

MLflow resource: ours (`MlflowResource`), not dagster-mlflow's `mlflow_tracking` and
`end_mlflow_on_run_finished` hook. That resource keeps one MLflow run open across a whole
Dagster run and relies on the hook to end it when the job's *last op* succeeds or a step
fails; an asset materialized from the UI, a sensor or `materialize()` outside a job that
carries the hook, or a run whose last step is skipped, leaves it RUNNING, and it imports
mlflow when the code location loads. Ours scopes each MLflow run to the asset body
(try/finally: FINISHED or FAILED, also on a Dagster termination), ends anything left
open at resource teardown, and at setup marks KILLED the runs of Dagster runs that have
finished (a process killed hard).
"""

import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
from pydantic import Field

from odds_pipeline.training import tracking

from .datasets import arbitrage_pair_sequences, load_materialized_dataset, lstm_sequences

GROUP = "training"
OWNERS = ["team:odds-ml"]
POOL = "gpu"
LSTM_EXPERIMENT = tracking.LSTM_MODEL_NAME
TRANSFORMER_EXPERIMENT = tracking.TRANSFORMER_MODEL_NAME
LSTM_STUDY = "odds-lstm"
TRANSFORMER_STUDY = "arb-transformer"
LSTM_LENGTH_EDGES = (1, 2, 4, 8, 16, 32)
PAIR_LENGTH_EDGES = (1, 8, 16, 24, 32, 64)
# Study parameters a candidate takes over (the rest of its config stays as configured).
TUNED_KEYS = {
    "lstm": ("hidden", "num_layers", "dropout", "lr", "weight_decay", "batch_size"),
    "pair": (
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
}
TABLE_COLUMNS = ("n", "auc_roc", "auc_pr", "brier", "log_loss", "ece_10", "accuracy", "mean_p")


# --------------------------------------------------------------------------- resource


class MlflowResource(dg.ConfigurableResource):
    """MLflow tracking for the training assets: runs that always end, links for the UI.

    See the module docstring for why this is ours rather than dagster-mlflow's.
    """

    tracking_uri: str = Field(
        default="",
        description="MLflow tracking URI; empty = sqlite:///<state>/mlflow/mlflow.db (absolute).",
    )
    ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="Base URL of the MLflow UI (`make mlflow`) for links in asset metadata.",
    )

    def uri(self) -> str:
        return self.tracking_uri or tracking.tracking_uri()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Close MLflow runs that a hard-killed Dagster run left RUNNING (never fails a run)."""
        instance = context.instance
        if instance is None:
            return

        def is_finished(run_id: str) -> bool:
            run = instance.get_run_by_id(run_id)
            return run is not None and run.is_finished

        try:
            closed = tracking.close_orphaned_runs(is_finished, self.uri())
        except Exception as exc:  # tracking store trouble surfaces in the asset itself
            context.log.warning(f"could not check for orphaned MLflow runs: {exc}")
            return
        if closed:
            context.log.warning(f"closed {len(closed)} orphaned MLflow run(s): {closed}")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Safety net: nothing this process started stays RUNNING after the step."""
        if "mlflow" not in sys.modules:
            return
        ended = tracking.end_active_runs("FAILED")
        if ended:
            context.log.warning(f"ended MLflow run(s) left open: {ended}")

    @contextmanager
    def start_run(
        self,
        context: dg.AssetExecutionContext,
        experiment: str,
        run_name: str | None = None,
        *,
        nested: bool = False,
        tags: dict[str, Any] | None = None,
        finished_on: tuple[type[BaseException], ...] = (),
    ) -> Iterator[Any]:
        """A tracked run tagged with the Dagster run, job and asset that started it."""
        dagster_tags = {
            tracking.DAGSTER_RUN_TAG: context.run.run_id,
            "dagster.job": context.run.job_name,
            "dagster.asset": context.asset_key.to_user_string(),
        }
        with tracking.tracked_run(
            experiment,
            run_name or context.asset_key.to_user_string(),
            nested=nested,
            tags={**dagster_tags, **(tags or {})},
            description=f"Dagster run {context.run.run_id} ({context.run.job_name})",
            finished_on=finished_on,
            uri=self.uri(),
        ) as run:
            yield run

    def run_url(self, run: Any) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"

    def model_url(self, name: str, version: str | int) -> str:
        return f"{self.ui_url.rstrip('/')}/#/models/{name}/versions/{version}"


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
    study_name: str = Field(default=LSTM_STUDY, description="Optuna study to take parameters from.")


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
        default=TRANSFORMER_STUDY, description="Optuna study to take parameters from."
    )


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
    study_name: str = Field(default=LSTM_STUDY, description="Resumed by name.")


class TransformerTuningConfig(_TuningConfig):
    study_name: str = Field(default=TRANSFORMER_STUDY, description="Resumed by name.")
    label: str = Field(default="arb_ahead", description="Target label.")


# --------------------------------------------------------------------------- data


@dataclass
class Prepared:
    """A dataset split by time, scaled with a scaler fit on the train window only."""

    kind: str  # "lstm" | "pair"
    label: str
    raw: dict[str, Any]  # split -> SequenceDataset (raw values)
    arrays: dict[str, dict[str, np.ndarray]]  # split -> scaled arrays for fit/predict
    scaler: Any
    manifest: dict[str, Any]
    path: str

    @property
    def input_keys(self) -> tuple[str, ...]:
        return ("x", "mask") if self.kind == "lstm" else ("x_a", "x_b", "mask", "market_type")

    @property
    def n_features(self) -> int:
        return len(self.raw["train"].feature_names)

    @property
    def dataset_hash(self) -> str:
        return str(self.manifest["content_hash"])


def _fail(description: str, **metadata: Any) -> dg.Failure:
    return dg.Failure(description=description, metadata=metadata, allow_retries=False)


def prepare(dataset: Any, kind: str, label: str, path: str = "") -> Prepared:
    """Split (the dataset's own time split), check each window is usable, fit the scaler."""
    from odds_pipeline.datasets.scaling import apply_scaler, fit_scaler

    if label not in dataset.labels:
        raise _fail(f"label {label!r} not in the dataset (has {sorted(dataset.labels)})")
    if "split" not in dataset.meta:
        raise _fail("the dataset has no time split; re-materialize it")
    raw = dataset.splits()
    counts = {s: len(d) for s, d in raw.items()}
    positives = {s: int(np.sum(d.labels[label])) for s, d in raw.items()}
    for split in ("train", "validation", "test"):
        n, pos = counts[split], positives[split]
        if n == 0 or (split != "test" and pos in (0, n)):
            raise _fail(
                f"{dataset.name}: the {split} window has {n} rows and {pos} positives of "
                f"{label!r}; training needs both classes in train and validation and a "
                "non-empty test window. Add data or change the dataset's split config.",
                rows=dg.MetadataValue.json(counts),
                positives=dg.MetadataValue.json(positives),
            )
    scaler = fit_scaler(raw["train"])
    arrays = {s: apply_scaler(d, scaler).to_arrays(label) for s, d in raw.items()}
    return Prepared(
        kind=kind,
        label=label,
        raw=raw,
        arrays=arrays,
        scaler=scaler,
        manifest=dataset.manifest(),
        path=path,
    )


def model_factory(kind: str, n_features: int, params: dict[str, Any]) -> Callable[[], Any]:
    """A zero-argument factory (called by fit after seeding: reproducible initial weights)."""

    def build() -> Any:
        from odds_pipeline.training.models import DualStreamArbTransformer, MaskedLSTM

        if kind == "lstm":
            return MaskedLSTM(
                n_features,
                hidden=int(params["hidden"]),
                num_layers=int(params["num_layers"]),
                dropout=float(params["dropout"]),
            )
        n_layers = int(params["n_layers"])
        return DualStreamArbTransformer(
            n_features,
            d_model=int(params["d_model"]),
            n_heads=int(params["n_heads"]),
            n_layers=n_layers,
            cross_from_layer=min(int(params["cross_from_layer"]), n_layers),
            dropout=float(params["dropout"]),
            mlp_hidden=int(params.get("mlp_hidden", params["d_model"])),
            ff_mult=int(params["ff_mult"]),
        )

    return build


def train_config(params: dict[str, Any]) -> Any:
    from odds_pipeline.training.loop import TrainConfig

    return TrainConfig(
        epochs=int(params["epochs"]),
        batch_size=int(params["batch_size"]),
        lr=float(params["lr"]),
        weight_decay=float(params["weight_decay"]),
        patience=int(params["patience"]),
        seed=int(params["seed"]),
        device=None if params["device"] == "auto" else params["device"],
        pos_weight=params.get("pos_weight"),
        torch_threads=int(params["torch_threads"]) or None,
    )


def check_device(device: str) -> str:
    """The device fit will use; an unavailable explicit choice is a config error, not a retry."""
    from odds_pipeline.training.loop import select_device

    try:
        return str(select_device(None if device == "auto" else device))
    except ValueError as exc:
        raise _fail(f"{exc}; set `device` to auto or cpu in the run config") from exc


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


# --------------------------------------------------------------------------- evaluation


@dataclass
class Comparison:
    """Forecasts compared on the same rows of the test window.

    ``scope`` prefixes MLflow metrics and artifact names: "test" (every row with the
    baseline) or "simulator" (the simulated rows, where the oracle is known).
    """

    scope: str
    title: str
    y: np.ndarray
    forecasts: dict[str, np.ndarray]
    seq_len: np.ndarray
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def _platt(score_train: np.ndarray, y_train: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """1-D logistic calibration of a rule's score, fit on the train window (Newton, tiny L2).

    The classical rules give scores (Σ implied, its minimum, its slope), not
    probabilities: calibrating them on the same train window the model learns from makes
    Brier, log loss and ECE comparable, and keeps their AUCs (a monotone map).
    """
    s = np.nan_to_num(np.asarray(score_train, dtype=np.float64))
    y = np.asarray(y_train, dtype=np.float64)
    mu, sd = s.mean(), s.std() or 1.0
    z = (s - mu) / sd
    w = np.zeros(2)
    X = np.stack([np.ones_like(z), z], axis=1)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + 1e-4 * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + 1e-4 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break

    def predict(score: np.ndarray) -> np.ndarray:
        zz = (np.nan_to_num(np.asarray(score, dtype=np.float64)) - mu) / sd
        return np.clip(1.0 / (1.0 + np.exp(-(w[0] + w[1] * zz))), 0.0, 1.0)

    return predict


PAIR_RULES = {
    "rule_sum_now": "implied_sum_last",
    "rule_sum_min": "implied_sum_min",
    "rule_sum_slope": "implied_sum_slope",
}


def comparisons(prepared: Prepared, p_model: np.ndarray) -> list[Comparison]:
    """The model and its baselines on the same test rows (one or two comparisons)."""
    from odds_pipeline.training.evaluation import binary_metrics

    test = prepared.raw["test"]
    meta = test.meta
    y = np.asarray(test.labels[prepared.label], dtype=np.float64)
    seq_len = meta["seq_len"].to_numpy()
    out = []
    if prepared.kind == "lstm":
        market = meta["market_prob"].to_numpy(np.float64)
        rows = np.isfinite(market)
        out.append(
            Comparison(
                "test",
                "test window: model vs de-vigged market probability at decision time",
                y[rows],
                {"model": p_model[rows], "market": market[rows]},
                seq_len[rows],
            )
        )
        oracle = meta["true_prob"].to_numpy(np.float64) if "true_prob" in meta else None
        sim = rows & np.isfinite(oracle) if oracle is not None else np.zeros_like(rows)
        if sim.any() and sim.sum() == rows.sum():  # every row is simulated: one table
            out[0].title = "test window: model vs de-vigged market vs oracle (true probability)"
            out[0].forecasts["oracle"] = oracle[rows]
        elif sim.any():
            out.append(
                Comparison(
                    "simulator",
                    "simulator rows: model vs market vs oracle (true probability)",
                    y[sim],
                    {"model": p_model[sim], "market": market[sim], "oracle": oracle[sim]},
                    seq_len[sim],
                )
            )
    else:
        train = prepared.raw["train"]
        y_train = train.labels[prepared.label]
        forecasts = {"model": p_model}
        for name, column in PAIR_RULES.items():
            calibrate = _platt(train.meta[column].to_numpy(np.float64), y_train)
            forecasts[name] = calibrate(meta[column].to_numpy(np.float64))
        out.append(
            Comparison(
                "test",
                f"test window ({prepared.label}): model vs classical Σ-implied rules "
                "(each calibrated on the train window)",
                y,
                forecasts,
                seq_len,
            )
        )
    for comparison in out:
        comparison.metrics = {
            name: binary_metrics(comparison.y, p) for name, p in comparison.forecasts.items()
        }
    return out


def metrics_table(comparison: Comparison) -> dict[str, list[Any]]:
    table: dict[str, list[Any]] = {"forecast": list(comparison.metrics)}
    for column in TABLE_COLUMNS:
        table[column] = [m[column] for m in comparison.metrics.values()]
    return table


def length_table(comparison: Comparison, edges: tuple[int, ...]) -> dict[str, list[Any]]:
    """Accuracy and Brier per sequence-length bucket, one column per forecast (wide)."""
    from odds_pipeline.training.evaluation import length_buckets, metrics_by_group

    long = metrics_by_group(
        comparison.y, comparison.forecasts, length_buckets(comparison.seq_len, edges)
    )
    groups = list(dict.fromkeys(long["group"]))
    wide: dict[str, list[Any]] = {"seq_len": groups, "n": []}
    index = {(m, g): i for i, (m, g) in enumerate(zip(long["model"], long["group"], strict=True))}
    first = next(iter(comparison.forecasts))
    wide["n"] = [long["n"][index[(first, g)]] for g in groups]
    for metric in ("accuracy", "brier"):
        for name in comparison.forecasts:
            wide[f"{name} {metric}"] = [long[metric][index[(name, g)]] for g in groups]
    return wide


def log_evaluation(
    comparisons_: list[Comparison], edges: tuple[int, ...], title: str
) -> dict[str, Any]:
    """MLflow metrics ``<scope>.<forecast>.<metric>`` and PNG/markdown/JSON artifacts.

    Returns the markdown tables for Dagster metadata.
    """
    import json

    import mlflow

    from odds_pipeline.training import evaluation

    tables: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="odds-eval-") as tmp:
        out = Path(tmp)
        for comparison in comparisons_:
            scope = comparison.scope
            for name, metrics in comparison.metrics.items():
                tracking.log_metrics({f"{scope}.{name}.{k}": v for k, v in metrics.items()})
            overall = metrics_table(comparison)
            by_length = length_table(comparison, edges)
            md = (
                f"**{comparison.title}**\n\n{evaluation.table_to_markdown(overall)}\n\n"
                f"By sequence length:\n\n{evaluation.table_to_markdown(by_length)}"
            )
            tables[scope] = md
            (out / f"{scope}_metrics.md").write_text(md + "\n")
            (out / f"{scope}_metrics.json").write_text(
                json.dumps({"overall": overall, "by_length": by_length}, indent=2, default=str)
            )
            evaluation.plot_calibration(
                comparison.y,
                comparison.forecasts,
                out / f"{scope}_calibration.png",
                title=f"{title}: calibration ({scope})",
            )
            evaluation.plot_roc_pr(
                comparison.y,
                comparison.forecasts,
                out / f"{scope}_roc.png",
                out / f"{scope}_pr.png",
                title=f"{title} ({scope})",
            )
            long = evaluation.metrics_by_group(
                comparison.y,
                comparison.forecasts,
                evaluation.length_buckets(comparison.seq_len, edges),
            )
            for metric in ("accuracy", "brier"):
                evaluation.plot_metric_by_group(
                    long,
                    out / f"{scope}_{metric}_by_length.png",
                    metric=metric,
                    title=f"{title}: {metric} by sequence length ({scope})",
                )
        mlflow.log_artifacts(str(out), artifact_path="evaluation")
    return tables


# --------------------------------------------------------------------------- candidates


def _resolve_params(
    context: dg.AssetExecutionContext, config: _TrainingConfig, kind: str
) -> tuple[dict[str, Any], str]:
    """The config's parameters, with the study's best trial's over them when asked and found."""
    params = config.model_dump()
    source = "config"
    if config.use_tuned_params:
        from odds_pipeline.training import tuning

        best = tuning.best_params(config.study_name)
        if best is not None:
            best_params, number, value = best
            taken = {k: v for k, v in best_params.items() if k in TUNED_KEYS[kind]}
            params.update(taken)
            source = f"optuna:{config.study_name}#trial{number}"
            context.log.info(
                f"using the best trial of study {config.study_name!r} "
                f"(#{number}, {tuning.OBJECTIVE} {value:.5f}): {taken}"
            )
        else:
            context.log.info(f"no completed study {config.study_name!r}: using the config")
    return params, source


def _input_example(prepared: Prepared, rows: int = 5) -> np.ndarray:
    test = prepared.raw["test"]
    n = min(rows, len(test))
    if prepared.kind == "lstm":
        return tracking.pack_lstm_input(test.x[:n], test.mask[:n])
    return tracking.pack_pair_input(test.x_a[:n], test.x_b[:n], test.mask[:n], test.market_type[:n])


def train_candidate(
    context: dg.AssetExecutionContext,
    mlflow_resource: MlflowResource,
    config: _TrainingConfig,
    *,
    kind: str,
    upstream: dg.AssetKey,
    label: str,
) -> dg.MaterializeResult:
    """Everything a candidate asset does; the two assets differ only in kind and config."""
    from odds_pipeline.training import loop as training

    experiment = LSTM_EXPERIMENT if kind == "lstm" else TRANSFORMER_EXPERIMENT
    model_name = tracking.LSTM_MODEL_NAME if kind == "lstm" else tracking.TRANSFORMER_MODEL_NAME
    device = check_device(config.device)
    dataset, path = load_materialized_dataset(context, upstream)
    prepared = prepare(dataset, kind, label, path)
    params, source = _resolve_params(context, config, kind)
    tconfig = train_config(params)
    factory = model_factory(kind, prepared.n_features, params)
    edges = LSTM_LENGTH_EDGES if kind == "lstm" else PAIR_LENGTH_EDGES
    started = time.perf_counter()

    with mlflow_resource.start_run(
        context, experiment, tags={"params_source": source, "label": label}
    ) as run:
        tracking.log_params(
            {
                **{k: v for k, v in params.items() if k not in ("study_name",)},
                "params_source": source,
                "label": label,
                "dataset_path": path,
                "rows": {s: len(d) for s, d in prepared.raw.items()},
                "positives": {s: int(np.sum(d.labels[label])) for s, d in prepared.raw.items()},
                **tracking.provenance_params(prepared.dataset_hash),
            }
        )
        mlflow_log_json(
            {"manifest.json": prepared.manifest, "scaler.json": prepared.scaler.to_dict()}
        )
        context.log.info(
            f"training {kind} on {device}: {len(prepared.raw['train'])} train / "
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
        tracking.log_metrics({k: v for k, v in summary.items() if k not in ("n_train", "n_val")})
        mlflow_log_json({"history.json": result.history})
        p_test = training.predict_proba(
            result.model, prepared.arrays["test"], input_keys=prepared.input_keys
        )
        comps = comparisons(prepared, p_test)
        tables = log_evaluation(comps, edges, model_name)

        spec = tracking.ServingSpec(
            kind=kind,
            hparams=dict(result.model.hparams),
            seq_len=int(prepared.raw["test"].mask.shape[1]),
            feature_names=list(prepared.raw["train"].feature_names),
            label=label,
            scaler=prepared.scaler.to_dict(),
            dataset_hash=prepared.dataset_hash,
            extra={"params_source": source, "mlflow_experiment": experiment},
        )
        result.model.cpu()
        info = tracking.log_sequence_model(result.model, spec, _input_example(prepared))
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

    main = comps[0].metrics
    metadata: dict[str, Any] = {
        "evaluation": dg.MetadataValue.md("\n\n".join(tables.values())),
        "mlflow_run_id": dg.MetadataValue.text(run.info.run_id),
        "mlflow_run": dg.MetadataValue.url(mlflow_resource.run_url(run)),
        "model_uri": dg.MetadataValue.text(info.model_uri),
        "model_name": dg.MetadataValue.text(model_name),
        "dataset_hash": dg.MetadataValue.text(prepared.dataset_hash),
        "dataset_path": dg.MetadataValue.path(path),
        "params_source": dg.MetadataValue.text(source),
        "params": dg.MetadataValue.json(
            {k: v for k, v in params.items() if k in (*TUNED_KEYS[kind], "epochs", "seed")}
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
    if version is not None:
        metadata["model_version"] = dg.MetadataValue.int(int(version.version))
        metadata["model_alias"] = dg.MetadataValue.text(tracking.CHALLENGER)
        metadata["model_version_url"] = dg.MetadataValue.url(
            mlflow_resource.model_url(model_name, version.version)
        )
    return dg.MaterializeResult(metadata=metadata)


def mlflow_log_json(files: dict[str, Any]) -> None:
    """Small JSON artifacts (manifest, scaler, history) under ``run/``."""
    import json

    import mlflow

    with tempfile.TemporaryDirectory(prefix="odds-json-") as tmp:
        for name, payload in files.items():
            (Path(tmp) / name).write_text(json.dumps(payload, indent=2, default=str))
        mlflow.log_artifacts(tmp, artifact_path="run")


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "mlflow"},
    pool=POOL,
    deps=[lstm_sequences, "lstm_tuning"],
    description="Masked LSTM win-probability candidate: trained on the train window, early-stopped on "
    "validation, evaluated on the test window against the de-vigged market probability at decision time "
    "(and the simulator's true probability); registered as `odds-lstm` with alias `challenger`.",
)
def lstm_candidate(
    context: dg.AssetExecutionContext, config: LstmTrainingConfig, mlflow: MlflowResource
) -> dg.MaterializeResult:
    return train_candidate(
        context, mlflow, config, kind="lstm", upstream=lstm_sequences.key, label="won"
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"pytorch", "mlflow"},
    pool=POOL,
    deps=[arbitrage_pair_sequences, "transformer_tuning"],
    description="Dual-stream ALiBi transformer candidate for an arbitrage window opening ahead (arb_ahead): "
    "evaluated on the test window against the classical Σ-implied rules (now, window minimum, slope); "
    "registered as `arb-transformer` with alias `challenger`.",
)
def transformer_candidate(
    context: dg.AssetExecutionContext, config: TransformerTrainingConfig, mlflow: MlflowResource
) -> dg.MaterializeResult:
    return train_candidate(
        context,
        mlflow,
        config,
        kind="pair",
        upstream=arbitrage_pair_sequences.key,
        label=config.label,
    )


# --------------------------------------------------------------------------- tuning


def run_tuning(
    context: dg.AssetExecutionContext,
    mlflow_resource: MlflowResource,
    config: _TuningConfig,
    *,
    kind: str,
    upstream: dg.AssetKey,
    label: str,
    fixed: dict[str, Any],
) -> dg.MaterializeResult:
    """One tuning session: more trials in the persistent study, each a nested MLflow run."""
    from odds_pipeline.training import evaluation, tuning
    from odds_pipeline.training import loop as training

    experiment = LSTM_EXPERIMENT if kind == "lstm" else TRANSFORMER_EXPERIMENT
    check_device(config.device)
    dataset, path = load_materialized_dataset(context, upstream)
    prepared = prepare(dataset, kind, label, path)
    base = {
        **fixed,
        "epochs": config.epochs,
        "patience": config.patience,
        "seed": config.seed,
        "device": config.device,
        "torch_threads": config.torch_threads,
    }

    def objective(params: dict[str, Any], on_epoch: Callable) -> tuple[float, dict[str, float]]:
        tconfig = train_config(params)
        log_epoch = epoch_logger(context, tconfig.epochs, prefix="  ")

        def both(epoch: int, metrics: dict[str, float]) -> None:
            log_epoch(epoch, metrics)
            on_epoch(epoch, metrics)

        result = training.fit(
            model_factory(kind, prepared.n_features, params),
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
            kind=kind,
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
        mlflow_log_json({"trials.json": summary.trials_table})

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
    "<state>/optuna/ so each run adds trials); each trial is a nested MLflow run. lstm_candidate uses "
    "the best trial's parameters.",
)
def lstm_tuning(
    context: dg.AssetExecutionContext, config: LstmTuningConfig, mlflow: MlflowResource
) -> dg.MaterializeResult:
    return run_tuning(
        context,
        mlflow,
        config,
        kind="lstm",
        upstream=lstm_sequences.key,
        label="won",
        fixed={},
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
        kind="pair",
        upstream=arbitrage_pair_sequences.key,
        label=config.label,
        fixed={"mlp_hidden": 32},
    )


TRAINING_ASSETS = [lstm_tuning, transformer_tuning, lstm_candidate, transformer_candidate]
CANDIDATE_ASSETS = [lstm_candidate, transformer_candidate]
TUNING_ASSETS = [lstm_tuning, transformer_tuning]
