"""Group `monitoring`: drift of each champion's inputs and score, its outcomes, and what reacts.

`drift_report` compares a recent window with the champion's training window (bins frozen per
model version, `monitoring/reference.py`; statistics `monitoring/drift.py`) into
`drift_metrics`; `performance_report` scores the champion's resolved predictions against the
market (`monitoring/performance.py`) into `performance_metrics`. Sensors: drift persisting
for N reports asks for a retraining run (which ends in the quality gates); any failed run
sends an alert; a new live partition refreshes features and scores.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from odds_pipeline.registry.decision import GateThresholds
from odds_pipeline.training.kinds import KINDS, ModelKind

from .metadata import WRITER_POOL, markdown_table
from .resources import MlflowResource, WarehouseResource

GROUP = "monitoring"
OWNERS = ["team:odds-ml"]


class MonitoringConfig(dg.Config):
    window_days: float = Field(default=7.0, description="The current window: this many days.")
    window_end: str = Field(
        default="",
        description="End of the current window (ISO time); empty = the latest kickoff in the "
        "warehouse (live: now).",
    )
    bins: int = Field(default=10, description="Quantile bins frozen on the reference.")
    psi_smoothing: float = Field(default=0.5, description="Additive pseudo-count per PSI bin.")
    min_samples: int = Field(
        default=200, description="Fewer values in a window: 'not enough data', never a verdict."
    )
    fdr_alpha: float = Field(default=0.05, description="Benjamini-Hochberg level across features.")

    def drift_config(self) -> Any:
        from odds_pipeline.monitoring.drift import DriftConfig

        return DriftConfig(
            bins=self.bins,
            psi_smoothing=self.psi_smoothing,
            min_samples=self.min_samples,
            fdr_alpha=self.fdr_alpha,
        )


def _window(con: Any, config: MonitoringConfig) -> tuple[datetime, datetime]:
    if config.window_end:
        end = datetime.fromisoformat(config.window_end.replace("Z", "+00:00"))
    else:
        latest = con.execute("SELECT max(commence_time) FROM events").fetchone()[0]
        end = (latest or datetime.now(UTC)) + timedelta(seconds=1)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    return end - timedelta(days=config.window_days), end


def _reference(kind: ModelKind, loaded: Any, uri: str, config: Any) -> dict[str, Any]:
    """The frozen reference of this champion version, built from its training window once."""
    from odds_pipeline.datasets.sequences import load_dataset
    from odds_pipeline.monitoring import reference
    from odds_pipeline.training import tracking

    path = reference.reference_path(loaded.name, loaded.version)
    if path.exists():
        return reference.load(path)
    client = tracking.client(uri)
    run_id = client.get_model_version(loaded.name, loaded.version).run_id
    dataset_path = client.get_run(run_id).data.params["dataset_path"]
    train = load_dataset(dataset_path, verify=False).splits()["train"]
    scores = loaded.model.predict(kind.pack(train))
    frozen = reference.freeze(
        reference.step_frame(train),
        scores,
        config,
        {"dataset_path": dataset_path, "split": "train", "rows": len(train)},
    )
    reference.save(frozen, path)
    client.log_artifact(run_id, str(path), artifact_path="monitoring")
    return frozen


def _current(con: Any, kind: ModelKind, loaded: Any, start: datetime, end: datetime) -> Any:
    """The sequences the champion would score in the window, built like the scorer builds them."""
    wanted = dict(loaded.spec.extra.get("dataset_config") or {})
    return kind.window_sequences(con, wanted, start, end)


def _psi_plot(con: Any, model: str, path: Any) -> Any:
    """PSI of the most drifted features across the recent reports (a PNG a person looks at)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from odds_pipeline.monitoring.reference import DRIFT_TABLE

    frame = con.execute(
        f"SELECT computed_at, feature, psi FROM {DRIFT_TABLE} WHERE model = ? ORDER BY computed_at",
        [model],
    ).df()
    if frame.empty:
        return None
    latest = frame[frame["computed_at"] == frame["computed_at"].max()]
    top = latest.nlargest(8, "psi")["feature"].tolist()
    fig = Figure(figsize=(8, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for feature in top:
        part = frame[frame["feature"] == feature]
        ax.plot(part["computed_at"], part["psi"], marker="o", label=feature)
    ax.axhline(0.1, color="orange", linestyle="--", linewidth=1)
    ax.axhline(0.25, color="red", linestyle="--", linewidth=1)
    ax.set_title(f"{model}: PSI per report (top features of the latest)")
    ax.set_ylabel("PSI")
    ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "scipy"},
    pool=WRITER_POOL,
    deps=["lstm_champion", "transformer_champion", "market_features", "pair_features"],
    description="Table `drift_metrics`: for each champion, every input channel and its output score in "
    "the recent window against its training window (bins frozen per model version): PSI, KS (with "
    "Benjamini-Hochberg across features), Wasserstein, severity. Below the minimum sample: 'not enough "
    "data', never a verdict. The drift sensor reads it.",
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: MonitoringConfig,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from odds_pipeline.monitoring import reference
    from odds_pipeline.paths import reports_dir
    from odds_pipeline.registry.champion import load_alias

    uri = mlflow.uri()
    report_id = uuid.uuid4().hex[:12]
    drift_config = config.drift_config()
    metadata: dict[str, Any] = {"report_id": dg.MetadataValue.text(report_id)}
    tables = []
    with warehouse.store().connection() as con:
        start, end = _window(con, config)
        metadata["window"] = dg.MetadataValue.text(f"{start.isoformat()} .. {end.isoformat()}")
        for kind in KINDS.values():
            name = kind.registered_model
            loaded = load_alias(name, uri=uri)
            if loaded is None:
                metadata[f"{kind.asset_prefix}_status"] = dg.MetadataValue.text(
                    f"no champion of {name}: nothing to monitor"
                )
                continue
            ref = _reference(kind, loaded, uri, drift_config)
            current = _current(con, kind, loaded, start, end)
            scores = loaded.model.predict(kind.pack(current)) if len(current) else []
            rows = reference.compare(ref, reference.step_frame(current), scores, drift_config)
            rows = rows.assign(
                report_id=report_id,
                computed_at=datetime.now(UTC),
                model=name,
                version=loaded.version,
                window_start=start,
                window_end=end,
            )
            reference.write(con, rows)
            drifted = rows[rows["drifted"]]
            judged = rows[rows["severity"] != "not_enough_data"]
            prefix = kind.asset_prefix
            metadata[f"{prefix}_champion_version"] = dg.MetadataValue.text(loaded.version)
            metadata[f"{prefix}_drifted_features"] = dg.MetadataValue.int(len(drifted))
            metadata[f"{prefix}_judged_features"] = dg.MetadataValue.int(len(judged))
            if judged["psi"].notna().any():
                metadata[f"{prefix}_max_psi"] = dg.MetadataValue.float(
                    round(float(judged["psi"].max()), 4)
                )
            metadata[f"{prefix}_samples_in_window"] = dg.MetadataValue.int(len(current))
            shown = rows.sort_values("psi", ascending=False)
            tables.append(
                f"**{name} v{loaded.version}**\n\n"
                + markdown_table(
                    shown,
                    ["feature", "role", "n_current", "psi", "ks_pvalue_bh", "wasserstein",
                     "severity", "drifted"],
                    rows=40,
                )
            )  # fmt: skip
            plot = _psi_plot(con, name, reports_dir() / f"psi_{prefix}.png")
            if plot is not None:
                metadata[f"{prefix}_psi_plot"] = dg.MetadataValue.path(str(plot))
    metadata["drift"] = dg.MetadataValue.md("\n\n".join(tables) or "_no champion yet_")
    return dg.MaterializeResult(metadata=metadata)


class PerformanceConfig(dg.Config):
    window_days: float = Field(default=7.0, description="Width of each rolling window.")
    min_rows: int = Field(default=100, description="Fewer resolved rows: no verdict.")
    max_brier_ratio_upper: float = Field(
        default=1.01,
        description="Degraded when the ratio's upper 95% bound exceeds this, or its lower bound "
        "exceeds max_brier_ratio_lower (the promotion gate's rule).",
    )
    max_brier_ratio_lower: float | None = Field(
        default=GateThresholds().max_brier_ratio_lower,
        description="Degraded when the ratio's lower 95% bound exceeds this (1: measurably worse "
        "than the market); None turns the check off.",
    )


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb"},
    pool=WRITER_POOL,
    deps=["win_probability_predictions", "results", "lstm_champion"],
    description="Table `performance_metrics`: on events resolved since they were scored, the LSTM "
    "champion's Brier and log loss against the de-vigged market's on the same rows, per window and "
    "overall, with an event-level bootstrap interval and its gate-time ratio. Degradation is a finding "
    "with numbers.",
)
def performance_report(
    context: dg.AssetExecutionContext,
    config: PerformanceConfig,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from odds_pipeline.monitoring import performance
    from odds_pipeline.registry.promotion import GATE_TAG_PREFIX, alias_version
    from odds_pipeline.training import tracking

    uri = mlflow.uri()
    name = KINDS["lstm"].registered_model
    version = alias_version(name, tracking.CHAMPION, uri)
    if version is None:
        return dg.MaterializeResult(
            metadata={"status": dg.MetadataValue.text(f"no champion of {name}: nothing to judge")}
        )
    tags = tracking.client(uri).get_model_version(name, version).tags
    gate_value = tags.get(f"{GATE_TAG_PREFIX}beats_baseline.value")
    with warehouse.store().connection() as con:
        rows = performance.resolved_predictions(con, name, version)
        frame = performance.report(
            rows,
            window_days=config.window_days,
            min_rows=config.min_rows,
            max_ratio_upper=config.max_brier_ratio_upper,
            max_ratio_lower=config.max_brier_ratio_lower,
            gate_ratio=float(gate_value) if gate_value else None,
        )
        if not frame.empty:
            frame = frame.assign(
                report_id=uuid.uuid4().hex[:12],
                computed_at=datetime.now(UTC),
                model=name,
                version=version,
            )
            performance.write(con, frame)
    metadata: dict[str, Any] = {
        "champion_version": dg.MetadataValue.text(version),
        "resolved_rows": dg.MetadataValue.int(len(rows)),
    }
    if frame.empty:
        metadata["status"] = dg.MetadataValue.text("no resolved champion predictions yet")
        return dg.MaterializeResult(metadata=metadata)
    overall = frame[frame["overall"]].iloc[0]
    metadata["finding"] = dg.MetadataValue.text(str(overall["finding"]))
    metadata["degraded"] = dg.MetadataValue.bool(bool(overall["degraded"]))
    for key in ("brier_ratio", "ratio_ci_low", "ratio_ci_high", "brier_model", "brier_market"):
        value = overall.get(key)
        if value is not None and value == value:
            metadata[key] = dg.MetadataValue.float(round(float(value), 4))
    metadata["windows"] = dg.MetadataValue.md(
        markdown_table(
            frame,
            ["window_start", "n", "brier_model", "brier_market", "brier_ratio", "ratio_ci_high",
             "degraded", "finding"],
            rows=30,
        )
    )  # fmt: skip
    return dg.MaterializeResult(metadata=metadata)


MONITORING_ASSETS = [drift_report, performance_report]

monitoring_job = dg.define_asset_job(
    name="monitoring_reports",
    selection=dg.AssetSelection.assets(*MONITORING_ASSETS, "backtest_report"),
    description="Drift and outcome reports of the champions (read by the drift sensor) and the "
    "backtest report.",
)

retrain_job = dg.define_asset_job(
    name="retrain",
    selection=dg.AssetSelection.assets(
        "lstm_sequences",
        "arbitrage_pair_sequences",
        "lstm_candidate",
        "transformer_candidate",
        "lstm_champion",
        "transformer_champion",
    ),
    description="Rebuild the datasets, train both candidates, let the quality gates judge them and "
    "promote what passes. A refusal fails the run at its gate and keeps the champion.",
)


@dg.schedule(
    job=monitoring_job,
    cron_schedule="30 4 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly drift, outcome and backtest reports (04:30 UTC). Cheap: reads the warehouse, "
    "scores the recent window with the champions and replays the bets, about a minute on a laptop.",
)
def nightly_monitoring(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(tags={"odds_pipeline/trigger": "nightly_monitoring"})


@dg.schedule(
    job=retrain_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Nightly retrain (03:00 UTC) of both candidates, judged by the gates. Stopped by "
    "default: it costs minutes of CPU (or the GPU pool) each night, and the drift sensor already "
    "retrains when the world moved. Start it where fresh data arrives daily.",
)
def nightly_retrain(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return dg.RunRequest(tags={"odds_pipeline/trigger": "nightly_retrain"})
