"""Group `registry`: the quality gates on each candidate, the champion aliases, rollback.

Gates are blocking asset checks on `lstm_candidate` and `transformer_candidate`, one
criterion each (`registry.decision.GATE_NAMES`); they judge the test rows the candidate
saved, re-score the current champion on them, tag the MLflow version with each verdict
and, when one fails, record the refusal in `model_promotions` (the failed check then stops
the champion asset, and the run says which gate and why). `lstm_champion` /
`transformer_champion` move the alias `champion` to the candidate's version only when its
tags say every gate passed. `rollback_champion` moves it back to `previous_champion`.
"""

from typing import Any

import dagster as dg
from pydantic import Field

from odds_pipeline.registry.decision import GATE_NAMES, GateThresholds, describe
from odds_pipeline.training.kinds import KINDS, ModelKind

from .metadata import WRITER_POOL, data_failure, latest_metadata, markdown_table
from .resources import (
    MlflowResource,
    WarehouseResource,
    dagster_mlflow_tracking,
    end_mlflow_on_run_finished,
)

GROUP = "registry"
OWNERS = ["team:odds-ml"]
_DEFAULTS = GateThresholds()


class GateConfig(dg.Config):
    """Thresholds of the quality gates (defaults: DESIGN §5)."""

    min_test_rows: int = Field(default=_DEFAULTS.min_test_rows, description="Fewest test rows.")
    min_test_positives: int = Field(
        default=_DEFAULTS.min_test_positives, description="Fewest positive test rows."
    )
    calibration_quantile: float = Field(
        default=_DEFAULTS.calibration_quantile,
        description="ECE must be below this quantile of a calibrated forecast's ECE on the same n.",
    )
    max_brier_ratio_upper: float = Field(
        default=_DEFAULTS.max_brier_ratio_upper,
        description="LSTM: upper 95% bound of Brier(model)/Brier(market) at most this.",
    )
    max_brier_ratio_lower: float | None = Field(
        default=_DEFAULTS.max_brier_ratio_lower,
        description="LSTM: lower 95% bound at most this (1: a model measurably worse than the "
        "market fails even within the upper tolerance); None turns the check off.",
    )
    min_auc_pr_ratio: float = Field(
        default=_DEFAULTS.min_auc_pr_ratio,
        description="Transformer: AUC-PR at least this times the best rule's.",
    )
    champion_margin: float = Field(
        default=_DEFAULTS.champion_margin,
        description="Non-inferiority margin against the current champion (relative).",
    )
    max_label_shift: float = Field(
        default=_DEFAULTS.max_label_shift,
        description="Test positive rate within this relative shift of the train rate.",
    )
    n_resamples: int = Field(default=_DEFAULTS.n_resamples, description="Bootstrap resamples.")
    seed: int = Field(default=_DEFAULTS.seed, description="Bootstrap and simulation seed.")

    def thresholds(self) -> GateThresholds:
        return GateThresholds(**self.model_dump())


def _candidate_key(kind: ModelKind) -> dg.AssetKey:
    return dg.AssetKey(f"{kind.asset_prefix}_candidate")


def _gate_metadata(result: Any) -> dict[str, Any]:
    from odds_pipeline.training.tracking import finite_or_none

    metadata: dict[str, Any] = {
        "summary": dg.MetadataValue.text(result.summary),
        "n": dg.MetadataValue.int(int(result.n)),
    }
    for key in ("value", "threshold", "ci_low", "ci_high"):
        number = finite_or_none(getattr(result, key))
        if number is not None:
            metadata[key] = dg.MetadataValue.float(round(number, 5))
    details = result.to_dict()["details"]
    table = details.pop("reliability", None) or details.pop("reliability_table", None)
    if table:
        import pandas as pd

        metadata["reliability"] = dg.MetadataValue.md(markdown_table(pd.DataFrame(table), rows=50))
    metadata["details"] = dg.MetadataValue.json(details)
    return metadata


def evaluate_gates(
    context: dg.AssetCheckExecutionContext,
    kind: ModelKind,
    thresholds: GateThresholds,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dict[str, Any]:
    """Judge the latest candidate of ``kind``; tag its version; record a refusal."""
    from odds_pipeline.datasets.sequences import load_dataset
    from odds_pipeline.registry import champion, decision, promotion
    from odds_pipeline.training.candidate import load_gate_rows

    meta = latest_metadata(context.instance, _candidate_key(kind)) or {}
    if "gate_rows_path" not in meta:
        raise data_failure(
            f"{_candidate_key(kind).to_user_string()} has no saved test rows to judge: "
            "materialize it again (the gates judge the rows it saves)"
        )
    rows, info = load_gate_rows(meta["gate_rows_path"])
    dataset_now = latest_metadata(context.instance, dg.AssetKey(kind.dataset_asset)) or {}
    try:
        dataset = load_dataset(info["dataset_path"], verify=True)
        verified = True
    except (OSError, ValueError, KeyError):
        dataset, verified = load_dataset(info["dataset_path"], verify=False), False
    test = dataset.splits()["test"]
    leaks = decision.steps_after_decision(test.times, test.mask, test.meta[kind.decision_column])
    uri = mlflow.uri()
    name = kind.registered_model
    loaded = champion.load_alias(name, uri=uri)
    scores = champion.rescore(loaded, test, kind, info["label"])
    results = decision.judge(
        rows,
        info,
        thresholds,
        champion=scores,
        dataset_hash_now=dataset_now.get("content_hash"),
        dataset_verified=verified,
        steps_after_decision=leaks,
    )
    version = meta.get("model_version")
    if version is not None:
        promotion.tag_version(name, str(version), promotion.verdict_tags(results), uri=uri)
    failed = promotion.failed_gates(results)
    if failed:
        refusal = promotion.Decision(
            model=name,
            decision="refused",
            from_version=promotion.alias_version(name, "champion", uri),
            to_version=None if version is None else str(version),
            reason=f"{len(failed)} gate(s) failed: " + "; ".join(failed.values()),
            failed=failed,
            gates={k: r.to_dict() for k, r in results.items()},
            dagster_run_id=context.run.run_id,
        )
        with warehouse.store().connection() as con:
            promotion.record(con, refusal)
        context.log.warning(f"{name} v{version} refused: {refusal.reason}")
    return results


def gate_checks(kind: ModelKind) -> dg.AssetChecksDefinition:
    """The blocking gates of one candidate, evaluated together (one bootstrap, one champion load)."""
    key = _candidate_key(kind)
    specs = [
        dg.AssetCheckSpec(name, asset=key, blocking=True, description=describe(name, _DEFAULTS))
        for name in GATE_NAMES
    ]

    @dg.multi_asset_check(
        specs=specs,
        name=f"{kind.asset_prefix}_quality_gates",
        description=f"Quality gates of {key.to_user_string()} (one check per criterion).",
        pool=WRITER_POOL,
    )
    def _gates(
        context: dg.AssetCheckExecutionContext,
        config: GateConfig,
        warehouse: WarehouseResource,
        mlflow: MlflowResource,
    ):
        results = evaluate_gates(context, kind, config.thresholds(), warehouse, mlflow)
        for name in GATE_NAMES:
            result = results[name]
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=name,
                passed=bool(result.passed),
                metadata=_gate_metadata(result),
                description=result.summary,
            )

    return _gates


def _decide(
    context: dg.AssetExecutionContext,
    kind: ModelKind,
    warehouse: WarehouseResource,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Promote the candidate's version if its gate tags all say pass; record what happened."""
    from odds_pipeline.registry import promotion
    from odds_pipeline.training import tracking

    uri = mlflow.uri()
    name = kind.registered_model
    meta = latest_metadata(context.instance, _candidate_key(kind)) or {}
    version = meta.get("model_version")
    before = promotion.alias_version(name, tracking.CHAMPION, uri)
    failed: dict[str, str] = {}
    if version is None:
        outcome, reason = "refused", "the candidate registered no model version"
    else:
        version = str(version)
        passed, failed = promotion.version_verdict(name, version, uri)
        if passed is None:
            outcome = "refused"
            reason = (
                f"the gates never judged v{version}: materialize "
                f"{_candidate_key(kind).to_user_string()} with its checks"
            )
        elif not passed:
            outcome, reason = "refused", f"{len(failed)} gate(s) failed"
        elif before == version:
            outcome, reason = "kept", f"v{version} already holds {tracking.CHAMPION}"
        else:
            promotion.promote(name, version, uri)
            outcome, reason = "promoted", "every gate passed"
    if outcome == "promoted":
        run = tracking.client(uri).get_run(str(meta.get("mlflow_run_id")))
        params = {**run.data.params, "dagster_run_id": run.data.tags.get("dagster.run_id")}
        from odds_pipeline.training.candidate import load_gate_rows

        _, info = load_gate_rows(meta["gate_rows_path"])
        tags = tracking.client(uri).get_model_version(name, version).tags
        gate_results = promotion.gates_from_tags(tags)
        card = promotion.model_card(name, version, info, gate_results, params)
        promotion.describe_version(name, version, card, uri)
    decision = promotion.Decision(
        model=name,
        decision=outcome,
        from_version=before,
        to_version=None if version is None else str(version),
        reason=reason,
        failed=failed,
        gates={},
        dagster_run_id=context.run.run_id,
    )
    with warehouse.store().connection() as con:
        if outcome != "refused" or not _already_recorded(con, decision):
            promotion.record(con, decision)
        recent = promotion.history(con, name, limit=10)
    return _champion_result(kind, decision, recent, mlflow, uri)


def _already_recorded(con: Any, decision: Any) -> bool:
    """The gates of this run already wrote the refusal of this version."""
    from odds_pipeline.registry import promotion

    recent = promotion.history(con, decision.model, limit=1)
    return bool(
        len(recent)
        and recent["decision"].iloc[0] == "refused"
        and recent["to_version"].iloc[0] == decision.to_version
        and recent["dagster_run_id"].iloc[0] == decision.dagster_run_id
    )


def _champion_result(
    kind: ModelKind, decision: Any, recent: Any, mlflow: MlflowResource, uri: str
) -> dg.MaterializeResult:
    from odds_pipeline.registry import promotion
    from odds_pipeline.training import tracking

    name = kind.registered_model
    current = promotion.alias_version(name, tracking.CHAMPION, uri)
    previous = promotion.alias_version(name, tracking.PREVIOUS_CHAMPION, uri)
    metadata: dict[str, Any] = {
        "decision": dg.MetadataValue.text(decision.decision),
        "reason": dg.MetadataValue.text(decision.reason),
        "candidate_version": dg.MetadataValue.text(str(decision.to_version)),
        "champion_version": dg.MetadataValue.text(
            current or "none: no version has passed the gates"
        ),
        "previous_champion_version": dg.MetadataValue.text(previous or "none"),
        "recent_decisions": dg.MetadataValue.md(
            markdown_table(
                recent,
                ["decided_at", "decision", "from_version", "to_version", "reason"],
                rows=10,
            )
        ),
    }
    if decision.failed:
        metadata["failed_gates"] = dg.MetadataValue.md(
            "\n".join(f"- **{k}**: {v}" for k, v in decision.failed.items())
        )
    if current is not None:
        metadata["champion_url"] = dg.MetadataValue.url(mlflow.model_url(name, current))
        card = tracking.client(uri).get_model_version(name, current).description
        if card:
            metadata["model_card"] = dg.MetadataValue.md(card)
    return dg.MaterializeResult(metadata=metadata)


def champion_asset(kind: ModelKind) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{kind.asset_prefix}_champion",
        group_name=GROUP,
        owners=OWNERS,
        kinds={"mlflow"},
        pool=WRITER_POOL,
        deps=[_candidate_key(kind)],
        description=f"Moves the MLflow alias `champion` of `{kind.registered_model}` to the "
        f"candidate's version when every quality gate on {_candidate_key(kind).to_user_string()} "
        "passed (the old one becomes `previous_champion`); records every decision in "
        "`model_promotions` and shows the current champion and its model card.",
    )
    def _champion(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, mlflow: MlflowResource
    ) -> dg.MaterializeResult:
        return _decide(context, kind, warehouse, mlflow)

    return _champion


class RollbackConfig(dg.Config):
    model: str = Field(
        default=KINDS["lstm"].registered_model,
        description=f"Registered model to roll back: one of "
        f"{', '.join(k.registered_model for k in KINDS.values())}.",
    )
    reason: str = Field(default="manual rollback", description="Why (kept in model_promotions).")


@dg.op(
    pool=WRITER_POOL,
    required_resource_keys={"mlflow", "warehouse"},
    description="Moves `champion` back to `previous_champion` and records the rollback (in "
    "model_promotions and as an MLflow run of experiment odds-registry).",
)
def rollback_model(context: dg.OpExecutionContext, config: RollbackConfig) -> dict[str, str]:
    from odds_pipeline.registry import promotion
    from odds_pipeline.training.kinds import kind_for_model

    uri = context.resources.mlflow.tracking_uri
    try:
        kind_for_model(config.model)
        was, now = promotion.rollback(config.model, uri)
    except (ValueError, promotion.PromotionError) as exc:
        raise data_failure(str(exc)) from exc
    decision = promotion.Decision(
        model=config.model,
        decision="rollback",
        from_version=was,
        to_version=now,
        reason=config.reason,
        failed={},
        gates={},
        dagster_run_id=context.run.run_id,
    )
    warehouse: WarehouseResource = context.resources.warehouse
    with warehouse.store().connection() as con:
        promotion.record(con, decision)
    # dagster-mlflow's run for this Dagster run: the rollback is visible in MLflow too.
    context.resources.mlflow.log_params(
        {"model": config.model, "from_version": was, "to_version": now, "reason": config.reason}
    )
    context.log.info(f"{config.model}: champion moved back from v{was} to v{now}")
    context.add_output_metadata({"from_version": was, "to_version": now})
    return {"from_version": was, "to_version": now}


@dg.job(
    description="Roll a model's `champion` alias back to `previous_champion` (config: the model). "
    "Recorded in model_promotions and as an MLflow run (dagster-mlflow) in odds-registry.",
    tags={"odds_pipeline/kind": "registry"},
    resource_defs={"mlflow": dagster_mlflow_tracking, "warehouse": WarehouseResource()},
    hooks={end_mlflow_on_run_finished},
)
def rollback_champion():
    rollback_model()


GATE_CHECKS = [gate_checks(kind) for kind in KINDS.values()]
CHAMPION_ASSETS = [champion_asset(kind) for kind in KINDS.values()]
