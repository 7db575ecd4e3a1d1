"""Outcome monitoring: the champion's Brier and log loss on resolved events, against the market.

Drift says the inputs moved; this says whether the forecasts got worse, on the events whose
outcome is now known. The champion is compared with the de-vigged market on the same rows
(event-level paired bootstrap, as at gate time), per window and over everything since it
became champion, and against its own gate-time ratio. Degradation is a finding with its
numbers: the gate's own rule (``registry.gates.brier_ratio_rule``) no longer holds.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pandas as pd

from odds_pipeline.registry.gates import brier_ratio_rule, paired_bootstrap_ratio
from odds_pipeline.warehouse import transaction

PERFORMANCE_TABLE = "performance_metrics"
PERFORMANCE_SQL = f"""
CREATE TABLE IF NOT EXISTS {PERFORMANCE_TABLE} (
    report_id VARCHAR NOT NULL,
    computed_at TIMESTAMPTZ NOT NULL,
    model VARCHAR NOT NULL,
    version VARCHAR NOT NULL,
    window_start TIMESTAMPTZ,
    window_end TIMESTAMPTZ,
    n BIGINT,
    events BIGINT,
    brier_model DOUBLE,
    brier_market DOUBLE,
    log_loss_model DOUBLE,
    log_loss_market DOUBLE,
    brier_ratio DOUBLE,
    ratio_ci_low DOUBLE,
    ratio_ci_high DOUBLE,
    gate_ratio DOUBLE,
    degraded BOOLEAN,
    finding VARCHAR
)
"""

RESOLVED_SQL = """
SELECT p.event_id, p.side, p.commence_time, p.model_probability, p.market_probability,
    CASE p.side WHEN 'home' THEN r.home_score > r.away_score
                WHEN 'away' THEN r.away_score > r.home_score
                ELSE r.home_score = r.away_score END AS won
FROM predictions p JOIN results r ON r.event_id = p.event_id
WHERE p.source = 'champion' AND p.model_name = ? AND p.model_version = ?
  AND r.home_score IS NOT NULL AND r.away_score IS NOT NULL
  AND isfinite(p.market_probability)
ORDER BY p.commence_time, p.event_id, p.side
"""


def resolved_predictions(con: duckdb.DuckDBPyConnection, model: str, version: str) -> pd.DataFrame:
    """The champion's predictions whose event has a result (empty if none or no table)."""
    try:
        return con.execute(RESOLVED_SQL, [model, version]).df()
    except duckdb.CatalogException:
        return pd.DataFrame(
            columns=["event_id", "side", "commence_time", "model_probability",
                     "market_probability", "won"]
        )  # fmt: skip


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def window_figures(
    rows: pd.DataFrame,
    *,
    min_rows: int,
    max_ratio_upper: float,
    max_ratio_lower: float | None = 1.0,
    gate_ratio: float | None,
    n_resamples: int = 2000,
    seed: int = 7,
) -> dict[str, Any]:
    """Brier and log loss of model and market on these rows, the ratio with its interval."""
    y = rows["won"].to_numpy(np.float64)
    p = rows["model_probability"].to_numpy(np.float64)
    q = rows["market_probability"].to_numpy(np.float64)
    out: dict[str, Any] = {
        "n": len(rows),
        "events": int(rows["event_id"].nunique()),
        "gate_ratio": gate_ratio,
    }
    if len(rows) < min_rows:
        out.update(degraded=False, finding=f"not enough resolved rows ({len(rows)} < {min_rows})")
        return out
    res = paired_bootstrap_ratio(
        y, p, q, rows["event_id"].to_numpy(object), metric="brier",
        n_resamples=n_resamples, seed=seed,
    )  # fmt: skip
    out.update(
        brier_model=res["model"],
        brier_market=res["base"],
        log_loss_model=_log_loss(y, p),
        log_loss_market=_log_loss(y, q),
        brier_ratio=res["ratio"],
        ratio_ci_low=res["ci_low"],
        ratio_ci_high=res["ci_high"],
    )
    holds, rule = brier_ratio_rule(
        res["ci_low"], res["ci_high"], max_ratio_upper, max_lower=max_ratio_lower
    )
    degraded = bool(np.isfinite(res["ci_high"]) and not holds)
    versus = "" if gate_ratio is None else f" (at gate time {gate_ratio:.3f})"
    out["degraded"] = degraded
    out["finding"] = (
        f"Brier ratio model/market {res['ratio']:.3f} (95% CI {res['ci_low']:.3f}-"
        f"{res['ci_high']:.3f}, n={len(rows)}){versus}: "
        + (f"DEGRADED: {rule}" if degraded else "holding")
    )
    return out


def report(
    rows: pd.DataFrame,
    *,
    window_days: float,
    min_rows: int,
    max_ratio_upper: float,
    max_ratio_lower: float | None = 1.0,
    gate_ratio: float | None,
    n_resamples: int = 2000,
) -> pd.DataFrame:
    """Figures per window of ``window_days`` (by commence time) and over everything ('all')."""
    if rows.empty:
        return pd.DataFrame()
    times = pd.to_datetime(rows["commence_time"], utc=True)
    start = times.min().floor("D")
    width = pd.Timedelta(days=window_days)
    bucket = ((times - start) // width).astype(int)
    out = []
    for b in sorted(bucket.unique()):
        sel = rows[bucket.to_numpy() == b]
        lo = start + b * width
        figs = window_figures(
            sel, min_rows=min_rows, max_ratio_upper=max_ratio_upper,
            max_ratio_lower=max_ratio_lower, gate_ratio=gate_ratio,
            n_resamples=n_resamples,
        )  # fmt: skip
        out.append({"window_start": lo, "window_end": lo + width, **figs})
    figs = window_figures(
        rows, min_rows=min_rows, max_ratio_upper=max_ratio_upper,
            max_ratio_lower=max_ratio_lower, gate_ratio=gate_ratio,
        n_resamples=n_resamples,
    )  # fmt: skip
    out.append({"window_start": start, "window_end": times.max(), "overall": True, **figs})
    frame = pd.DataFrame(out)
    frame["overall"] = [
        v is True for v in frame.get("overall", pd.Series(False, index=frame.index))
    ]
    return frame


def write(con: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> None:
    con.execute(PERFORMANCE_SQL)
    cols = [
        "report_id", "computed_at", "model", "version", "window_start", "window_end", "n",
        "events", "brier_model", "brier_market", "log_loss_model", "log_loss_market",
        "brier_ratio", "ratio_ci_low", "ratio_ci_high", "gate_ratio", "degraded", "finding",
    ]  # fmt: skip
    for c in cols:
        if c not in frame:
            frame[c] = None
    incoming = frame[cols]  # noqa: F841
    with transaction(con):
        con.execute(f"INSERT INTO {PERFORMANCE_TABLE} ({', '.join(cols)}) SELECT * FROM incoming")
