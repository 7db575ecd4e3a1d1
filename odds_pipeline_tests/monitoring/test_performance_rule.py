"""Outcome monitoring judges the champion by the promotion gate's own Brier rule."""

from __future__ import annotations

import numpy as np
import pandas as pd

from odds_pipeline.monitoring.performance import window_figures


def _rows(shift: float, n_events: int = 20_000, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    market = rng.uniform(0.2, 0.8, n_events)
    won = (rng.random(n_events) < market).astype(int)
    model = 1 / (1 + np.exp(-(np.log(market / (1 - market)) + shift)))
    return pd.DataFrame(
        {
            "event_id": np.arange(n_events).astype(str),
            "won": won,
            "model_probability": model,
            "market_probability": market,
        }
    )


def test_a_champion_measurably_worse_within_the_tolerance_is_degraded():
    out = window_figures(_rows(0.15), min_rows=100, max_ratio_upper=1.01, gate_ratio=None)
    assert out["ratio_ci_low"] > 1.0 and out["ratio_ci_high"] <= 1.01
    assert out["degraded"]
    assert "DEGRADED: lower bound" in out["finding"] and "measurably worse" in out["finding"]


def test_a_champion_that_ties_the_market_holds():
    out = window_figures(_rows(0.0), min_rows=100, max_ratio_upper=1.01, gate_ratio=1.0)
    assert out["brier_ratio"] == 1.0 and not out["degraded"]
    assert out["finding"].endswith("holding")


def test_a_noisy_tie_holds_and_a_loss_can_be_tolerated_on_purpose():
    rows = _rows(0.0, n_events=2_000)
    rng = np.random.default_rng(5)
    noisy = rows["market_probability"] + rng.normal(0.0, 0.01, len(rows))
    rows["model_probability"] = noisy.clip(0.01, 0.99)
    out = window_figures(rows, min_rows=100, max_ratio_upper=1.01, gate_ratio=None)
    assert out["ratio_ci_low"] < 1.0 < out["ratio_ci_high"] <= 1.01 and not out["degraded"]
    loss = _rows(0.15)
    kw = {"min_rows": 100, "max_ratio_upper": 1.01, "gate_ratio": None}
    assert not window_figures(loss, max_ratio_lower=None, **kw)["degraded"]
