"""Maintenance: drop one load from the warehouse, and free pool slots that dead runs keep.

`drop_load` is `odds-pipeline drop-load ID --yes` as a job, in the `duckdb_writer` pool so it
waits its turn behind ingestion instead of failing on the DuckDB lock.

`free_stuck_pool_slots`: a run worker killed hard (OOM killer, `kill -9`, a reboot) never
frees the pool slot its step claimed, and with the pool's limit at 1 every later writer
then waits "blocked by limit for pool duckdb_writer" forever. Run monitoring (dagster.yaml)
frees the slots of *finished* runs after a delay, but the default run launcher cannot tell
that a STARTED run's process died, so such a run holds its slot for good. This sensor finds
slots held by runs that are finished, deleted, or whose every recorded process is gone,
marks the dead ones failed (so the failure alerts fire) and frees their slots.
"""

from collections import Counter
from typing import Any

import dagster as dg
from pydantic import Field

from odds_pipeline.warehouse import pid_alive

from .metadata import WRITER_POOL
from .resources import WarehouseResource

FINISHED = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}
# Statuses in which a run's own processes hold its slots (a step claims one when it starts).
RUNNING = {dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}


class DropLoadConfig(dg.Config):
    load_id: str = Field(
        description="The load to delete, exactly as `odds-pipeline loads` lists it "
        "(e.g. `football_data:data/samples/football_data/E0_2021-2022.csv`; `odds-pipeline loads` lists them)."
    )


@dg.op(
    pool=WRITER_POOL,
    description="Delete everything one load wrote (odds_quotes, rejected_quotes, events, results "
    "and its loads row) in one transaction.",
)
def drop_warehouse_load(
    context: dg.OpExecutionContext, config: DropLoadConfig, warehouse: WarehouseResource
) -> dict[str, int]:
    from odds_pipeline.ingestion.store import OddsStore

    path = warehouse.resolved_path()
    store = OddsStore(path, holder=f"Dagster run {context.run_id} (drop_load)")
    counts = store.drop_load(config.load_id)
    if not any(counts.values()):
        raise dg.Failure(
            description=f"no load {config.load_id!r} in {path}: nothing deleted. "
            "`odds-pipeline loads` lists the loads; copy the load_id exactly.",
            metadata={"load_id": config.load_id, "warehouse": str(path)},
            allow_retries=False,
        )
    context.log.info(f"deleted load {config.load_id} from {path}: {counts}")
    context.add_output_metadata(
        {
            "load_id": config.load_id,
            "warehouse": str(path),
            **{f"{table}_deleted": n for table, n in counts.items()},
            "next": dg.MetadataValue.md(
                "Re-run the `odds_quotes` checks (e.g. `unique_quote_keys`) to confirm."
            ),
        }
    )
    return counts


@dg.job(
    description="Delete one load from the warehouse (config `load_id`; see `odds-pipeline "
    "loads`), e.g. a file ingested twice that fails `unique_quote_keys`. Same as "
    "`odds-pipeline drop-load <load_id> --yes`, but queued in the duckdb_writer pool.",
    tags={"odds_pipeline/kind": "maintenance"},
)
def drop_load() -> None:
    drop_warehouse_load()


# ---------------------------------------------------------------- stuck pool slots


def _recorded_pids(instance: dg.DagsterInstance, run_id: str) -> list[tuple[int, float]]:
    """(pid, when recorded) of the run's processes: run worker, executor, step subprocesses."""
    pids = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        value = (data.metadata or {}).get("pid") if data else None
        try:
            pids.append((int(getattr(value, "value", value)), entry.timestamp))
        except (TypeError, ValueError):
            continue
    return pids


def _why_stuck(instance: dg.DagsterInstance, record: Any, run_id: str) -> str | None:
    """Why this run's slots can go, or None while the run may still use them."""
    if record is None:
        return "run deleted"
    status = record.dagster_run.status
    if status in FINISHED:
        return f"run {status.value}"
    if status not in RUNNING:
        return None  # queued or starting: run monitoring's start timeout handles those
    pids = _recorded_pids(instance, run_id)
    if not pids or any(pid_alive(pid, since=when) for pid, when in pids):
        return None
    listed = ", ".join(str(pid) for pid in sorted({pid for pid, _ in pids}))
    return f"run {status.value} but its processes are gone (pid {listed})"


@dg.sensor(
    name="free_stuck_pool_slots",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Frees pool slots (duckdb_writer, gpu) held by runs that have finished or been "
    "deleted, or that are STARTED/CANCELING while every process they recorded is gone (a run "
    "killed hard keeps its slot and blocks every later writer: 'blocked by limit for pool'). "
    "Marks such dead runs failed so alerts fire. Checks pids on this machine (the default run "
    "launcher). Requests no runs: each tick's skip message gives the numbers.",
)
def free_stuck_pool_slots(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    instance = context.instance
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return dg.SkipReason("nothing to free: this instance's storage has no pool limits")
    pools = sorted(storage.get_concurrency_keys())
    infos = storage.get_concurrency_infos(pools)
    held: dict[str, Counter[str]] = {}
    for pool, info in infos.items():
        for slot in info.claimed_slots:
            held.setdefault(slot.run_id, Counter())[pool] += 1
        for step in info.pending_steps:
            held.setdefault(step.run_id, Counter())
    if not held:
        return dg.SkipReason(f"nothing to free: 0 slot(s) held in {len(pools)} pool(s)")

    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=sorted(held)))
    by_id = {record.dagster_run.run_id: record for record in records}
    freed: list[str] = []
    n_freed = 0
    for run_id, slots in sorted(held.items()):
        record = by_id.get(run_id)
        reason = _why_stuck(instance, record, run_id)
        if reason is None:
            continue
        where = ", ".join(f"{pool} x{n}" for pool, n in sorted(slots.items())) or "queued steps"
        if record is not None and record.dagster_run.status in RUNNING:
            message = f"free_stuck_pool_slots: {reason}; it held {where}, now freed for other runs."
            if record.dagster_run.status == dg.DagsterRunStatus.CANCELING:
                instance.report_run_canceled(record.dagster_run, message)
                reason += ", marked canceled"
            else:
                instance.report_run_failed(record.dagster_run, message)
                reason += ", marked failed"
        storage.free_concurrency_slots_for_run(run_id)
        n_freed += sum(slots.values())
        freed.append(f"run {run_id} ({reason}): {where}")
        context.log.info(f"freed {where} of run {run_id}: {reason}")

    kept = sum(sum(slots.values()) for slots in held.values()) - n_freed
    if not freed:
        return dg.SkipReason(
            f"nothing to free: {kept} slot(s) held in pool(s) {', '.join(pools)} by "
            f"{len(held)} run(s) still running"
        )
    return dg.SkipReason(
        f"freed {n_freed} slot(s) of {len(freed)} run(s): {'; '.join(freed)}; "
        f"{kept} slot(s) still held by running runs"
    )


MAINTENANCE_JOBS = [drop_load]
MAINTENANCE_SENSORS = [free_stuck_pool_slots]
