"""Scaling of sequence features: fit on the train window's real steps, applied the same way everywhere.

``zscore`` is the one standardisation: training (``apply_scaler``) and the served model
(``SequenceScorer``) both call it, so a logged model sees exactly what it was trained on.
Numpy only: this module travels inside every logged model.
"""

from __future__ import annotations

import contextlib
import json
import mmap
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np


def zscore(values: np.ndarray, mean: Any, std: Any, mask: np.ndarray | None = None) -> np.ndarray:
    """(values - mean) / std per channel (last axis); NaN, inf and padded steps become 0.

    ``mask`` [..., T] marks real steps; std <= 0 counts as 1 so the result is always finite.
    """
    mu = np.asarray(mean, dtype=np.float64)
    sd = np.asarray(std, dtype=np.float64)
    z = (np.asarray(values, dtype=np.float64) - mu) / np.where(sd > 0, sd, 1.0)
    keep = np.isfinite(z)
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool)[..., None]
    return np.where(keep, z, 0.0).astype(np.float32)


@dataclass
class Scaler:
    """Per-channel mean/std of each value array, fit on real steps of the train split."""

    feature_names: list[str]
    mean: dict[str, list[float]]
    std: dict[str, list[float]]
    fit_steps: int
    fit_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scaler:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    @classmethod
    def from_json(cls, text: str) -> Scaler:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Scaler:
        return cls.from_json(Path(path).read_text())


def fit_scaler(train: Any) -> Scaler:
    """Mean and std per channel over the real (mask True) steps of ``train``, NaN ignored.

    Constant or empty channels get std 1 (and mean 0 when empty) so scaling is always finite.
    """
    mean: dict[str, list[float]] = {}
    std: dict[str, list[float]] = {}
    steps = int(train.mask.sum())
    for key, arr in train.feature_arrays.items():
        real = arr[train.mask].astype(np.float64)  # [n_real, F]
        finite = np.isfinite(real)
        n = finite.sum(axis=0)
        safe = np.where(finite, real, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = safe.sum(axis=0) / n
            var = (np.where(finite, real - mu, 0.0) ** 2).sum(axis=0) / n
        mu = np.where(n > 0, mu, 0.0)
        sd = np.sqrt(np.where(n > 0, var, 1.0))
        sd = np.where(np.isfinite(sd) & (sd > 1e-12), sd, 1.0)
        mean[key] = [float(m) for m in mu]
        std[key] = [float(s) for s in sd]
    return Scaler(
        feature_names=list(train.feature_names),
        mean=mean,
        std=std,
        fit_steps=steps,
        fit_hash=train.content_hash(),
    )


def apply_scaler(
    dataset: Any,
    scaler: Scaler,
    *,
    out_dir: str | Path | None = None,
    chunk_rows: int = 16_384,
) -> Any:
    """A copy with every value array standardised; NaN and padded steps become 0 (the mean).

    Scaled ``chunk_rows`` rows at a time (elementwise, so the values do not depend on it):
    the float64 intermediates are one chunk's, and a memory-mapped input is read block by
    block. With ``out_dir`` the scaled arrays are written to ``<out_dir>/<key>.npy`` and
    memory-mapped read-only; the other arrays are the input's (mapped ones stay mapped).
    """
    if list(scaler.feature_names) != list(dataset.feature_names):
        raise ValueError("scaler was fit on other features than this dataset's")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    out = dataset.subset(np.arange(len(dataset)))
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    for key, arr in dataset.feature_arrays.items():
        mean, std = scaler.mean[key], scaler.std[key]
        if out_dir is None:
            scaled = np.empty(arr.shape, dtype=np.float32)
        else:
            path = Path(out_dir) / f"{key}.npy"
            scaled = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=arr.shape)
        for lo in range(0, len(arr), chunk_rows):
            hi = lo + chunk_rows
            scaled[lo:hi] = zscore(arr[lo:hi], mean, std, dataset.mask[lo:hi])
            _release(arr)
            if out_dir is not None:
                scaled.flush()
                _release(scaled)
        if out_dir is not None:
            del scaled
            scaled = np.load(path, mmap_mode="r") if len(arr) else np.zeros(arr.shape, np.float32)
        setattr(out, key, scaled)
    return out


def _release(arr: np.ndarray) -> None:
    """Drop a memory map's resident pages from this process (they stay in the page cache)."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or getattr(arr, "mode", None) not in ("r", "r+", "w+"):  # not copy-on-write
        return
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no madvise: a no-op
        mm.madvise(mmap.MADV_DONTNEED)
