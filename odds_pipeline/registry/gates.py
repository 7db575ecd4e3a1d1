"""Quality gates that decide whether a trained model may become champion.

Pure statistics: no Dagster, no MLflow, so the rules can be tested (and read) on their own.

Why an event-level (cluster) bootstrap: rows of one event (several books, several markets,
several snapshots) share one outcome, so they are not independent draws. Resampling rows
would treat 1,520 correlated rows as 1,520 pieces of evidence and give intervals that are
too narrow; resampling events keeps the rows of one event together. The bootstrap is
paired: model and baseline are judged on the very same resample, so the noise they share
(an easy or hard week) cancels in their ratio.

Why ratios: a Brier score of 0.21 means nothing alone; "0.6 % better than the market, CI
0.987-1.001" is something a person can accept or reject.

Every gate returns a :class:`GateResult` with a one-line ``summary`` that says what was
measured, against what, and the verdict. Degenerate input (no positives, one event, an
empty split) gives a failed verdict with the reason, not an exception; malformed input
(arrays of different lengths, probabilities outside [0, 1]) raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "GateResult",
    "baseline_gate_auc_pr",
    "baseline_gate_brier",
    "brier_ratio_rule",
    "calibration_gate",
    "champion_gate",
    "ece",
    "ece_null_quantile",
    "event_bootstrap_weights",
    "evidence_gate",
    "label_rate_gate",
    "paired_bootstrap_ratio",
    "reliability_table",
]

Metric = Literal["brier", "log_loss", "auc_pr"]

_NAN = float("nan")
# Resamples are drawn in chunks so memory stays bounded (~4M cells a chunk) whatever the
# data size; the draws come from one stream of uniforms, so results do not depend on it.
_MAX_CHUNK = 500
_CHUNK_CELLS = 4_000_000
_LOG_LOSS_EPS = 1e-15


@dataclass(frozen=True)
class GateResult:
    """The verdict of one gate, with the number behind it and a sentence a person reads."""

    name: str
    passed: bool
    value: float
    threshold: float
    ci_low: float
    ci_high: float
    n: int
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN and inf become None, numpy scalars plain Python)."""
        return {
            "name": self.name,
            "passed": bool(self.passed),
            "value": _json_safe(self.value),
            "threshold": _json_safe(self.threshold),
            "ci_low": _json_safe(self.ci_low),
            "ci_high": _json_safe(self.ci_high),
            "n": int(self.n),
            "summary": self.summary,
            "details": _json_safe(self.details),
        }


def _json_safe(obj: Any) -> Any:
    """Recursively convert to JSON-serialisable values; non-finite floats become None."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


# --------------------------------------------------------------------------- validation


def _check_lengths(**arrays: np.ndarray) -> int:
    """All arrays 1-D and of one length; the error names each array and its length."""
    lengths = {}
    for name, a in arrays.items():
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
        lengths[name] = a.shape[0]
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{k} has {v}" for k, v in lengths.items())
        raise ValueError(f"arrays must have the same length: {listing}")
    return next(iter(lengths.values())) if lengths else 0


def _labels(y: Any, name: str = "y") -> np.ndarray:
    """0/1 labels as float64 (bools accepted)."""
    a = np.asarray(y)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    a = a.astype(np.float64)
    if a.size and not np.all((a == 0.0) | (a == 1.0)):
        raise ValueError(f"{name} must contain only 0/1 labels")
    return a


def _probs(p: Any, name: str) -> np.ndarray:
    """Probabilities as float64, finite and in [0, 1]."""
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size and not (np.all(np.isfinite(a)) and a.min() >= 0.0 and a.max() <= 1.0):
        raise ValueError(f"{name} must be finite probabilities in [0, 1]")
    return a


def _scores(s: Any, name: str) -> np.ndarray:
    """Ranking scores (AUC-PR only needs an order): finite float64."""
    a = np.asarray(s, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite")
    return a


def _group_index(groups: Any) -> tuple[np.ndarray, int]:
    """Dense event index 0..G-1 per row, and G. Mixed-type ids are compared as strings."""
    g = np.asarray(groups)
    if g.ndim != 1:
        raise ValueError(f"groups must be 1-D, got shape {g.shape}")
    try:
        uniq, inverse = np.unique(g, return_inverse=True)
    except TypeError:
        uniq, inverse = np.unique(g.astype(str), return_inverse=True)
    return inverse.reshape(-1).astype(np.intp), int(uniq.shape[0])


# --------------------------------------------------------------------------- bootstrap


def _chunk_size(n_cols: int) -> int:
    return max(1, min(_MAX_CHUNK, _CHUNK_CELLS // max(n_cols, 1)))


def _draw_chunks(n_groups: int, n_resamples: int, seed: int, chunk: int) -> Iterator[np.ndarray]:
    """Yield [c, G] int64 event indices drawn with replacement, G per resample.

    Draws are ``floor(u * G)`` on one stream of uniforms filled row by row, so the
    resamples are the same whatever ``chunk`` is.
    """
    rng = np.random.default_rng(seed)
    for start in range(0, n_resamples, chunk):
        c = min(chunk, n_resamples - start)
        draws = (rng.random((c, n_groups)) * n_groups).astype(np.int64)
        yield np.minimum(draws, n_groups - 1, out=draws)


def _draw_counts(draws: np.ndarray, n_groups: int) -> np.ndarray:
    """[c, G] float64: how often each event was drawn in each resample."""
    c = draws.shape[0]
    flat = (draws + (np.arange(c, dtype=np.int64) * n_groups)[:, None]).ravel()
    return np.bincount(flat, minlength=c * n_groups).reshape(c, n_groups).astype(np.float64)


def event_bootstrap_weights(
    groups: np.ndarray, n_resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster (event-level) bootstrap weights.

    Each resample draws as many events as there are, with replacement; a row's weight is
    how often its event was drawn, so rows of one event always move together. Returns
    ``(row_weights [n_resamples, n_rows] int32, inverse [n_rows])`` where ``inverse`` maps
    each row to its event's index. Use the same weights for model and baseline (paired).
    """
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    inverse, n_groups = _group_index(groups)
    if n_groups == 0 or n_resamples == 0:
        return np.zeros((n_resamples, inverse.shape[0]), dtype=np.int32), inverse
    chunks = [
        _draw_counts(d, n_groups).astype(np.int32)[:, inverse]
        for d in _draw_chunks(n_groups, n_resamples, seed, _chunk_size(n_groups))
    ]
    return np.concatenate(chunks, axis=0), inverse


def _row_losses(y: np.ndarray, p: np.ndarray, metric: Metric) -> np.ndarray:
    if metric == "brier":
        return (p - y) ** 2
    q = np.clip(p, _LOG_LOSS_EPS, 1.0 - _LOG_LOSS_EPS)
    return -(y * np.log(q) + (1.0 - y) * np.log1p(-q))


class _APSorter:
    """Average precision of one score for many event-count vectors, sorted once.

    Average precision as in ``sklearn.metrics.average_precision_score``:
    ``sum_k (R_k - R_{k-1}) * P_k`` over distinct score thresholds, highest first; tied
    scores form one threshold. Only thresholds holding a positive row can move recall, so
    the sum runs over those K' <= n_positives thresholds: rows are sorted once, each row is
    assigned to the first such threshold at or below its score, and two sparse [G, K']
    matrices count positive and negative rows per (event, threshold). A resample's TP/FP
    at each threshold is then ``cumsum(counts @ M)``: O(rows) work per resample, no per-row
    weight matrix, exact integer counts.
    """

    def __init__(self, y: np.ndarray, score: np.ndarray, inverse: np.ndarray, n_groups: int):
        from scipy import sparse

        order = np.argsort(-score, kind="mergesort")
        s, ys, gs = score[order], y[order] == 1.0, inverse[order]
        block = np.r_[0, np.cumsum(np.diff(s) != 0.0)]  # tie run (threshold) of each row
        pos_blocks = np.unique(block[ys])
        self.n_thresholds = int(pos_blocks.shape[0])
        seg = np.searchsorted(pos_blocks, block, side="left")
        keep = seg < self.n_thresholds  # negatives below the lowest positive never count
        shape = (n_groups, self.n_thresholds)

        def counter(mask: np.ndarray) -> Any:
            data = np.ones(int(mask.sum()))
            return sparse.csr_array((data, (gs[mask], seg[mask])), shape=shape)

        self.m_pos = counter(ys)
        self.m_neg = counter(~ys & keep)

    def ap(self, counts: np.ndarray) -> np.ndarray:
        """AP per row of ``counts`` [c, n_groups] (event draw counts); NaN if no positives."""
        c = counts.shape[0]
        if self.n_thresholds == 0:
            return np.full(c, np.nan)
        counts_t = np.ascontiguousarray(counts.T)
        # [c, K'] in C order: cumsum along a contiguous axis is several times faster.
        d_tp = np.ascontiguousarray((self.m_pos.T @ counts_t).T)  # positives per threshold
        d_fp = np.ascontiguousarray((self.m_neg.T @ counts_t).T)
        tp = np.cumsum(d_tp, axis=1)
        total = np.cumsum(d_fp, axis=1)
        total += tp
        # total == 0 implies tp == 0 (weights are >= 0): precision 0 there, and d_tp is 0.
        precision = tp / np.maximum(total, np.finfo(np.float64).tiny)
        n_pos = tp[:, -1]
        num = np.einsum("ij,ij->i", d_tp, precision)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n_pos > 0, num / n_pos, np.nan)


def _weighted_average_precision(
    y: np.ndarray, score: np.ndarray, row_weights: np.ndarray
) -> np.ndarray:
    """AP per row of ``row_weights`` [c, n_rows] (each row its own event; used by tests)."""
    w = np.atleast_2d(np.asarray(row_weights, dtype=np.float64))
    n = w.shape[1]
    return _APSorter(
        np.asarray(y, dtype=np.float64), np.asarray(score, dtype=np.float64), np.arange(n), n
    ).ap(w)


def paired_bootstrap_ratio(
    y: Any,
    p_model: Any,
    p_base: Any,
    groups: Any,
    *,
    metric: Metric,
    n_resamples: int = 10_000,
    seed: int = 7,
    level: float = 0.95,
) -> dict[str, Any]:
    """Ratio metric(model) / metric(base) on the full data with an event-bootstrap CI.

    Vectorised, in chunks of resamples: for Brier and log loss, per-event loss sums, then
    a resample's total is the sum over its drawn events; for AUC-PR, rows sorted once per
    model, then cumulative TP/FP per resample from the event draw counts (see _APSorter). Resamples where the ratio is undefined (no positives for AUC-PR, a zero
    baseline loss) are dropped from the percentiles and counted in ``dropped``.

    Returns ``ratio, ci_low, ci_high, model, base, n, n_groups, dropped, n_resamples,
    level, metric``; values are NaN when undefined (e.g. no rows, no positives).
    """
    if metric not in ("brier", "log_loss", "auc_pr"):
        raise ValueError(f"metric must be 'brier', 'log_loss' or 'auc_pr', got {metric!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    yv = _labels(y)
    as_input = _scores if metric == "auc_pr" else _probs
    pm = as_input(p_model, "p_model")
    pb = as_input(p_base, "p_base")
    g = np.asarray(groups)
    n = _check_lengths(y=yv, p_model=pm, p_base=pb, groups=g)
    out: dict[str, Any] = {
        "metric": metric,
        "ratio": _NAN,
        "ci_low": _NAN,
        "ci_high": _NAN,
        "model": _NAN,
        "base": _NAN,
        "n": n,
        "n_groups": 0,
        "dropped": 0,
        "n_resamples": int(n_resamples),
        "level": float(level),
    }
    if n == 0:
        out["dropped"] = int(n_resamples)
        return out
    inverse, n_groups = _group_index(g)
    out["n_groups"] = n_groups

    if metric == "auc_pr":
        sorters = (_APSorter(yv, pm, inverse, n_groups), _APSorter(yv, pb, inverse, n_groups))
        ones = np.ones((1, n_groups))  # every event once: the full data
        model_pt, base_pt = (float(s.ap(ones)[0]) for s in sorters)
        chunk = _chunk_size(max(n, n_groups))
        model_bs, base_bs = [], []
        for draws in _draw_chunks(n_groups, n_resamples, seed, chunk):
            counts = _draw_counts(draws, n_groups)
            model_bs.append(sorters[0].ap(counts))
            base_bs.append(sorters[1].ap(counts))
        num, den = np.concatenate(model_bs), np.concatenate(base_bs)
    else:
        sums_m = np.bincount(inverse, weights=_row_losses(yv, pm, metric), minlength=n_groups)
        sums_b = np.bincount(inverse, weights=_row_losses(yv, pb, metric), minlength=n_groups)
        model_pt, base_pt = float(sums_m.sum() / n), float(sums_b.sum() / n)
        # A resample's loss total is the sum of its drawn events' sums; its row count
        # cancels in the ratio of means.
        num_l, den_l = [], []
        for draws in _draw_chunks(n_groups, n_resamples, seed, _chunk_size(n_groups)):
            num_l.append(sums_m[draws].sum(axis=1))
            den_l.append(sums_b[draws].sum(axis=1))
        num, den = np.concatenate(num_l), np.concatenate(den_l)

    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = num / den
    ok = np.isfinite(ratios)
    out["dropped"] = int(n_resamples - ok.sum())
    out["model"], out["base"] = model_pt, base_pt
    if math.isfinite(model_pt) and math.isfinite(base_pt) and base_pt != 0.0:
        out["ratio"] = model_pt / base_pt
    if ok.any():
        alpha = 1.0 - level
        lo, hi = np.quantile(ratios[ok], [alpha / 2.0, 1.0 - alpha / 2.0])
        out["ci_low"], out["ci_high"] = float(lo), float(hi)
    return out


# --------------------------------------------------------------------------- calibration


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins on [0, 1]; p == 1 falls in the last bin."""
    return np.minimum((p * bins).astype(np.intp), bins - 1)


def _check_bins(bins: int) -> None:
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")


def ece(y: Any, p: Any, bins: int = 10) -> float:
    """Expected calibration error: sum over bins of (bin share) * |mean p - positive rate|.

    Equals ``sum_b |sum p - sum y| / n``; NaN for no rows.
    """
    _check_bins(bins)
    yv, pv = _labels(y), _probs(p, "p")
    n = _check_lengths(y=yv, p=pv)
    if n == 0:
        return _NAN
    idx = _bin_index(pv, bins)
    gap = np.bincount(idx, weights=pv - yv, minlength=bins)
    return float(np.abs(gap).sum() / n)


def reliability_table(y: Any, p: Any, bins: int = 10) -> list[dict[str, Any]]:
    """Per bin: lo, hi, n, mean_p, frac_pos (NaN for empty bins) - the data behind ECE."""
    _check_bins(bins)
    yv, pv = _labels(y), _probs(p, "p")
    _check_lengths(y=yv, p=pv)
    idx = _bin_index(pv, bins)
    counts = np.bincount(idx, minlength=bins)
    sum_p = np.bincount(idx, weights=pv, minlength=bins)
    sum_y = np.bincount(idx, weights=yv, minlength=bins)
    rows = []
    for b in range(bins):
        k = int(counts[b])
        rows.append(
            {
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "n": k,
                "mean_p": float(sum_p[b] / k) if k else _NAN,
                "frac_pos": float(sum_y[b] / k) if k else _NAN,
            }
        )
    return rows


def _ece_null_sample(p: np.ndarray, bins: int, n_sim: int, seed: int) -> np.ndarray:
    """ECE of ``n_sim`` outcome vectors drawn from Bernoulli(p): calibration by construction."""
    n = p.shape[0]
    idx = _bin_index(p, bins)
    onehot = np.zeros((n, bins))
    onehot[np.arange(n), idx] = 1.0
    sum_p = p @ onehot
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_sim, _chunk_size(n)):
        c = min(_chunk_size(n), n_sim - start)
        y_sim = (rng.random((c, n)) < p).astype(np.float64)
        out.append(np.abs(sum_p - y_sim @ onehot).sum(axis=1) / n)
    return np.concatenate(out)


def ece_null_quantile(
    p: Any, *, bins: int = 10, q: float = 0.95, n_sim: int = 2000, seed: int = 7
) -> float:
    """The q-quantile of ECE that a perfectly calibrated forecast with these p would show.

    ECE is never 0 on finite data; how large it gets by chance depends on n and on where
    the p lie, so the threshold is simulated rather than fixed: y* ~ Bernoulli(p), n_sim
    times, ECE each time.
    """
    _check_bins(bins)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    if n_sim < 1:
        raise ValueError(f"n_sim must be >= 1, got {n_sim}")
    pv = _probs(p, "p")
    if pv.shape[0] == 0:
        return _NAN
    return float(np.quantile(_ece_null_sample(pv, bins, n_sim, seed), q))


# --------------------------------------------------------------------------- gates


def _verdict(passed: bool) -> str:
    return "pass" if passed else "fail"


def _fmt(x: float, digits: int = 3) -> str:
    return "undefined" if not math.isfinite(x) else f"{x:.{digits}f}"


def _ci_text(res: dict[str, Any]) -> str:
    pct = round(res["level"] * 100)
    return (
        f"({pct}% CI {_fmt(res['ci_low'])}-{_fmt(res['ci_high'])}, "
        f"n={res['n']}, {res['n_groups']} events)"
    )


def _boot_details(res: dict[str, Any], seed: int, **extra: Any) -> dict[str, Any]:
    return {
        "metric": res["metric"],
        "model_value": res["model"],
        "baseline_value": res["base"],
        "n_groups": res["n_groups"],
        "n_resamples": res["n_resamples"],
        "dropped_resamples": res["dropped"],
        "level": res["level"],
        "seed": seed,
        **extra,
    }


def _result(
    name: str,
    passed: bool,
    res: dict[str, Any],
    threshold: float,
    summary: str,
    details: dict[str, Any],
) -> GateResult:
    return GateResult(
        name=name,
        passed=bool(passed),
        value=float(res["ratio"]),
        threshold=float(threshold),
        ci_low=float(res["ci_low"]),
        ci_high=float(res["ci_high"]),
        n=int(res["n"]),
        summary=summary,
        details=details,
    )


def evidence_gate(
    n_rows: int, n_positives: int, *, min_rows: int, min_positives: int
) -> GateResult:
    """Enough test rows and positives for the other gates' statistics to mean anything."""
    if n_rows < 0 or n_positives < 0:
        raise ValueError(f"counts must be >= 0, got n_rows={n_rows}, n_positives={n_positives}")
    if n_positives > n_rows:
        raise ValueError(f"n_positives ({n_positives}) exceeds n_rows ({n_rows})")
    rows_ok, pos_ok = n_rows >= min_rows, n_positives >= min_positives
    passed = rows_ok and pos_ok
    summary = (
        f"{n_rows} test rows ({'>=' if rows_ok else '<'} {min_rows}), "
        f"{n_positives} positives ({'>=' if pos_ok else '<'} {min_positives}): {_verdict(passed)}"
    )
    return GateResult(
        name="enough_evidence",
        passed=passed,
        value=float(n_positives),
        threshold=float(min_positives),
        ci_low=_NAN,
        ci_high=_NAN,
        n=int(n_rows),
        summary=summary,
        details={
            "n_rows": int(n_rows),
            "n_positives": int(n_positives),
            "min_rows": int(min_rows),
            "min_positives": int(min_positives),
        },
    )


def calibration_gate(
    y: Any, p: Any, *, bins: int = 10, q: float = 0.95, n_sim: int = 2000, seed: int = 7
) -> GateResult:
    """Pass when ECE is no larger than a perfectly calibrated forecast's ECE would be at q.

    A fixed ECE threshold would fail small honest test sets and pass large sloppy ones;
    comparing with the simulated null on the same p and n does neither.
    """
    _check_bins(bins)
    yv, pv = _labels(y), _probs(p, "p")
    n = _check_lengths(y=yv, p=pv)
    if n == 0:
        return GateResult(
            name="calibration",
            passed=False,
            value=_NAN,
            threshold=_NAN,
            ci_low=_NAN,
            ci_high=_NAN,
            n=0,
            summary=f"ECE-{bins}: no rows to judge: fail",
            details={"bins": bins, "q": q, "n_sim": n_sim, "seed": seed},
        )
    value = ece(yv, pv, bins)
    null = _ece_null_sample(pv, bins, n_sim, seed)
    threshold = float(np.quantile(null, q))
    null_median = float(np.median(null))
    passed = value <= threshold
    summary = (
        f"ECE-{bins} {value:.4f} {'<=' if passed else '>'} {threshold:.4f} "
        f"({round(q * 100)}% quantile of ECE under perfect calibration, n={n}; "
        f"null median {null_median:.4f}): {_verdict(passed)}"
    )
    return GateResult(
        name="calibration",
        passed=passed,
        value=value,
        threshold=threshold,
        ci_low=_NAN,
        ci_high=_NAN,
        n=n,
        summary=summary,
        details={
            "bins": bins,
            "q": q,
            "n_sim": n_sim,
            "seed": seed,
            "null_median": null_median,
            "null_quantile": threshold,
            "mean_p": float(pv.mean()),
            "positive_rate": float(yv.mean()),
            "reliability": reliability_table(yv, pv, bins),
        },
    )


# A model that IS its baseline computes it in float32: its bootstrap bounds straddle 1 by
# ~1e-9, and such a tie must never read as a loss.
_TIE_TOLERANCE = 1e-6


def brier_ratio_rule(
    ci_low: float,
    ci_high: float,
    max_upper: float,
    baseline_name: str = "market",
    max_lower: float | None = 1.0,
) -> tuple[bool, str]:
    """(holds, rule text) for an interval of Brier(model) / Brier(baseline).

    Holds when the upper bound is <= ``max_upper`` (a tie is tolerated) and the lower bound
    is <= ``max_lower`` (default 1: an interval wholly above 1 is measurably worse, tolerance
    or not; None turns that check off). One rule for the promotion gate and for the
    champion's outcome monitoring.
    """
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return False, "interval undefined"
    if max_lower is not None and ci_low > max_lower + _TIE_TOLERANCE:
        worse = "measurably worse than the " + baseline_name if max_lower == 1.0 else "too high"
        return False, f"lower bound {_fmt(ci_low, 4)} > {max_lower:g}, {worse}"
    holds = ci_high <= max_upper
    return holds, f"upper bound {'<=' if holds else '>'} {max_upper:g}"


def baseline_gate_brier(
    y: Any,
    p_model: Any,
    p_base: Any,
    groups: Any,
    *,
    max_upper: float = 1.01,
    max_lower: float | None = 1.0,
    baseline_name: str = "market",
    n_resamples: int = 10_000,
    seed: int = 7,
) -> GateResult:
    """Pass when the upper CI bound of Brier(model) / Brier(baseline) is <= ``max_upper``
    and the lower bound is <= ``max_lower`` (``brier_ratio_rule``).

    Judging the upper bound, not the point, asks the data to show the model is at worst
    marginally worse than the baseline (``max_upper`` slightly above 1 tolerates a tie).
    The tolerance is for ties only: a model whose whole interval lies above 1 is measurably
    worse than the baseline (on eight EPL seasons: 1.006, CI 1.003-1.009) and fails.
    """
    res = paired_bootstrap_ratio(
        y, p_model, p_base, groups, metric="brier", n_resamples=n_resamples, seed=seed
    )
    label = f"Brier ratio model/{baseline_name}"
    details = _boot_details(res, seed, baseline_name=baseline_name, max_upper=max_upper)
    hi = res["ci_high"]
    if res["n"] == 0:
        return _result(
            "beats_baseline", False, res, max_upper, f"{label}: no rows to judge: fail", details
        )
    if not (math.isfinite(res["ratio"]) and math.isfinite(hi)):
        why = f"{baseline_name} Brier is 0" if res["base"] == 0.0 else "ratio undefined"
        summary = f"{label} undefined ({why}, n={res['n']}): fail"
        return _result("beats_baseline", False, res, max_upper, summary, details)
    passed, rule = brier_ratio_rule(res["ci_low"], hi, max_upper, baseline_name, max_lower)
    summary = f"{label} {_fmt(res['ratio'])} {_ci_text(res)}; {rule}: {_verdict(passed)}"
    return _result("beats_baseline", passed, res, max_upper, summary, details)


def baseline_gate_auc_pr(
    y: Any,
    p_model: Any,
    p_base: Any,
    groups: Any,
    *,
    min_ratio: float = 1.2,
    baseline_name: str = "best rule",
    n_resamples: int = 10_000,
    seed: int = 7,
) -> GateResult:
    """Pass when AUC-PR(model) / AUC-PR(baseline) >= ``min_ratio`` and its CI lies above 1.

    For rare events a model must be clearly better than a simple rule to be worth its
    upkeep (the point ratio), and that must not be luck (the lower bound above 1).
    """
    res = paired_bootstrap_ratio(
        y, p_model, p_base, groups, metric="auc_pr", n_resamples=n_resamples, seed=seed
    )
    label = f"AUC-PR ratio model/{baseline_name}"
    details = _boot_details(res, seed, baseline_name=baseline_name, min_ratio=min_ratio)
    n_pos = int(np.sum(_labels(y))) if res["n"] else 0
    details["n_positives"] = n_pos
    if res["n"] == 0:
        return _result(
            "beats_baseline", False, res, min_ratio, f"{label}: no rows to judge: fail", details
        )
    if n_pos == 0:
        summary = f"{label}: no positives in y (n={res['n']}), AUC-PR undefined: fail"
        return _result("beats_baseline", False, res, min_ratio, summary, details)
    ratio, lo = res["ratio"], res["ci_low"]
    if not (math.isfinite(ratio) and math.isfinite(lo)):
        summary = f"{label} undefined (n={res['n']}): fail"
        return _result("beats_baseline", False, res, min_ratio, summary, details)
    point_ok, lo_ok = ratio >= min_ratio, lo > 1.0
    passed = point_ok and lo_ok
    summary = (
        f"{label} {_fmt(ratio)} {_ci_text(res)}: ratio {'>=' if point_ok else '<'} "
        f"{min_ratio:g} and CI low {_fmt(lo)} {'>' if lo_ok else '<='} 1: {_verdict(passed)}"
    )
    return _result("beats_baseline", passed, res, min_ratio, summary, details)


def champion_gate(
    y: Any,
    p_model: Any,
    p_champion: Any | None,
    groups: Any,
    *,
    metric: Literal["brier", "auc_pr"],
    margin: float,
    n_resamples: int = 10_000,
    seed: int = 7,
) -> GateResult:
    """Non-inferiority against the current champion on the same test rows.

    Brier (lower is better): pass when the upper CI bound of model/champion <= 1 + margin.
    AUC-PR (higher is better): pass when the lower CI bound of model/champion >= 1 - margin.
    A challenger need not be proven better, only shown not to be meaningfully worse.
    """
    if metric not in ("brier", "auc_pr"):
        raise ValueError(f"metric must be 'brier' or 'auc_pr', got {metric!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    lower_better = metric == "brier"
    threshold = 1.0 + margin if lower_better else 1.0 - margin
    metric_name = "Brier" if lower_better else "AUC-PR"
    if p_champion is None:
        n = int(np.asarray(y).shape[0])
        return GateResult(
            name="not_worse_than_champion",
            passed=True,
            value=_NAN,
            threshold=threshold,
            ci_low=_NAN,
            ci_high=_NAN,
            n=n,
            summary="no champion yet: nothing to be worse than",
            details={"metric": metric, "margin": margin},
        )
    res = paired_bootstrap_ratio(
        y, p_model, p_champion, groups, metric=metric, n_resamples=n_resamples, seed=seed
    )
    label = f"{metric_name} ratio model/champion"
    details = _boot_details(res, seed, margin=margin)
    details["champion_value"] = details.pop("baseline_value")
    if res["n"] == 0:
        return _result(
            "not_worse_than_champion",
            False,
            res,
            threshold,
            f"{label}: no rows to judge: fail",
            details,
        )
    if not lower_better and not np.any(_labels(y) == 1.0):
        summary = f"{label}: no positives in y (n={res['n']}), AUC-PR undefined: fail"
        return _result("not_worse_than_champion", False, res, threshold, summary, details)
    bound = res["ci_high"] if lower_better else res["ci_low"]
    if not (math.isfinite(res["ratio"]) and math.isfinite(bound)):
        summary = f"{label} undefined (n={res['n']}): fail"
        return _result("not_worse_than_champion", False, res, threshold, summary, details)
    if lower_better:
        passed = bound <= threshold
        rule = f"upper bound {'<=' if passed else '>'} {threshold:g}"
    else:
        passed = bound >= threshold
        rule = f"lower bound {'>=' if passed else '<'} {threshold:g}"
    summary = f"{label} {_fmt(res['ratio'])} {_ci_text(res)}; {rule}: {_verdict(passed)}"
    return _result("not_worse_than_champion", passed, res, threshold, summary, details)


def label_rate_gate(
    y_train: Any,
    y_test: Any,
    *,
    min_rate: float = 0.001,
    max_rate: float = 0.999,
    max_shift: float = 0.5,
) -> GateResult:
    """Sane label rate: a broken join or a leaky label shows up as an absurd positive rate.

    Rule: the test positive rate lies in [min_rate, max_rate], and its relative shift from
    the train rate, |test - train| / max(train, 1e-9), is <= max_shift. ``value`` is that
    shift; both rates are in ``details``. Empty splits fail.
    """
    yt, ys = _labels(y_train, "y_train"), _labels(y_test, "y_test")
    n_train, n_test = int(yt.shape[0]), int(ys.shape[0])
    details: dict[str, Any] = {
        "n_train": n_train,
        "n_test": n_test,
        "min_rate": min_rate,
        "max_rate": max_rate,
        "max_shift": max_shift,
    }
    if n_train == 0 or n_test == 0:
        summary = f"label rate: empty split (train n={n_train}, test n={n_test}): fail"
        return GateResult(
            "label_rate", False, _NAN, max_shift, _NAN, _NAN, n_test, summary, details
        )
    train_rate, test_rate = float(yt.mean()), float(ys.mean())
    shift = abs(test_rate - train_rate) / max(train_rate, 1e-9)
    details.update(train_rate=train_rate, test_rate=test_rate, relative_shift=shift)
    in_range = min_rate <= test_rate <= max_rate
    shift_ok = shift <= max_shift
    passed = in_range and shift_ok
    summary = (
        f"test positive rate {test_rate:.4f} {'in' if in_range else 'outside'} "
        f"[{min_rate:g}, {max_rate:g}]; train rate {train_rate:.4f}, relative shift "
        f"{shift:.2f} {'<=' if shift_ok else '>'} {max_shift:g}: {_verdict(passed)}"
    )
    return GateResult(
        name="label_rate",
        passed=passed,
        value=shift,
        threshold=max_shift,
        ci_low=_NAN,
        ci_high=_NAN,
        n=n_test,
        summary=summary,
        details=details,
    )
