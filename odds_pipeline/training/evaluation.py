"""Probability-forecast metrics and comparison plots, in NumPy (no torch, no sklearn).

Every number a model gets is computed the same way for its baselines (market, classical
arbitrage rules, oracle), on the same rows, by these functions.

Conventions (documented once, used everywhere):
- ``y`` is 0/1, ``p`` the predicted P(y = 1) in [0, 1]; NaN or out-of-range ``p`` raise.
- AUC-ROC and AUC-PR (average precision, the step-wise sum of sklearn's
  ``average_precision_score``) are NaN when only one class is present: undefined, not 0.5.
- ``log_loss`` clips p to [eps, 1 - eps] with eps = float64 machine epsilon (as sklearn
  does), so a confident miss costs about 36 nats instead of infinity.
- ``ece_10``: 10 equal-width bins on [0, 1], bin i holds i/10 <= p < (i+1)/10 (p = 1 in the
  last); ECE = sum over bins of (n_bin / n) * |mean(y) - mean(p)|.
- ``accuracy``: predicted class is p >= 0.5.
- Tables are dicts of equal-length column lists (JSON-able; ``pandas.DataFrame(table)``).
Plots use matplotlib's object API (``Figure``, Agg canvas): no pyplot global state, safe in
a multi-threaded Dagster process.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "EPS",
    "average_precision",
    "binary_metrics",
    "brier_score",
    "calibration_table",
    "expected_calibration_error",
    "length_buckets",
    "log_loss",
    "metrics_by_group",
    "plot_calibration",
    "plot_metric_by_group",
    "plot_roc_pr",
    "pr_curve",
    "roc_auc",
    "roc_curve",
    "table_to_markdown",
]

EPS = float(np.finfo(np.float64).eps)
Table = dict[str, list[Any]]


def _validate(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    p_arr = np.asarray(p, dtype=np.float64).ravel()
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"y has {y_arr.size} values but p has {p_arr.size}")
    if not np.all((y_arr == 0) | (y_arr == 1)):
        raise ValueError("y must contain only 0 and 1")
    if not np.all(np.isfinite(p_arr)) or np.any((p_arr < 0) | (p_arr > 1)):
        raise ValueError("p must be finite probabilities in [0, 1]")
    return y_arr, p_arr


def _one_class(y: np.ndarray) -> bool:
    positives = y.sum()
    return positives == 0 or positives == y.size


def _rank_average(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    new_group = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], values.size]
    average = (starts + 1 + ends) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = average[np.cumsum(new_group) - 1]
    return ranks


def roc_auc(y: Any, p: Any) -> float:
    """Area under the ROC curve via the Mann-Whitney statistic (ties count one half)."""
    y, p = _validate(y, p)
    if y.size == 0 or _one_class(y):
        return math.nan
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    ranks = _rank_average(p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _threshold_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct threshold, high to low."""
    order = np.argsort(-p, kind="mergesort")
    y_sorted, p_sorted = y[order], p[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(p_sorted)), y.size - 1]
    tps = np.cumsum(y_sorted)[last_of_tie]
    fps = last_of_tie + 1 - tps
    return tps, fps


def roc_curve(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) from (0, 0) to (1, 1); empty if one class."""
    y, p = _validate(y, p)
    if y.size == 0 or _one_class(y):
        return np.zeros(0), np.zeros(0)
    tps, fps = _threshold_counts(y, p)
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def pr_curve(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) starting at recall 0, precision 1; empty if one class."""
    y, p = _validate(y, p)
    if y.size == 0 or _one_class(y):
        return np.zeros(0), np.zeros(0)
    tps, fps = _threshold_counts(y, p)
    return np.r_[0.0, tps / tps[-1]], np.r_[1.0, tps / (tps + fps)]


def average_precision(y: Any, p: Any) -> float:
    """AUC-PR as average precision: sum of (R_k - R_{k-1}) * P_k over thresholds."""
    y, p = _validate(y, p)
    if y.size == 0 or _one_class(y):
        return math.nan
    tps, fps = _threshold_counts(y, p)
    recall = tps / tps[-1]
    precision = tps / (tps + fps)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier_score(y: Any, p: Any) -> float:
    y, p = _validate(y, p)
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def log_loss(y: Any, p: Any, eps: float = EPS) -> float:
    y, p = _validate(y, p)
    if not y.size:
        return math.nan
    q = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(q) + (1.0 - y) * np.log1p(-q)))


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((p * bins).astype(np.int64), bins - 1)


def expected_calibration_error(y: Any, p: Any, bins: int = 10) -> float:
    """ECE over ``bins`` equal-width bins (see the module docstring for edges)."""
    y, p = _validate(y, p)
    if not y.size:
        return math.nan
    idx = _bin_index(p, bins)
    counts = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, y, minlength=bins) - np.bincount(idx, p, minlength=bins))
    # sum_b (n_b / n) * |mean_y_b - mean_p_b| == sum_b |sum_y_b - sum_p_b| / n
    return float(gap[counts > 0].sum() / y.size)


def binary_metrics(y: Any, p: Any, threshold: float = 0.5) -> dict[str, float]:
    """The standard report for one forecast: n, positives, AUCs, Brier, log loss, ECE, accuracy."""
    y, p = _validate(y, p)
    n = int(y.size)
    return {
        "n": n,
        "positives": int(y.sum()),
        "base_rate": float(y.mean()) if n else math.nan,
        "mean_p": float(p.mean()) if n else math.nan,
        "auc_roc": roc_auc(y, p),
        "auc_pr": average_precision(y, p),
        "brier": brier_score(y, p),
        "log_loss": log_loss(y, p),
        "ece_10": expected_calibration_error(y, p, 10),
        "accuracy": float(np.mean((p >= threshold) == (y == 1))) if n else math.nan,
    }


def calibration_table(y: Any, p: Any, bins: int = 10) -> Table:
    """Reliability table: per equal-width bin, count, mean prediction and observed rate.

    Empty bins are kept (count 0, NaN means) so tables of several models line up.
    """
    y, p = _validate(y, p)
    idx = _bin_index(p, bins)
    counts = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, p, minlength=bins)
    sum_y = np.bincount(idx, y, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / counts, np.nan)
        frac = np.where(counts > 0, sum_y / counts, np.nan)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "count": counts.astype(int).tolist(),
        "mean_predicted": mean_p.tolist(),
        "fraction_positive": frac.tolist(),
    }


def length_buckets(lengths: Any, edges: Sequence[int] = (1, 2, 4, 8, 16, 32)) -> np.ndarray:
    """Sequence lengths -> labels such as "0", "1", "2-3", "4-7", ..., "32+" for grouping.

    ``edges`` are the first lengths of each bucket, increasing; anything below the
    first edge is labelled "<first" (or "0" when the first edge is 1).
    """
    values = np.asarray(lengths).ravel()
    edges = list(edges)
    labels = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] - 1 if i + 1 < len(edges) else None
        labels.append(f"{lo}+" if hi is None else (str(lo) if hi == lo else f"{lo}-{hi}"))
    below = "0" if edges[0] == 1 else f"<{edges[0]}"
    pos = np.searchsorted(np.asarray(edges), values, side="right") - 1
    return np.array([below if i < 0 else labels[i] for i in pos], dtype=object)


def _group_sort_key(group: Any) -> tuple[int, float, str]:
    """Numbers, and labels starting with a number ("4-7", "<1", "32+"), sort numerically."""
    if isinstance(group, int | float | np.integer | np.floating):
        return (0, float(group), "")
    text = str(group)
    match = re.search(r"-?\d+(?:\.\d+)?", text)
    if match:
        value = float(match.group())
        return (0, value - 0.5 if text.startswith("<") else value, text)
    return (1, 0.0, text)


def metrics_by_group(
    y: Any,
    p: Any | Mapping[str, Any],
    groups: Any,
    order: Sequence[Any] | None = None,
) -> Table:
    """Metrics per group (e.g. sequence-length bucket), long format: one row per (model, group).

    ``p`` is one forecast (model name "model") or ``{name: p}`` to compare a model with its
    baselines on the same rows. Columns: model, group, n, positives, accuracy, brier,
    log_loss, ece_10, auc_roc, mean_p, base_rate.
    """
    forecasts = dict(p) if isinstance(p, Mapping) else {"model": p}
    group_arr = np.asarray(groups, dtype=object).ravel()
    if order is None:
        order = sorted(set(group_arr.tolist()), key=_group_sort_key)
    columns = ["model", "group", "n", "positives", "accuracy", "brier", "log_loss"]
    columns += ["ece_10", "auc_roc", "mean_p", "base_rate"]
    table: Table = {c: [] for c in columns}
    for name, forecast in forecasts.items():
        y_arr, p_arr = _validate(y, forecast)
        if group_arr.size != y_arr.size:
            raise ValueError(f"groups has {group_arr.size} values but y has {y_arr.size}")
        for group in order:
            sel = group_arr == group
            m = binary_metrics(y_arr[sel], p_arr[sel])
            table["model"].append(str(name))
            table["group"].append(group)
            for c in columns[2:]:
                table[c].append(m[c])
    return table


def table_to_markdown(table: Table, float_format: str = ".4f") -> str:
    """A small markdown table for Dagster metadata previews (no tabulate dependency)."""
    columns = list(table)
    rows = zip(*(table[c] for c in columns), strict=True)

    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "nan" if math.isnan(v) else format(v, float_format)
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _figure(n_rows: int = 1, height: float = 5.0, height_ratios: Sequence[float] | None = None):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, height), layout="constrained")
    axes = fig.subplots(n_rows, 1, squeeze=False, gridspec_kw={"height_ratios": height_ratios})
    return fig, [row[0] for row in axes]


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path


def plot_calibration(
    y: Any, forecasts: Mapping[str, Any], path: str | Path, bins: int = 10, title: str | None = None
) -> Path:
    """Reliability diagram of every forecast on one figure, with a histogram of p below."""
    fig, (ax, hist) = _figure(2, height=6.4, height_ratios=[3, 1])
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    for name, p in forecasts.items():
        y_arr, p_arr = _validate(y, p)
        table = calibration_table(y_arr, p_arr, bins)
        label = (
            f"{name} (Brier {brier_score(y_arr, p_arr):.4f}, "
            f"ECE {expected_calibration_error(y_arr, p_arr, bins):.4f})"
        )
        ax.plot(table["mean_predicted"], table["fraction_positive"], marker="o", label=label)
        hist.hist(p_arr, bins=bins, range=(0, 1), histtype="step", label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="observed rate")
    ax.set_title(title or f"Calibration ({bins} bins, n={len(np.ravel(y))})")
    ax.legend(loc="upper left", fontsize="small")
    hist.set(xlim=(0, 1), xlabel="predicted probability", ylabel="count")
    return _save(fig, path)


def plot_roc_pr(
    y: Any,
    forecasts: Mapping[str, Any],
    path_roc: str | Path,
    path_pr: str | Path,
    title: str | None = None,
) -> tuple[Path, Path]:
    """ROC and precision-recall curves of every forecast (two PNGs, one curve per forecast)."""
    fig_roc, (ax_roc,) = _figure()
    fig_pr, (ax_pr,) = _figure()
    ax_roc.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    y_arr = np.asarray(y, dtype=np.float64).ravel()
    if y_arr.size:
        ax_pr.axhline(y_arr.mean(), linestyle="--", color="grey", linewidth=1, label="base rate")
    for name, p in forecasts.items():
        fpr, tpr = roc_curve(y, p)
        recall, precision = pr_curve(y, p)
        if not fpr.size:
            continue  # one class only: curves undefined
        ax_roc.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(y, p):.4f})")
        ax_pr.step(
            recall, precision, where="post", label=f"{name} (AP {average_precision(y, p):.4f})"
        )
    ax_roc.set(
        xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate"
    )
    ax_roc.set_title(title or "ROC")
    ax_pr.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision")
    ax_pr.set_title(title or "Precision-recall")
    ax_roc.legend(loc="lower right", fontsize="small")
    ax_pr.legend(loc="upper right", fontsize="small")
    return _save(fig_roc, path_roc), _save(fig_pr, path_pr)


def plot_metric_by_group(
    table: Table, path: str | Path, metric: str = "brier", title: str | None = None
) -> Path:
    """Grouped bars of ``metric`` per group (x) and model (bars), from ``metrics_by_group``."""
    models = list(dict.fromkeys(table["model"]))
    groups = list(dict.fromkeys(table["group"]))
    values = {
        (m, g): v for m, g, v in zip(table["model"], table["group"], table[metric], strict=True)
    }
    counts = {g: n for m, g, n in zip(table["model"], table["group"], table["n"], strict=True)}
    fig, (ax,) = _figure()
    width = 0.8 / max(1, len(models))
    x = np.arange(len(groups))
    for i, model in enumerate(models):
        heights = [values.get((model, g), math.nan) for g in groups]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, heights, width, label=model)
    ax.set_xticks(x, [f"{g}\n(n={counts[g]})" for g in groups], fontsize="small")
    ax.set(xlabel="group", ylabel=metric)
    ax.set_title(title or f"{metric} by group")
    ax.legend(fontsize="small")
    return _save(fig, path)
