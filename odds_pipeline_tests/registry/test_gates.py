"""Tests for the champion quality gates: the statistics must agree with sklearn and with a
plain per-resample loop, and each gate must pass what is good and fail what is not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from odds_pipeline.registry.gates import (
    GateResult,
    _weighted_average_precision,
    baseline_gate_auc_pr,
    baseline_gate_brier,
    brier_ratio_rule,
    calibration_gate,
    champion_gate,
    ece,
    ece_null_quantile,
    event_bootstrap_weights,
    evidence_gate,
    label_rate_gate,
    paired_bootstrap_ratio,
    reliability_table,
)


def _simulated(
    seed: int, n_events: int = 760, rows_per_event: int = 2, noise: float = 0.2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """y ~ Bernoulli(truth) per event (rows of one event share the outcome), a noisy copy."""
    rng = np.random.default_rng(seed)
    p_event = rng.uniform(0.05, 0.95, n_events)
    y_event = (rng.random(n_events) < p_event).astype(int)
    truth = np.repeat(p_event, rows_per_event)
    y = np.repeat(y_event, rows_per_event)
    groups = np.repeat(np.arange(n_events), rows_per_event)
    noisy = np.clip(truth + rng.normal(0.0, noise, truth.size), 0.01, 0.99)
    return y, truth, noisy, groups


def _rare(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rare positives (~7 %), a true-probability model and a weaker rule score."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    truth = 1.0 / (1.0 + np.exp(-(2.0 * z - 4.0)))
    y = (rng.random(n) < truth).astype(int)
    rule = z + rng.normal(0.0, 1.5, n)
    return y, truth, rule, np.arange(n) // 2


# --------------------------------------------------------------------------- AUC-PR


def test_average_precision_matches_sklearn_with_ties_unit_weights() -> None:
    rng = np.random.default_rng(0)
    for trial in range(5):
        n = 500 + 100 * trial
        y = (rng.random(n) < 0.2).astype(int)
        score = np.round(rng.random(n), 1 if trial % 2 == 0 else 2)  # heavy ties
        assert len(np.unique(score)) < n
        ours = _weighted_average_precision(y, score, np.ones(n))[0]
        assert ours == pytest.approx(average_precision_score(y, score), abs=1e-12)

    # The full-data point estimate of the bootstrap is the same number.
    groups = np.arange(n) // 3
    res = paired_bootstrap_ratio(y, score, score, groups, metric="auc_pr", n_resamples=10)
    assert res["model"] == pytest.approx(average_precision_score(y, score), abs=1e-12)


def test_average_precision_matches_sklearn_with_bootstrap_weights() -> None:
    rng = np.random.default_rng(1)
    n = 400
    y = (rng.random(n) < 0.3).astype(int)
    score = np.round(rng.random(n), 1)
    groups = np.arange(n) // 4
    weights, _ = event_bootstrap_weights(groups, 20, seed=3)
    ours = _weighted_average_precision(y, score, weights)
    for b in range(20):
        expected = average_precision_score(y, score, sample_weight=weights[b])
        assert ours[b] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("metric", ["brier", "log_loss", "auc_pr"])
def test_vectorised_ci_equals_a_plain_loop_over_resamples(metric: str) -> None:
    """Same resamples as event_bootstrap_weights, metric recomputed row-weighted one by one."""
    y, truth, noisy, groups = _simulated(2, n_events=150, rows_per_event=3)
    n_resamples, level = 200, 0.9
    res = paired_bootstrap_ratio(
        y, truth, noisy, groups, metric=metric, n_resamples=n_resamples, seed=11, level=level
    )
    weights, _ = event_bootstrap_weights(groups, n_resamples, seed=11)

    def score(p: np.ndarray, w: np.ndarray) -> float:
        if metric == "auc_pr":
            return float(average_precision_score(y, p, sample_weight=w))
        if metric == "brier":
            return float(np.average((p - y) ** 2, weights=w))
        q = np.clip(p, 1e-15, 1 - 1e-15)
        return float(np.average(-(y * np.log(q) + (1 - y) * np.log(1 - q)), weights=w))

    ratios = [score(truth, w) / score(noisy, w) for w in weights]
    lo, hi = np.quantile(ratios, [0.05, 0.95])
    assert res["ci_low"] == pytest.approx(lo, rel=1e-10)
    assert res["ci_high"] == pytest.approx(hi, rel=1e-10)
    assert res["ratio"] == pytest.approx(
        score(truth, np.ones(len(y))) / score(noisy, np.ones(len(y)))
    )
    assert res["n"] == len(y) and res["n_groups"] == 150 and res["dropped"] == 0


# --------------------------------------------------------------------------- bootstrap


def test_event_weights_keep_rows_of_one_event_together() -> None:
    rng = np.random.default_rng(4)
    groups = rng.choice(np.array([f"ev{i}" for i in range(60)]), size=300)
    weights, inverse = event_bootstrap_weights(groups, 500, seed=5)
    assert weights.shape == (500, 300)
    assert np.all(weights >= 0)
    n_groups = len(np.unique(groups))
    for g in range(n_groups):
        rows = np.flatnonzero(inverse == g)
        assert np.all(weights[:, rows] == weights[:, rows[:1]])
    # Each resample draws exactly as many events as there are.
    first_row = np.array([np.flatnonzero(inverse == g)[0] for g in range(n_groups)])
    assert np.all(weights[:, first_row].sum(axis=1) == n_groups)
    # Deterministic by seed, different across seeds.
    again, _ = event_bootstrap_weights(groups, 500, seed=5)
    other, _ = event_bootstrap_weights(groups, 500, seed=6)
    assert np.array_equal(weights, again)
    assert not np.array_equal(weights, other)


def test_cluster_bootstrap_is_wider_than_row_bootstrap_for_duplicated_rows() -> None:
    """Five copies of each event carry the evidence of one: the CI must widen accordingly."""
    y, truth, noisy, _ = _simulated(5, n_events=300, rows_per_event=1)
    dup = 5
    y5, t5, n5 = (np.repeat(a, dup) for a in (y, truth, noisy))
    events = np.repeat(np.arange(300), dup)
    rows = np.arange(300 * dup)
    kw = {"metric": "brier", "n_resamples": 2000, "seed": 1}
    clustered = paired_bootstrap_ratio(y5, t5, n5, events, **kw)
    independent = paired_bootstrap_ratio(y5, t5, n5, rows, **kw)
    assert clustered["ratio"] == pytest.approx(independent["ratio"])
    width_c = clustered["ci_high"] - clustered["ci_low"]
    width_i = independent["ci_high"] - independent["ci_low"]
    assert width_c > 1.5 * width_i  # ~sqrt(5) in theory


def test_resamples_without_positives_are_dropped_and_counted() -> None:
    rng = np.random.default_rng(8)
    n_events = 40
    groups = np.repeat(np.arange(n_events), 2)
    y = np.zeros(2 * n_events, dtype=int)
    y[:2] = 1  # one positive event: ~36 % of resamples miss it
    p_model, p_base = rng.random(2 * n_events), rng.random(2 * n_events)
    res = paired_bootstrap_ratio(y, p_model, p_base, groups, metric="auc_pr", n_resamples=500)
    assert 100 < res["dropped"] < 300
    assert math.isfinite(res["ci_low"]) and math.isfinite(res["ci_high"])


def test_ten_thousand_resamples_on_two_thousand_rows_run() -> None:
    y, truth, rule, groups = _rare(9)
    for metric in ("brier", "auc_pr"):
        res = paired_bootstrap_ratio(
            y, truth, np.clip(rule / 10 + 0.5, 0, 1), groups, metric=metric
        )
        assert res["n_resamples"] == 10_000 and res["n"] == 2000 and res["n_groups"] == 1000
        assert res["ci_low"] <= res["ratio"] <= res["ci_high"]
        assert res["dropped"] == 0


# --------------------------------------------------------------------------- Brier gate


def test_model_identical_to_baseline_has_ratio_one() -> None:
    y, truth, _, groups = _simulated(1)
    res = paired_bootstrap_ratio(y, truth, truth, groups, metric="brier", n_resamples=500)
    assert res["ratio"] == 1.0
    assert res["ci_low"] <= 1.0 <= res["ci_high"]
    gate = baseline_gate_brier(y, truth, truth, groups, n_resamples=500)
    assert gate.passed and gate.value == 1.0


def test_brier_gate_passes_better_model_and_fails_worse_one() -> None:
    y, truth, noisy, groups = _simulated(1)
    better = baseline_gate_brier(y, truth, noisy, groups, n_resamples=2000)
    worse = baseline_gate_brier(y, noisy, truth, groups, n_resamples=2000)
    assert better.passed and better.ci_high < 1.0
    assert not worse.passed and worse.ci_low > 1.01
    assert better.name == "beats_baseline" and better.threshold == 1.01
    assert "Brier ratio model/market" in better.summary and better.summary.endswith(": pass")
    assert "760 events" in better.summary and "n=1520" in better.summary
    assert worse.summary.endswith(": fail")
    assert better.details["model_value"] < better.details["baseline_value"]


def test_brier_gate_refuses_a_model_measurably_worse_within_the_tolerance() -> None:
    """The 1% tolerance is for ties: an interval wholly above 1 is a loss (EPL walk-forward)."""
    rng = np.random.default_rng(3)
    n_events = 20_000
    truth = rng.uniform(0.2, 0.8, n_events)
    y = (rng.random(n_events) < truth).astype(int)
    logit = np.log(truth / (1 - truth)) + 0.15
    worse = 1 / (1 + np.exp(-logit))
    groups = np.arange(n_events)
    gate = baseline_gate_brier(y, worse, truth, groups, n_resamples=1000)
    assert gate.ci_low > 1.0 and gate.ci_high <= 1.01  # worse, but inside the tolerance
    assert not gate.passed
    assert "measurably worse than the market" in gate.summary and gate.summary.endswith(": fail")
    tie = baseline_gate_brier(y, truth, truth, groups, n_resamples=1000)
    assert tie.passed


def test_brier_ratio_rule_edges() -> None:
    """Undefined intervals fail with that reason; a float32 tie is a tie; None lifts the check."""
    assert brier_ratio_rule(math.nan, math.nan, 1.01) == (False, "interval undefined")
    assert brier_ratio_rule(1.0 + 1e-9, 1.0 + 2e-9, 1.01)[0]  # the model IS the market
    held, why = brier_ratio_rule(1.003, 1.009, 1.01)
    assert not held and why == "lower bound 1.0030 > 1, measurably worse than the market"
    assert brier_ratio_rule(1.003, 1.009, 1.01, max_lower=None) == (True, "upper bound <= 1.01")
    assert brier_ratio_rule(0.99, 1.02, 1.01) == (False, "upper bound > 1.01")


def test_brier_gates_judge_the_upper_bound_not_the_point() -> None:
    """A threshold between the point ratio and the upper bound must fail: luck is no proof."""
    y, truth, noisy, groups = _simulated(4, n_events=80, noise=0.05)
    kw = {"n_resamples": 1000, "seed": 7}
    res = paired_bootstrap_ratio(y, noisy, truth, groups, metric="brier", **kw)
    assert 1.0 < res["ratio"] < res["ci_high"]
    between = (res["ratio"] + res["ci_high"]) / 2
    assert not baseline_gate_brier(y, noisy, truth, groups, max_upper=between, **kw).passed
    assert baseline_gate_brier(y, noisy, truth, groups, max_upper=res["ci_high"], **kw).passed
    margin = between - 1.0
    assert not champion_gate(y, noisy, truth, groups, metric="brier", margin=margin, **kw).passed


def test_brier_gate_with_a_perfect_baseline_fails_with_a_reason() -> None:
    y = np.array([0, 1, 0, 1])
    gate = baseline_gate_brier(y, np.full(4, 0.5), y.astype(float), np.arange(4), n_resamples=50)
    assert not gate.passed
    assert "Brier is 0" in gate.summary


# --------------------------------------------------------------------------- AUC-PR gate


def test_auc_pr_gate_passes_clearly_better_model_and_fails_the_reverse() -> None:
    y, truth, rule, groups = _rare(3)
    good = baseline_gate_auc_pr(y, truth, rule, groups, n_resamples=2000)
    bad = baseline_gate_auc_pr(y, rule, truth, groups, n_resamples=2000)
    assert good.passed and good.value >= 1.2 and good.ci_low > 1.0
    assert "CI low" in good.summary and "best rule" in good.summary
    assert not bad.passed and bad.value < 1.0


def test_auc_pr_gate_requires_the_lower_bound_above_one() -> None:
    """A high point ratio on a handful of positives is not enough."""
    rng = np.random.default_rng(12)
    n = 200
    y = np.zeros(n, dtype=int)
    y[rng.choice(n, 4, replace=False)] = 1
    p_model = np.where(y == 1, rng.uniform(0.3, 0.9, n), rng.uniform(0.0, 0.6, n))
    p_base = rng.random(n)
    gate = baseline_gate_auc_pr(y, p_model, p_base, np.arange(n), min_ratio=1.0, n_resamples=1000)
    res = paired_bootstrap_ratio(
        y, p_model, p_base, np.arange(n), metric="auc_pr", n_resamples=1000
    )
    assert gate.passed == (res["ratio"] >= 1.0 and res["ci_low"] > 1.0)
    # Not-enough-evidence case: model equal to baseline -> lower bound exactly 1 -> fail.
    same = baseline_gate_auc_pr(y, p_base, p_base, np.arange(n), min_ratio=1.0, n_resamples=200)
    assert not same.passed and "CI low 1.000 <= 1" in same.summary


def test_auc_pr_gate_without_positives_fails_and_says_why() -> None:
    n = 100
    gate = baseline_gate_auc_pr(
        np.zeros(n), np.random.default_rng(0).random(n), np.full(n, 0.5), np.arange(n)
    )
    assert not gate.passed
    assert "no positives" in gate.summary
    assert math.isnan(gate.value)
    json.dumps(gate.to_dict(), allow_nan=False)


# --------------------------------------------------------------------------- calibration


def test_ece_and_reliability_table_by_hand() -> None:
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.95, 1.0, 0.5])
    # bins (10): [0.0,0.1): p .05 y 0 ; [0.1,0.2): p .15 y 1 ; [0.5,0.6): .5 y 1 ;
    # [0.9,1.0]: p .95,1.0 y 1,0 -> mean p .975, frac .5
    expected = (0.05 + 0.85 + 0.5 + 2 * 0.475) / 5
    assert ece(y, p) == pytest.approx(expected)
    table = reliability_table(y, p)
    assert len(table) == 10 and sum(r["n"] for r in table) == 5
    last = table[-1]
    assert (last["lo"], last["hi"], last["n"]) == (0.9, 1.0, 2)
    assert last["mean_p"] == pytest.approx(0.975) and last["frac_pos"] == 0.5
    assert math.isnan(table[3]["mean_p"])


def test_ece_null_quantile_matches_the_expected_scale() -> None:
    p = np.random.default_rng(0).uniform(0.2, 0.8, 1520)
    median = ece_null_quantile(p, q=0.5)
    q95 = ece_null_quantile(p, q=0.95)
    assert 0.018 <= median <= 0.032  # the issue says ~0.025 for n=1520
    assert median < q95 < 0.05
    assert ece_null_quantile(p, q=0.5) == median  # deterministic by seed


def test_calibration_gate_passes_calibrated_forecasts() -> None:
    passes = 0
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        p = rng.uniform(0.05, 0.95, 1520)
        y = (rng.random(1520) < p).astype(int)
        passes += calibration_gate(y, p, seed=seed).passed
    assert passes >= 4


def test_calibration_gate_fails_shifted_forecast() -> None:
    rng = np.random.default_rng(7)
    p = rng.uniform(0.05, 0.8, 1520)
    y = (rng.random(1520) < p).astype(int)
    gate = calibration_gate(y, np.clip(p + 0.15, 0.0, 1.0))
    assert not gate.passed
    assert gate.value > gate.threshold
    assert gate.summary.endswith(": fail") and "ECE-10" in gate.summary
    assert len(gate.details["reliability"]) == 10
    assert 0 < gate.details["null_median"] < gate.threshold
    json.dumps(gate.to_dict(), allow_nan=False)


def test_calibration_gate_on_no_rows_fails() -> None:
    gate = calibration_gate(np.array([]), np.array([]))
    assert not gate.passed and "no rows" in gate.summary


# --------------------------------------------------------------------------- other gates


def test_evidence_gate_thresholds() -> None:
    ok = evidence_gate(1000, 50, min_rows=1000, min_positives=50)
    assert ok.passed and ok.name == "enough_evidence"
    few_rows = evidence_gate(999, 50, min_rows=1000, min_positives=50)
    few_pos = evidence_gate(5000, 49, min_rows=1000, min_positives=50)
    assert not few_rows.passed and "999 test rows (< 1000)" in few_rows.summary
    assert not few_pos.passed and "49 positives (< 50)" in few_pos.summary
    with pytest.raises(ValueError, match="exceeds"):
        evidence_gate(10, 11, min_rows=1, min_positives=1)


def test_champion_gate_without_champion_passes() -> None:
    y, truth, _, groups = _simulated(1, n_events=20)
    gate = champion_gate(y, truth, None, groups, metric="brier", margin=0.01)
    assert gate.passed
    assert gate.summary == "no champion yet: nothing to be worse than"
    assert math.isnan(gate.value)
    d = gate.to_dict()
    assert d["value"] is None and d["ci_low"] is None
    json.dumps(d, allow_nan=False)


def test_champion_gate_non_inferiority() -> None:
    y, truth, noisy, groups = _simulated(1)
    kw = {"n_resamples": 1000}
    assert champion_gate(y, truth, truth, groups, metric="brier", margin=0.01, **kw).passed
    assert champion_gate(y, truth, noisy, groups, metric="brier", margin=0.0, **kw).passed
    worse = champion_gate(y, noisy, truth, groups, metric="brier", margin=0.05, **kw)
    assert not worse.passed and worse.threshold == pytest.approx(1.05)
    assert "upper bound > 1.05" in worse.summary

    ry, rtruth, rule, rgroups = _rare(3)
    same = champion_gate(ry, rtruth, rtruth, rgroups, metric="auc_pr", margin=0.02, **kw)
    assert same.passed and same.threshold == pytest.approx(0.98)
    weak = champion_gate(ry, rule, rtruth, rgroups, metric="auc_pr", margin=0.02, **kw)
    assert not weak.passed and "lower bound < 0.98" in weak.summary
    none_pos = champion_gate(
        np.zeros(50), rtruth[:50], rtruth[:50], rgroups[:50], metric="auc_pr", margin=0.1
    )
    assert not none_pos.passed and "no positives" in none_pos.summary


def test_label_rate_gate() -> None:
    rng = np.random.default_rng(2)
    train = (rng.random(5000) < 0.05).astype(int)
    test = (rng.random(1500) < 0.05).astype(int)
    ok = label_rate_gate(train, test)
    assert ok.passed and ok.name == "label_rate"
    assert ok.details["train_rate"] == pytest.approx(train.mean())
    assert ok.details["test_rate"] == pytest.approx(test.mean())

    shifted = label_rate_gate(train, (rng.random(1500) < 0.15).astype(int))
    assert not shifted.passed and "relative shift" in shifted.summary and shifted.value > 0.5
    no_pos = label_rate_gate(train, np.zeros(1500, dtype=int))
    assert not no_pos.passed and "outside" in no_pos.summary
    all_pos = label_rate_gate(np.ones(100), np.ones(100))
    assert not all_pos.passed  # rate 1.0 > max_rate even though there is no shift
    empty = label_rate_gate(train, np.array([], dtype=int))
    assert not empty.passed and "empty split" in empty.summary
    json.dumps(empty.to_dict(), allow_nan=False)


# --------------------------------------------------------------------------- contracts


def test_every_gate_serialises_without_nan() -> None:
    y, truth, noisy, groups = _simulated(1, n_events=100)
    gates: list[GateResult] = [
        evidence_gate(len(y), int(y.sum()), min_rows=10, min_positives=10),
        calibration_gate(y, truth, n_sim=200),
        baseline_gate_brier(y, truth, noisy, groups, n_resamples=200),
        baseline_gate_auc_pr(y, truth, noisy, groups, n_resamples=200),
        champion_gate(y, truth, noisy, groups, metric="auc_pr", margin=0.05, n_resamples=200),
        champion_gate(y, truth, None, groups, metric="brier", margin=0.0),
        label_rate_gate(y, y),
    ]
    for gate in gates:
        d = json.loads(json.dumps(gate.to_dict(), allow_nan=False))
        assert set(d) >= {"name", "passed", "value", "threshold", "ci_low", "ci_high", "n"}
        assert isinstance(d["summary"], str) and d["summary"]
        assert isinstance(d["passed"], bool)


def test_mismatched_lengths_name_the_arrays() -> None:
    y = np.array([0, 1, 0])
    with pytest.raises(ValueError, match=r"p_model has 2.*y has 3|y has 3.*p_model has 2"):
        paired_bootstrap_ratio(
            y, np.array([0.1, 0.2]), np.full(3, 0.5), np.arange(3), metric="brier"
        )
    with pytest.raises(ValueError, match="groups has 4"):
        baseline_gate_brier(y, np.full(3, 0.5), np.full(3, 0.5), np.arange(4))
    with pytest.raises(ValueError, match="p has 2"):
        calibration_gate(y, np.array([0.1, 0.2]))


def test_invalid_values_are_rejected() -> None:
    with pytest.raises(ValueError, match="p_model"):
        paired_bootstrap_ratio(
            np.array([0, 1]), np.array([0.1, 1.2]), np.array([0.1, 0.2]), [1, 2], metric="brier"
        )
    with pytest.raises(ValueError, match="0/1"):
        ece(np.array([0, 2]), np.array([0.1, 0.2]))
    # AUC-PR accepts any finite ranking score (a rule's raw score need not be a probability).
    res = paired_bootstrap_ratio(
        np.array([0, 1, 1, 0]),
        np.array([-3.0, 5.0, 2.0, 1.0]),
        np.array([10.0, 20.0, 30.0, 40.0]),
        ["a", "b", "c", "d"],
        metric="auc_pr",
        n_resamples=50,
    )
    assert res["model"] == pytest.approx(1.0)
