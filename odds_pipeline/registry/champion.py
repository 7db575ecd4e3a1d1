"""The current champion, loaded from the registry and re-scored on a candidate's fresh test rows.

Its old logged metrics describe old data; the non-inferiority gate needs its predictions
on the very rows the candidate is judged on. A champion that reads other features, another
sequence length or another label cannot be scored on them: that is said, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from odds_pipeline.registry.decision import ChampionScores
from odds_pipeline.registry.promotion import alias_version
from odds_pipeline.training import tracking
from odds_pipeline.training.kinds import ModelKind


@dataclass
class LoadedModel:
    name: str
    version: str
    model: Any  # mlflow.pyfunc.PyFuncModel
    spec: tracking.ServingSpec


def load_alias(
    name: str, alias: str = tracking.CHAMPION, uri: str | None = None
) -> LoadedModel | None:
    """The version behind ``alias`` as a pyfunc model with its serving spec; None if no alias."""
    version = alias_version(name, alias, uri)
    if version is None:
        return None
    return load_version(name, version, uri)


def load_version(name: str, version: str, uri: str | None = None) -> LoadedModel:
    import mlflow.pyfunc

    tracking.configure(uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    spec = model.unwrap_python_model().scorer.spec
    return LoadedModel(name=name, version=str(version), model=model, spec=spec)


def rescore(
    loaded: LoadedModel | None, test: Any, kind: ModelKind, label: str
) -> ChampionScores | None:
    """The champion's P(label) on ``test`` (a dataset split), or why it cannot be had."""
    if loaded is None:
        return None
    spec = loaded.spec
    seq_len = int(test.mask.shape[1])
    problems = []
    if spec.kind != kind.name:
        problems.append(f"kind {spec.kind!r} != {kind.name!r}")
    if list(spec.feature_names) != list(test.feature_names):
        problems.append("it reads other features")
    if spec.seq_len != seq_len:
        problems.append(f"sequence length {spec.seq_len} != {seq_len}")
    if spec.label != label:
        problems.append(f"label {spec.label!r} != {label!r}")
    if problems:
        return ChampionScores(
            version=loaded.version,
            p=None,
            note=(
                f"champion v{loaded.version} cannot be scored on these rows ({'; '.join(problems)}): "
                "not comparable, so this gate cannot judge; pass"
            ),
        )
    packed = kind.pack(test)
    p = np.asarray(loaded.model.predict(packed), dtype=np.float64)
    return ChampionScores(version=loaded.version, p=p)
