"""MLflow helpers: the tracking store under the state dir, runs that always end, model logging.

Why a module of our own around MLflow: every Dagster run that trains must leave no MLflow
run RUNNING, whatever ends it (success, exception, a Dagster termination), and every
model must be logged the same way (explicit signature, input example and pip
requirements, since inferring requirements costs ~10 s a call) so that it serves with
one NumPy float32 array in and probabilities out.

Layout (DESIGN §5): tracking store ``sqlite:///<state>/mlflow/mlflow.db`` (absolute path),
artifacts in ``<state>/mlflow/artifacts/<experiment>``; registry aliases ``champion`` and
``challenger``, never stages.

Serving contract: one float32 input tensor per kind, laid out as `training.kinds` says;
the logged model applies the training scaler itself and returns P(label = 1) as float32
``[N]``. ``ModelKind.pack`` builds that array from a dataset.

``mlflow`` and ``torch`` are imported inside functions: the code location must load fast.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import math
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from odds_pipeline.datasets.scaling import zscore
from odds_pipeline.paths import PROJECT_ROOT, mlflow_dir
from odds_pipeline.training.kinds import (
    LSTM_MODEL_NAME,
    TRANSFORMER_MODEL_NAME,
    kind_of,
    pack_lstm_input,
    pack_pair_input,
)

if TYPE_CHECKING:
    import mlflow
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models.model import ModelInfo

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS_CHAMPION",
    "client",
    "DAGSTER_RUN_TAG",
    "LSTM_MODEL_NAME",
    "TRANSFORMER_MODEL_NAME",
    "ServingSpec",
    "SequenceScorer",
    "artifact_root",
    "build_model",
    "close_orphaned_runs",
    "configure",
    "end_active_runs",
    "finite_or_none",
    "get_or_create_experiment",
    "git_provenance",
    "log_metrics",
    "log_params",
    "log_sequence_model",
    "pack_lstm_input",
    "pack_pair_input",
    "package_versions",
    "provenance_params",
    "register_challenger",
    "running_runs",
    "serving_model",
    "tracked_run",
    "tracking_uri",
]

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"
TRACKING_DB = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
# Tag linking an MLflow run to the Dagster run that started it (used to close orphans).
DAGSTER_RUN_TAG = "dagster.run_id"
PROVENANCE_PACKAGES = (
    "odds_pipeline",
    "torch",
    "numpy",
    "pandas",
    "duckdb",
    "mlflow",
    "optuna",
    "dagster",
)
# MLflow limits: param values 6000 chars, tag values 8000 chars.
_MAX_PARAM_CHARS = 6000
# What a logged model carries of odds_pipeline (relative to the package): all it imports.
SERVED_MODULES = (
    "paths.py",
    "datasets/scaling.py",
    "training/kinds.py",
    "training/models.py",
    "training/tracking.py",
)


# --------------------------------------------------------------------------- store setup


def _root(root: str | Path | None) -> Path:
    path = Path(root).expanduser().resolve() if root else mlflow_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def tracking_uri(root: str | Path | None = None) -> str:
    """``sqlite:////abs/<state>/mlflow/mlflow.db``: absolute, so any working dir finds it."""
    return f"sqlite:///{(_root(root) / TRACKING_DB).as_posix()}"


def artifact_root(root: str | Path | None = None) -> Path:
    path = _root(root) / ARTIFACTS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def configure(uri: str | None = None) -> str:
    """Point MLflow's fluent API (tracking and registry) at our store; returns the URI.

    Called at the start of every tracked run rather than once: the state home can change
    between runs in one process (tests), and a cached URI would write to the wrong store.
    """
    import mlflow

    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client(uri: str | None = None):
    """An MlflowClient on our store (tracking and registry), default the state dir's."""
    from mlflow import MlflowClient

    uri = uri or tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "experiment"


def _artifact_location(uri: str, name: str) -> str | None:
    """Beside a SQLite store: ``<db dir>/artifacts/<experiment>``; a server picks its own."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (artifact_root(db.parent) / _slug(name)).as_uri()


def get_or_create_experiment(name: str, uri: str | None = None) -> str:
    """Experiment id by name; a new one stores its artifacts beside the tracking DB.

    A deleted experiment of that name is restored rather than failing the run.
    """
    uri = uri or tracking_uri()
    mc = client(uri)
    experiment = mc.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            mc.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return mc.create_experiment(name, artifact_location=_artifact_location(uri, name))
    except Exception:  # another process created it between the two calls
        experiment = mc.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


# --------------------------------------------------------------------------- runs


def end_active_runs(status: str = "FAILED") -> list[str]:
    """End every fluent MLflow run still active in this thread; returns their ids.

    The safety net behind ``tracked_run`` and the Dagster resource's teardown.
    """
    import mlflow

    ended = []
    while (run := mlflow.active_run()) is not None:
        ended.append(run.info.run_id)
        mlflow.end_run(status=status)
    return ended


@contextmanager
def tracked_run(
    experiment: str,
    run_name: str | None = None,
    *,
    nested: bool = False,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    finished_on: tuple[type[BaseException], ...] = (),
    uri: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run that always ends FINISHED (body returned) or FAILED (it raised).

    Runs the body inside, nested ones included, that were left open are ended FAILED
    first, so the stack is clean even when the body forgot. ``finished_on`` lists
    exceptions that are a normal outcome (e.g. Optuna's ``TrialPruned``): the run ends
    FINISHED and the exception propagates. The exception's type and message go into the
    ``error`` tag so the MLflow UI says why a run failed. ``uri``: default = the state dir.
    """
    import mlflow

    uri = configure(uri)
    experiment_id = get_or_create_experiment(experiment, uri)
    # The fluent "active experiment" is process-global (dagster-mlflow's resource sets it too):
    # point it at this store's experiment so nothing started inside lands in another store.
    mlflow.set_experiment(experiment_id=experiment_id)
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        nested=nested,
        tags={k: str(v) for k, v in (tags or {}).items()},
        description=description,
    )
    run_id = run.info.run_id
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except finished_on:
        status = "FINISHED"
        raise
    except BaseException as exc:
        _tag_error(run_id, exc, uri)
        raise
    finally:
        _end_run(run_id, status, uri)


def _tag_error(run_id: str, exc: BaseException, uri: str) -> None:
    try:
        client(uri).set_tag(run_id, "error", f"{type(exc).__name__}: {exc}"[:2000])
    except Exception:  # never mask the real error
        log.warning("could not tag MLflow run %s with its error", run_id, exc_info=True)


def _end_run(run_id: str, status: str, uri: str) -> None:
    """End ``run_id`` with ``status`` and anything opened on top of it with FAILED."""
    import mlflow

    active = mlflow.active_run()
    while active is not None and active.info.run_id != run_id:
        mlflow.end_run(status="FAILED")
        active = mlflow.active_run()
    if active is not None:
        mlflow.end_run(status=status)
        return
    # Someone ended or swapped the fluent run: make sure the store agrees anyway.
    mc = client(uri)
    if mc.get_run(run_id).info.status == "RUNNING":
        mc.set_terminated(run_id, status=status)


def running_runs(uri: str | None = None) -> list[Any]:
    """Every run in status RUNNING, across experiments (what the tests assert is empty)."""
    mc = client(uri)
    experiments = [e.experiment_id for e in mc.search_experiments()]
    if not experiments:
        return []
    return mc.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")


def close_orphaned_runs(is_finished: Any, uri: str | None = None) -> list[str]:
    """Mark KILLED the RUNNING runs whose Dagster run has finished; returns their ids.

    Only a process killed hard (SIGKILL, out of memory) can leave a run RUNNING past
    ``tracked_run``; the Dagster resource calls this at setup so such runs do not linger.
    ``is_finished(dagster_run_id) -> bool``; runs without the tag are left alone.
    """
    closed = []
    mc = client(uri)
    for run in running_runs(uri):
        dagster_run_id = run.data.tags.get(DAGSTER_RUN_TAG)
        if dagster_run_id and is_finished(dagster_run_id):
            mc.set_terminated(run.info.run_id, status="KILLED")
            mc.set_tag(run.info.run_id, "error", "closed: its Dagster run had ended")
            closed.append(run.info.run_id)
    return closed


def _clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float | np.integer | np.floating):
            out[_metric_key(key)] = float(value)
    return out


def _metric_key(key: str) -> str:
    """MLflow keys allow alphanumerics, _ - . space / : only."""
    return re.sub(r"[^A-Za-z0-9_\-. /:]", "_", str(key))


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log the numeric entries of ``metrics`` (NaN kept: it means 'undefined', e.g. AUC)."""
    import mlflow

    clean = _clean_metrics(metrics)
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_params(params: Mapping[str, Any], prefix: str = "") -> None:
    """Log params flattened (``a.b``), values as text truncated to MLflow's limit."""
    import mlflow

    flat = _flatten(params, prefix)
    if flat:
        mlflow.log_params({k: v[:_MAX_PARAM_CHARS] for k, v in flat.items()})


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(list(value), default=str)
        else:
            out[name] = str(value)
    return out


# --------------------------------------------------------------------------- provenance


def git_provenance(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """Commit and dirty flag of the code that trained; 'unknown' outside a checkout."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": str(bool(status))}


def package_versions(packages: tuple[str, ...] = PROVENANCE_PACKAGES) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance_params(dataset_hash: str | None = None) -> dict[str, str]:
    """Params that say exactly what trained: commit, package versions, dataset content hash."""
    params = git_provenance()
    params.update({f"version.{k}": v for k, v in package_versions().items()})
    if dataset_hash is not None:
        params["dataset_hash"] = dataset_hash
    return params


# --------------------------------------------------------------------------- serving


@dataclass
class ServingSpec:
    """Everything needed to rebuild and feed a logged model (saved as ``spec.json``).

    ``scaler``: the training scaler (``datasets.Scaler.to_dict()``: per value array
    ``mean`` / ``std`` lists keyed by the kind's value arrays), applied to raw features inside
    the model exactly as in training: standardise, then NaN and padded steps become 0.
    None = inputs are already scaled. ``kind``: a key of ``training.kinds.KINDS``.
    """

    kind: str
    hparams: dict[str, Any]
    seq_len: int
    feature_names: list[str]
    label: str
    scaler: dict[str, list[float]] | None = None
    dataset_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_channels(self) -> int:
        return kind_of(self.kind).channels(self.n_features)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_json_default)

    @classmethod
    def from_json(cls, text: str) -> ServingSpec:
        return cls(**json.loads(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


class SequenceScorer:
    """The served model without MLflow: unpack the one array, scale, run torch, sigmoid.

    Kept free of MLflow so it is unit-testable and usable from a batch scoring job.
    """

    def __init__(self, model: Any, spec: ServingSpec) -> None:
        self.model = model.eval()
        self.spec = spec

    @classmethod
    def from_files(cls, spec_path: str | Path, weights_path: str | Path) -> SequenceScorer:
        import torch

        spec = ServingSpec.from_json(Path(spec_path).read_text())
        model = build_model(spec)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return cls(model, spec)

    def predict(self, packed: Any) -> np.ndarray:
        """P(label = 1) as float32 [N] for a packed [N, T, C] float32 array."""
        import torch

        kind = kind_of(self.spec.kind)
        array = np.asarray(packed, dtype=np.float32)
        if array.ndim != 3 or array.shape[-1] != self.spec.n_channels:
            raise ValueError(
                f"expected a float32 array [N, T, {self.spec.n_channels}] "
                f"({self.spec.kind} layout), got shape {array.shape}"
            )
        values, mask, other = kind.unpack(array, self.spec.n_features)
        scaler = self.spec.scaler
        inputs: dict[str, np.ndarray] = {"mask": mask, **other}
        for key, x in values.items():
            # Training's apply_scaler (the same zscore); no scaler = already scaled.
            mean, std = (scaler["mean"][key], scaler["std"][key]) if scaler else (0.0, 1.0)
            inputs[key] = zscore(x, mean, std, mask)
        with torch.no_grad():
            logits = self.model(*(torch.from_numpy(inputs[k]) for k in kind.input_keys))
        return torch.sigmoid(logits.float()).numpy().astype(np.float32)


def build_model(spec: ServingSpec) -> Any:
    """A fresh (untrained) module of the spec's kind and hyper-parameters."""
    return kind_of(spec.kind).network_from_hparams(spec.hparams)


@functools.cache
def _pyfunc_class() -> type:
    """The mlflow.pyfunc wrapper class, built on first use so mlflow loads lazily."""
    import mlflow.pyfunc

    class SequenceModel(mlflow.pyfunc.PythonModel):
        """One float32 array [N, T, C] in, P(label = 1) float32 [N] out (see the spec)."""

        def load_context(self, context):
            self.scorer = SequenceScorer.from_files(
                context.artifacts["spec"], context.artifacts["weights"]
            )

        # np.ndarray is the one hint MLflow accepts without deriving a schema from it: the
        # explicit signature stays the contract (and no "add type hints" warning).
        def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
            return self.scorer.predict(model_input)

    return SequenceModel


def serving_model() -> Any:
    """Entry point of the models-from-code module written into each logged model."""
    return _pyfunc_class()()


# The module MLflow stores with the model and executes on load (models from code: no
# pickle, readable in the MLflow UI). odds_pipeline itself travels in the model's code/.
_SERVING_MODULE = '''"""Serving wrapper of an odds_pipeline sequence model (see odds_pipeline.training.tracking)."""

import mlflow

from odds_pipeline.training.tracking import serving_model

mlflow.models.set_model(serving_model())
'''


def _pip_requirements() -> list[str]:
    versions = package_versions(("torch", "numpy", "mlflow", "pandas"))
    reqs = []
    for name, version in versions.items():
        if version == "not installed":
            continue
        reqs.append(f"{name}=={version.split('+')[0]}")
    return reqs


def _code_package(target: Path) -> Path:
    """Copy the few odds_pipeline modules the served model imports (not the whole package)."""
    src = Path(__file__).resolve().parent.parent
    pkg = target / "odds_pipeline"
    for module in SERVED_MODULES:
        dest = pkg / module
        dest.parent.mkdir(parents=True, exist_ok=True)
        for init in (pkg / "__init__.py", dest.parent / "__init__.py"):
            if not init.exists():
                init.write_text("")
        dest.write_bytes((src / module).read_bytes())
    return pkg


def log_sequence_model(
    model: Any,
    spec: ServingSpec,
    input_example: np.ndarray,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
) -> ModelInfo:
    """Log a trained module as a pyfunc model on the active run (explicit everything).

    Signature: one float32 tensor [-1, T, C] -> float32 [-1]. Requirements are pinned
    from the running environment instead of inferred (inference costs ~10 s a call).
    """
    import mlflow
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    example = np.asarray(input_example, dtype=np.float32)
    if example.ndim != 3 or example.shape[-1] != spec.n_channels:
        raise ValueError(
            f"input_example must be [N, T, {spec.n_channels}], got shape {example.shape}"
        )
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, spec.seq_len, spec.n_channels))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]),
    )
    with tempfile.TemporaryDirectory(prefix="odds-model-") as tmp:
        tmp_path = Path(tmp)
        spec_path = tmp_path / "spec.json"
        spec_path.write_text(spec.to_json())
        weights_path = tmp_path / "weights.pt"
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, weights_path)
        code_file = tmp_path / "serving.py"
        code_file.write_text(_SERVING_MODULE)
        package = _code_package(tmp_path / "code")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code_file),
            artifacts={"spec": str(spec_path), "weights": str(weights_path)},
            code_paths=[str(package)],
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),
            registered_model_name=registered_model_name,
            metadata={
                "kind": spec.kind,
                "label": spec.label,
                "dataset_hash": spec.dataset_hash or "",
                "weights_sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
            },
        )


def register_challenger(
    model_uri: str, name: str, tags: Mapping[str, Any] | None = None, uri: str | None = None
) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name`` and give it the alias challenger.

    The previous challenger simply loses the alias (aliases are unique per model); the
    champion alias is moved only by the registry group's promotion.
    """
    import mlflow

    uri = configure(uri)
    version = mlflow.register_model(
        model_uri, name, tags={k: str(v) for k, v in (tags or {}).items()}
    )
    client(uri).set_registered_model_alias(name, CHALLENGER, version.version)
    return version


def finite_or_none(value: Any) -> float | None:
    """A float for metadata, or None for NaN/inf (Dagster metadata floats must be finite)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def log_dataset_input(path: str, name: str, digest: str, context: str = "training") -> None:
    """The dataset folder as an MLflow dataset input of the active run (name, hash, source)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    dataset = MetaDataset(source=resolve_dataset_source(path), name=name, digest=digest[:36])
    mlflow.log_input(dataset, context=context)


def describe_model(
    name: str, experiment_text: str, model_text: str, uri: str | None = None
) -> None:
    """Descriptions a person reads in the MLflow UI: the experiment's note, the model's text."""
    c = client(uri)
    experiment = c.get_experiment_by_name(name)
    if experiment is not None:
        c.set_experiment_tag(experiment.experiment_id, "mlflow.note.content", experiment_text)
    c.update_registered_model(name, description=model_text)
