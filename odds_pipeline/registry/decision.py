"""Which gates a candidate must pass, with which thresholds, and the verdict on its test rows.

The statistics are in `gates`; this module names the gates a candidate faces (one
criterion each), holds their thresholds (defaults from DESIGN §5, overridable in config)
and the sentence that says what failing means, and applies them to the rows the candidate
asset saved. No Dagster, no MLflow: `defs/registry.py` loads the rows and the champion's
scores, then calls `judge`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from odds_pipeline.registry import gates
from odds_pipeline.registry.gates import GateResult


@dataclass(frozen=True)
class GateThresholds:
    """Every threshold the gates use; the defaults are the documented ones."""

    min_test_rows: int = 200
    min_test_positives: int = 20
    calibration_bins: int = 10
    calibration_quantile: float = 0.95
    calibration_simulations: int = 2000
    max_brier_ratio_upper: float = 1.01
    # None: no lower-bound check (a loss within the upper tolerance passes)
    max_brier_ratio_lower: float | None = 1.0
    min_auc_pr_ratio: float = 1.2
    champion_margin: float = 0.01
    min_label_rate: float = 0.001
    max_label_rate: float = 0.999
    max_label_shift: float = 0.5
    n_resamples: int = 10_000
    seed: int = 7

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# One gate per criterion: its name, and what failing it means (shown in the UI).
GATE_DESCRIPTIONS: dict[str, str] = {
    "enough_evidence": "At least {min_test_rows} test rows and {min_test_positives} positives. "
    "Failing means the test window is too small for any other verdict to mean something: add "
    "data or widen the test window.",
    "calibration": "ECE-{calibration_bins} no larger than the {calibration_quantile:.0%} quantile of "
    "the ECE a perfectly calibrated forecast with the same probabilities would show on the same n "
    "(simulated). Failing means the probabilities cannot be taken at face value (stakes would be wrong).",
    "beats_baseline": "Against what a user would otherwise use, on the same test rows, event-level "
    "paired bootstrap ({n_resamples} resamples): LSTM Brier ratio to the de-vigged market at the "
    "decision time with upper 95% bound <= {max_brier_ratio_upper} and lower bound <= "
    "{max_brier_ratio_lower} (a tie is tolerated, measurably worse is not); transformer AUC-PR >= "
    "{min_auc_pr_ratio} x the best classical rule (chosen on validation) with lower bound > 1. "
    "Failing means the model adds nothing over the market or the rules: use those instead.",
    "not_worse_than_champion": "The current champion, re-scored now on the same test rows, is not "
    "better than the candidate by more than a margin of {champion_margin} (paired bootstrap, "
    "non-inferiority). Failing means promoting would make production worse.",
    "dataset_hash": "The dataset the candidate was trained on is the one its dataset asset holds now "
    "and its files still match their content hash. Failing means the numbers describe other data: "
    "retrain.",
    "point_in_time": "No sample holds a step after its decision time (the point-in-time join's "
    "promise, re-checked on the saved arrays). Failing means leakage: the scores are not real.",
    "label_rate": "Test positive rate within [{min_label_rate}, {max_label_rate}] and within "
    "{max_label_shift:.0%} (relative) of the train rate. Failing means a broken label or join.",
}
GATE_NAMES: tuple[str, ...] = tuple(GATE_DESCRIPTIONS)


def describe(name: str, thresholds: GateThresholds) -> str:
    return GATE_DESCRIPTIONS[name].format(**thresholds.to_dict())


@dataclass
class ChampionScores:
    """The current champion's probabilities on the candidate's test rows (or why there are none)."""

    version: str | None
    p: np.ndarray | None
    note: str = ""


def _from_counts(rows: int, positives: int) -> np.ndarray:
    """Labels with the given counts (the label-rate gate reads only their rate)."""
    y = np.zeros(max(int(rows), 0))
    y[: max(int(positives), 0)] = 1.0
    return y


def _named(result: GateResult, name: str, **details: Any) -> GateResult:
    from dataclasses import replace

    return replace(result, name=name, details={**result.details, **details})


def judge(
    rows: pd.DataFrame,
    info: dict[str, Any],
    thresholds: GateThresholds,
    *,
    champion: ChampionScores | None,
    dataset_hash_now: str | None,
    dataset_verified: bool,
    steps_after_decision: int,
) -> dict[str, GateResult]:
    """Every gate's verdict on the saved test rows (columns event_id, y, model, baseline)."""
    t = thresholds
    y = rows["y"].to_numpy(np.float64)
    p = rows["model"].to_numpy(np.float64)
    groups = rows["event_id"].to_numpy(object)
    out: dict[str, GateResult] = {}
    out["enough_evidence"] = gates.evidence_gate(
        len(y), int(y.sum()), min_rows=t.min_test_rows, min_positives=t.min_test_positives
    )
    out["calibration"] = gates.calibration_gate(
        y,
        p,
        bins=t.calibration_bins,
        q=t.calibration_quantile,
        n_sim=t.calibration_simulations,
        seed=t.seed,
    )

    base = rows["baseline"].to_numpy(np.float64)
    known = np.isfinite(base)
    name = str(info.get("baseline_name", "baseline"))
    metric = str(info["metric"])
    if metric == "brier":
        result = gates.baseline_gate_brier(
            y[known],
            p[known],
            base[known],
            groups[known],
            max_upper=t.max_brier_ratio_upper,
            max_lower=t.max_brier_ratio_lower,
            baseline_name=name,
            n_resamples=t.n_resamples,
            seed=t.seed,
        )
    else:
        result = gates.baseline_gate_auc_pr(
            y[known],
            p[known],
            base[known],
            groups[known],
            min_ratio=t.min_auc_pr_ratio,
            baseline_name=name,
            n_resamples=t.n_resamples,
            seed=t.seed,
        )
    out["beats_baseline"] = _named(result, "beats_baseline", baseline=name, metric=metric)

    p_champion = None if champion is None else champion.p
    result = gates.champion_gate(
        y,
        p,
        p_champion,
        groups,
        metric="brier" if metric == "brier" else "auc_pr",
        margin=t.champion_margin,
        n_resamples=t.n_resamples,
        seed=t.seed,
    )
    if champion is not None and champion.p is None and champion.note:
        from dataclasses import replace

        result = replace(result, summary=champion.note)
    out["not_worse_than_champion"] = _named(
        result,
        "not_worse_than_champion",
        champion_version=None if champion is None else champion.version,
    )

    trained_on = str(info.get("dataset_hash", ""))
    same = dataset_hash_now is not None and trained_on == dataset_hash_now
    passed = same and dataset_verified
    why = (
        "files match their content hash"
        if dataset_verified
        else "files do not match their content hash"
    )
    out["dataset_hash"] = GateResult(
        name="dataset_hash",
        passed=passed,
        value=float(same),
        threshold=1.0,
        ci_low=float("nan"),
        ci_high=float("nan"),
        n=len(y),
        summary=(
            f"trained on {trained_on[:12]}, dataset asset holds "
            f"{(dataset_hash_now or 'nothing')[:12]}; {why}: {'pass' if passed else 'FAIL'}"
        ),
        details={"trained_on": trained_on, "dataset_now": dataset_hash_now},
    )
    leak_ok = steps_after_decision == 0
    out["point_in_time"] = GateResult(
        name="point_in_time",
        passed=leak_ok,
        value=float(steps_after_decision),
        threshold=0.0,
        ci_low=float("nan"),
        ci_high=float("nan"),
        n=len(y),
        summary=(
            f"{steps_after_decision} sample(s) with a step after the decision time: "
            f"{'pass' if leak_ok else 'FAIL'}"
        ),
    )
    out["label_rate"] = gates.label_rate_gate(
        _from_counts(info.get("train_rows", 0), info.get("train_positives", 0)),
        y,
        min_rate=t.min_label_rate,
        max_rate=t.max_label_rate,
        max_shift=t.max_label_shift,
    )
    return out


def steps_after_decision(times_us: np.ndarray, mask: np.ndarray, decision: pd.Series) -> int:
    """Samples whose latest real step is later than their decision time (should be none)."""
    if len(times_us) == 0:
        return 0
    last = np.where(mask, times_us, np.iinfo(np.int64).min).max(axis=1)
    decided = pd.to_datetime(decision, utc=True).to_numpy("datetime64[us]").astype(np.int64)
    return int(np.sum(last > decided))


def headline(results: dict[str, GateResult]) -> dict[str, float | None]:
    """The numbers to plot over time: the baseline comparison and its interval, rounded."""
    base = results["beats_baseline"]
    details = base.details
    model, baseline = details.get("model_value"), details.get("baseline_value")

    def r(v: Any, d: int = 4) -> float | None:
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return round(v, d) if np.isfinite(v) else None

    return {
        "metric_model": r(model),
        "metric_baseline": r(baseline),
        "metric_difference": r(None if model is None or baseline is None else model - baseline),
        "ratio": r(base.value),
        "ratio_ci_low": r(base.ci_low),
        "ratio_ci_high": r(base.ci_high),
    }
