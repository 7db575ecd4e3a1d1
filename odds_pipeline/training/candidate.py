"""A candidate's data and its judgement: time-split and scaled inputs, baselines on the same rows.

What a candidate asset does besides fitting: check each window is usable, fit the scaler
on the train window, compare the model with the baselines a user would otherwise use on
the same test rows (per kind: the de-vigged market, or the classical Σ-implied rules
calibrated on the train window), and log tables and plots to MLflow. No Dagster here.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odds_pipeline.training import tracking
from odds_pipeline.training.kinds import CALIBRATION_ALPHA, ModelKind

TABLE_COLUMNS = ("n", "auc_roc", "auc_pr", "brier", "log_loss", "ece_10", "accuracy", "mean_p")


class CandidateDataError(ValueError):
    """The dataset cannot train this candidate (a data problem to fix, not to retry)."""

    def __init__(self, message: str, **metadata: Any) -> None:
        super().__init__(message)
        self.metadata = metadata


@dataclass
class Prepared:
    """A dataset split by time, scaled with a scaler fit on the train window only."""

    kind: ModelKind
    label: str
    raw: dict[str, Any]  # split -> SequenceDataset (raw values)
    arrays: dict[str, dict[str, np.ndarray]]  # split -> scaled arrays for fit/predict
    scaler: Any
    manifest: dict[str, Any]
    path: str

    @property
    def input_keys(self) -> tuple[str, ...]:
        return self.kind.input_keys

    @property
    def n_features(self) -> int:
        return len(self.raw["train"].feature_names)

    @property
    def dataset_hash(self) -> str:
        return str(self.manifest["content_hash"])


def prepare(dataset: Any, kind: ModelKind, label: str, path: str = "") -> Prepared:
    """Split (the dataset's own time split), check each window is usable, fit the scaler."""
    from odds_pipeline.datasets.scaling import fit_scaler

    if label not in dataset.labels:
        raise CandidateDataError(
            f"label {label!r} not in the dataset (has {sorted(dataset.labels)})"
        )
    if "split" not in dataset.meta:
        raise CandidateDataError("the dataset has no time split; re-materialize it")
    raw = dataset.splits()
    counts = {s: len(d) for s, d in raw.items()}
    positives = {s: int(np.sum(d.labels[label])) for s, d in raw.items()}
    for split in ("train", "validation", "test"):
        n, pos = counts[split], positives[split]
        if n == 0 or (split != "test" and pos in (0, n)):
            raise CandidateDataError(
                f"{dataset.name}: the {split} window has {n} rows and {pos} positives of "
                f"{label!r}; training needs both classes in train and validation and a "
                "non-empty test window. Add data or change the dataset's split config.",
                rows=counts,
                positives=positives,
            )
    scaler = fit_scaler(raw["train"])
    arrays = {s: model_arrays(kind, d, scaler, label) for s, d in raw.items()}
    return Prepared(
        kind=kind,
        label=label,
        raw=raw,
        arrays=arrays,
        scaler=scaler,
        manifest=dataset.manifest(),
        path=path,
    )


def model_arrays(kind: ModelKind, dataset: Any, scaler: Any, label: str) -> dict[str, np.ndarray]:
    """What fit/predict take: scaled values, mask, label, plus the inputs the served model
    derives from its one array (``ModelKind.unpacked_inputs``), derived the same way here."""
    from odds_pipeline.datasets.scaling import apply_scaler

    arrays = apply_scaler(dataset, scaler).to_arrays(label)
    n_features = len(dataset.feature_names)
    for key, value in kind.unpacked_inputs(dataset, n_features).items():
        arrays.setdefault(key, value)
    return arrays


def model_factory(kind: ModelKind, n_features: int, params: dict[str, Any]) -> Callable[[], Any]:
    """A zero-argument factory (called by fit after seeding: reproducible initial weights)."""

    def build() -> Any:
        return kind.network(n_features, params)

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
        # never worse than the starting point on validation (the market, for the LSTM)
        keep_initial=bool(params.get("keep_initial", True)),
        calibration_alpha=params.get("calibration_alpha", CALIBRATION_ALPHA),
    )


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


def _test_rows(prepared: Prepared) -> tuple[Any, np.ndarray, np.ndarray]:
    test = prepared.raw["test"]
    y = np.asarray(test.labels[prepared.label], dtype=np.float64)
    return test.meta, y, test.meta["seq_len"].to_numpy()


def market_comparisons(prepared: Prepared, p_model: np.ndarray) -> list[Comparison]:
    """The de-vigged market at decision time (and the simulator's oracle where known)."""
    meta, y, seq_len = _test_rows(prepared)
    market = meta["market_prob"].to_numpy(np.float64)
    rows = np.isfinite(market)
    out = [
        Comparison(
            "test",
            "test window: model vs de-vigged market probability at decision time",
            y[rows],
            {"model": p_model[rows], "market": market[rows]},
            seq_len[rows],
        )
    ]
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
    return out


def rule_comparisons(prepared: Prepared, p_model: np.ndarray) -> list[Comparison]:
    """The classical Σ-implied rules, each calibrated on the train window."""
    meta, y, seq_len = _test_rows(prepared)
    forecasts = {"model": p_model, **_rule_forecasts(prepared, "test")}
    return [
        Comparison(
            "test",
            f"test window ({prepared.label}): model vs classical Σ-implied rules "
            "(each calibrated on the train window)",
            y,
            forecasts,
            seq_len,
        )
    ]


def _rule_forecasts(prepared: Prepared, split: str) -> dict[str, np.ndarray]:
    train = prepared.raw["train"]
    y_train = train.labels[prepared.label]
    meta = prepared.raw[split].meta
    return {
        name: _platt(train.meta[column].to_numpy(np.float64), y_train)(
            meta[column].to_numpy(np.float64)
        )
        for name, column in PAIR_RULES.items()
    }


def market_gate_baseline(prepared: Prepared) -> tuple[str, np.ndarray]:
    """The de-vigged market probability at the decision time (NaN where no market)."""
    return "market", prepared.raw["test"].meta["market_prob"].to_numpy(np.float64)


def rule_gate_baseline(prepared: Prepared) -> tuple[str, np.ndarray]:
    """The classical rule with the best AUC-PR on the validation window (never on test)."""
    from odds_pipeline.training.evaluation import binary_metrics

    y_val = np.asarray(prepared.raw["validation"].labels[prepared.label], dtype=np.float64)
    val = _rule_forecasts(prepared, "validation")
    scores = {name: binary_metrics(y_val, p)["auc_pr"] for name, p in val.items()}
    best = max(scores, key=lambda name: np.nan_to_num(scores[name], nan=-1.0))
    return best, _rule_forecasts(prepared, "test")[best]


# Which baselines judge a kind (ModelKind.baselines names one).
BASELINES: dict[str, Callable[[Prepared, np.ndarray], list[Comparison]]] = {
    "market": market_comparisons,
    "rules": rule_comparisons,
}


# The one baseline the quality gates compare with, per ModelKind.baselines.
GATE_BASELINES: dict[str, Callable[[Prepared], tuple[str, np.ndarray]]] = {
    "market": market_gate_baseline,
    "rules": rule_gate_baseline,
}


def gate_rows(prepared: Prepared, p_model: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The test rows the gates judge: event, label, model and baseline, with what they need.

    Saved beside the candidate so every gate (and a later re-check) reads the same rows.
    """
    import pandas as pd

    test = prepared.raw["test"]
    baseline_name, baseline = GATE_BASELINES[prepared.kind.baselines](prepared)
    frame = pd.DataFrame(
        {
            "event_id": test.meta["event_id"].astype(str).to_numpy(),
            "y": np.asarray(test.labels[prepared.label], dtype=np.float64),
            "model": np.asarray(p_model, dtype=np.float64),
            "baseline": np.asarray(baseline, dtype=np.float64),
        }
    )
    train_y = np.asarray(prepared.raw["train"].labels[prepared.label], dtype=np.float64)
    info = {
        "kind": prepared.kind.name,
        "label": prepared.label,
        "metric": prepared.kind.gate_metric,
        "baseline_name": baseline_name,
        "train_rows": len(train_y),
        "train_positives": int(train_y.sum()),
        "dataset_hash": prepared.dataset_hash,
        "dataset_path": prepared.path,
    }
    return frame, info


def save_gate_rows(rows: Any, info: dict[str, Any], name: str) -> Path:
    """Write the gate rows (parquet) and their info (JSON) atomically; returns the parquet path.

    Under ``<state>/evaluations/<kind>/``, named by the MLflow run that produced them, and
    logged to that run too.
    """
    import os

    import mlflow

    from odds_pipeline.paths import state_home

    folder = state_home() / "evaluations" / str(info["kind"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.parquet"
    for target, write in (
        (path.with_suffix(".json"), lambda p: p.write_text(json.dumps(info, indent=2))),
        (path, lambda p: rows.to_parquet(p, index=False)),
    ):
        tmp = target.with_name(f".{target.name}.tmp")
        write(tmp)
        os.replace(tmp, target)
    if mlflow.active_run() is not None:
        mlflow.log_artifact(str(path), artifact_path="gates")
        mlflow.log_artifact(str(path.with_suffix(".json")), artifact_path="gates")
    return path


def load_gate_rows(path: str | Path) -> tuple[Any, dict[str, Any]]:
    import pandas as pd

    path = Path(path)
    return pd.read_parquet(path), json.loads(path.with_suffix(".json").read_text())


def comparisons(prepared: Prepared, p_model: np.ndarray) -> list[Comparison]:
    """The model and its kind's baselines on the same test rows, with their metrics."""
    from odds_pipeline.training.evaluation import binary_metrics

    out = BASELINES[prepared.kind.baselines](prepared, p_model)
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


def mlflow_log_json(files: dict[str, Any]) -> None:
    """Small JSON artifacts (manifest, scaler, history) under ``run/``."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="odds-json-") as tmp:
        for name, payload in files.items():
            (Path(tmp) / name).write_text(json.dumps(payload, indent=2, default=str))
        mlflow.log_artifacts(tmp, artifact_path="run")


def input_example(prepared: Prepared, rows: int = 5) -> np.ndarray:
    """A few packed test rows: the logged model's input example."""
    return prepared.kind.pack(prepared.raw["test"], rows=min(rows, len(prepared.raw["test"])))
