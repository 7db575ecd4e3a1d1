"""Optuna studies for both models: TPE sampler, median pruner, persisted so a study resumes.

Storage is one SQLite file under ``<state>/optuna/``; a study is found again by its name,
so running the tuning asset twice adds trials to the same study and the candidates can
read the best trial's parameters later. Each trial is a nested MLflow run under the
tuning run, and pruning goes through ``training.fit``'s ``on_epoch`` callback.

Dagster-free; ``optuna`` and ``mlflow`` are imported inside functions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odds_pipeline.paths import state_home
from odds_pipeline.training import tracking
from odds_pipeline.training.kinds import kind_of

if TYPE_CHECKING:
    import optuna

__all__ = [
    "OBJECTIVE",
    "TuningSummary",
    "best_params",
    "find_study",
    "load_or_create_study",
    "pruning_callback",
    "run_study",
    "storage_url",
]

log = logging.getLogger(__name__)

OBJECTIVE = "best_val_loss"  # minimised: validation BCE of the best epoch (what fit keeps)
STUDY_DB = "optuna.db"

# The objective gets (trial params, on_epoch callback) and returns (value, extra metrics).
Objective = Callable[[dict[str, Any], Callable[[int, dict[str, float]], bool | None]], Any]


def storage_url(root: str | Path | None = None) -> str:
    """``sqlite:////abs/<state>/optuna/optuna.db``."""
    path = Path(root).expanduser().resolve() if root else state_home() / "optuna"
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(path / STUDY_DB).as_posix()}"


def _storage(url: str | None) -> optuna.storages.BaseStorage:
    import optuna

    # A generous SQLite lock timeout: two tuning runs may share the file.
    return optuna.storages.RDBStorage(
        url or storage_url(), engine_kwargs={"connect_args": {"timeout": 60}}
    )


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def find_study(name: str, storage: str | None = None) -> optuna.Study | None:
    """The study called ``name`` if the storage holds one, else None (creates nothing)."""
    import optuna

    _quiet_optuna()
    url = storage or storage_url()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    store = _storage(url)
    names = {s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)}
    if name not in names:
        return None
    return optuna.load_study(study_name=name, storage=store)


def load_or_create_study(
    name: str,
    *,
    seed: int = 7,
    n_startup_trials: int = 5,
    pruner_startup_trials: int = 2,
    pruner_warmup_epochs: int = 1,
    storage: str | None = None,
) -> optuna.Study:
    """Create the study or resume it by name (minimising ``OBJECTIVE``).

    The TPE seed is offset by the number of trials already stored: a resumed study with
    the same seed would otherwise replay the first session's random start-up points.
    """
    import optuna

    _quiet_optuna()
    store = _storage(storage)
    existing = find_study(name, storage)
    offset = len(existing.trials) if existing is not None else 0
    return optuna.create_study(
        study_name=name,
        storage=store,
        load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed + offset, n_startup_trials=n_startup_trials),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=pruner_startup_trials, n_warmup_steps=pruner_warmup_epochs
        ),
    )


def best_params(name: str, storage: str | None = None) -> tuple[dict[str, Any], int, float] | None:
    """(params, trial number, value) of the study's best complete trial, or None.

    None when there is no such study or no trial completed yet, so a candidate simply
    falls back to its configured parameters.
    """
    import optuna

    study = find_study(name, storage)
    if study is None:
        return None
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return None
    best = study.best_trial
    return dict(best.params), best.number, float(best.value)


def pruning_callback(
    trial: optuna.Trial, metric: str = "val_loss"
) -> Callable[[int, dict[str, float]], None]:
    """``fit(on_epoch=...)`` hook: report the epoch's ``metric``; raise TrialPruned to stop."""
    import optuna

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        value = float(metrics[metric])
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{metric} is {value} at epoch {epoch}")
        trial.report(value, step=epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}: {metric} {value:.5f}")

    return on_epoch


@dataclass
class TuningSummary:
    """What a tuning session did, for Dagster metadata and the parent MLflow run."""

    study_name: str
    trials_before: int
    trials_after: int
    states: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any] | None
    best_trial: int | None
    trials_table: dict[str, list[Any]]

    @property
    def new_trials(self) -> int:
        return self.trials_after - self.trials_before


def run_study(
    study: optuna.Study,
    objective: Objective,
    *,
    kind: str,
    n_trials: int,
    experiment: str,
    timeout_s: float | None = None,
    fixed_params: Mapping[str, Any] | None = None,
    trial_tags: Mapping[str, Any] | None = None,
    on_trial_end: Callable[[optuna.trial.FrozenTrial], None] | None = None,
) -> TuningSummary:
    """Run ``n_trials`` more trials, each a nested MLflow run under the active run.

    ``objective(params, on_epoch)`` trains with ``params`` (the search space's choices
    merged over ``fixed_params``), calling ``on_epoch`` after every epoch (that is where
    pruning happens), and returns the objective value or ``(value, metrics)``. A pruned
    trial's MLflow run ends FINISHED and is tagged ``optuna.state=PRUNED``; a failing
    trial ends FAILED and fails the session (a broken objective should not hide).
    """
    import mlflow
    import optuna

    space = kind_of(kind).search_space
    before = len(study.trials)

    def trial_objective(trial: optuna.Trial) -> float:
        params = {**(fixed_params or {}), **space(trial)}
        tags = {
            **(trial_tags or {}),
            "optuna.study": study.study_name,
            "optuna.trial_number": trial.number,
        }
        with tracking.tracked_run(
            experiment,
            f"{study.study_name}-trial-{trial.number}",
            nested=True,
            tags=tags,
            finished_on=(optuna.TrialPruned,),
        ) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            tracking.log_params(params)
            prune = pruning_callback(trial)

            def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
                tracking.log_metrics(metrics, step=epoch)
                prune(epoch, metrics)

            try:
                result = objective(params, on_epoch)
            except optuna.TrialPruned:
                mlflow.set_tag("optuna.state", "PRUNED")
                raise
            value, extra = result if isinstance(result, tuple) else (result, {})
            tracking.log_metrics({OBJECTIVE: value, **extra})
            mlflow.set_tag("optuna.state", "COMPLETE")
            return float(value)

    callbacks = [lambda _study, trial: on_trial_end(trial)] if on_trial_end else None
    study.optimize(trial_objective, n_trials=n_trials, timeout=timeout_s, callbacks=callbacks)
    return summarize(study, before)


def summarize(study: optuna.Study, trials_before: int = 0) -> TuningSummary:
    import optuna

    trials = study.trials
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if complete else None
    table: dict[str, list[Any]] = {"trial": [], "state": [], OBJECTIVE: [], "epochs": []}
    for t in trials:
        table["trial"].append(t.number)
        table["state"].append(t.state.name)
        table[OBJECTIVE].append(float(t.value) if t.value is not None else math.nan)
        table["epochs"].append(len(t.intermediate_values))
    return TuningSummary(
        study_name=study.study_name,
        trials_before=trials_before,
        trials_after=len(trials),
        states=states,
        best_value=float(best.value) if best is not None else None,
        best_params=dict(best.params) if best is not None else None,
        best_trial=best.number if best is not None else None,
        trials_table=table,
    )
