"""Baselines an arbitrage scorer must beat: the classical rules and gradient-boosted trees.

- Rules: a raw per-sample value (Σ implied − 1 now, its window minimum, its slope; and two
  a rule-maker reads off the window: minutes since the last arbitrage instant, how many
  there were), each scored in either orientation. The orientation of each rule AND which
  rule is best are chosen on the validation window only (AUC-PR), never on test:
  ``choose_rule`` then ``RuleChoice.score`` on any rows.
- Trees: scikit-learn's ``HistGradientBoostingClassifier`` on window summaries + the
  explicit inputs (``training.arbitrage_inputs``); the number of boosting iterations is
  chosen on the validation window's AUC-PR (staged predictions: early stopping on
  validation, not on a slice of train).

Scores returned here are ranking scores in [0, 1] (AUC-PR only needs the order). Numpy and
scikit-learn; no Dagster, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from odds_pipeline.training.arbitrage_inputs import EXPLICIT_NAMES
from odds_pipeline.training.evaluation import average_precision

__all__ = [
    "CLASSICAL_RULES",
    "EXTENDED_RULES",
    "RuleChoice",
    "TreesModel",
    "auc_pr",
    "choose_rule",
    "fit_trees",
    "rank01",
    "rule_values",
]

# rule name -> the explicit input it reads (training.arbitrage_inputs.EXPLICIT_NAMES)
CLASSICAL_RULES: dict[str, str] = {
    "sum_now": "sum_minus_1_now",
    "sum_min": "sum_minus_1_min",
    "slope": "sum_slope_per_h",
}
EXTENDED_RULES: dict[str, str] = {
    **CLASSICAL_RULES,
    "minutes_since_arb": "minutes_since_arb",
    "arb_count": "arb_count",
}


def rank01(score: Any) -> np.ndarray:
    """A monotone map of a score into [0, 1] (ties kept, NaN lowest)."""
    s = np.asarray(score, dtype=np.float64)
    s = np.where(np.isfinite(s), s, -np.inf)
    if s.size == 0:
        return np.zeros(0)
    _, inv = np.unique(s, return_inverse=True)
    top = inv.max()
    return inv / top if top > 0 else np.zeros_like(s)


def auc_pr(y: Any, score: Any) -> float:
    """Average precision of any real-valued score (ranked into [0, 1] first)."""
    return average_precision(np.asarray(y, dtype=np.float64), rank01(score))


def rule_values(
    explicit: np.ndarray, rules: Mapping[str, str] = CLASSICAL_RULES
) -> dict[str, np.ndarray]:
    """Each rule's raw value per row from the explicit inputs ``[N, len(EXPLICIT_NAMES)]``."""
    x = np.asarray(explicit, dtype=np.float64)
    return {name: x[:, EXPLICIT_NAMES.index(col)] for name, col in rules.items()}


@dataclass(frozen=True)
class RuleChoice:
    """The rule picked on validation: its name, orientation (+1/-1) and the validation table."""

    name: str
    sign: float
    val_auc_pr: float
    table: dict[str, dict[str, float]] = field(default_factory=dict)
    rules: Mapping[str, str] = field(default_factory=lambda: dict(CLASSICAL_RULES))

    @property
    def label(self) -> str:
        direction = "higher" if self.sign > 0 else "lower"
        return f"{self.name} ({direction} raw value = more likely)"

    def score(self, explicit: np.ndarray) -> np.ndarray:
        """Ranking scores in [0, 1] on any rows (higher = arbitrage ahead more likely)."""
        raw = rule_values(explicit, {self.name: self.rules[self.name]})[self.name]
        return rank01(self.sign * raw)


def choose_rule(
    explicit_val: np.ndarray, y_val: Any, rules: Mapping[str, str] = CLASSICAL_RULES
) -> RuleChoice:
    """Orientation per rule and the best rule, both by AUC-PR on the validation rows.

    ``table[rule] = {"+1": AP, "-1": AP}``; the winner is the (rule, sign) with the highest
    AP (ties: the first rule in ``rules``, then +1). Test rows never enter.
    """
    y = np.asarray(y_val, dtype=np.float64)
    if y.sum() == 0 or y.sum() == y.size:
        raise ValueError("validation needs both classes to choose a rule")
    values = rule_values(explicit_val, rules)
    table: dict[str, dict[str, float]] = {}
    best: tuple[float, str, float] | None = None
    for name, raw in values.items():
        table[name] = {}
        for sign in (1.0, -1.0):
            ap = auc_pr(y, sign * raw)
            table[name][f"{sign:+.0f}"] = ap
            if best is None or ap > best[0]:
                best = (ap, name, sign)
    assert best is not None
    return RuleChoice(name=best[1], sign=best[2], val_auc_pr=best[0], table=table, rules=rules)


@dataclass
class TreesModel:
    """A fitted HistGradientBoostingClassifier cut at the validation-best iteration."""

    model: Any
    n_iter: int
    val_auc_pr: float
    val_curve: list[float]
    feature_names: list[str]

    def score(self, X: np.ndarray, threads: int | None = 1) -> np.ndarray:
        """P(arb ahead) from the first ``n_iter`` trees."""
        from threadpoolctl import threadpool_limits

        X = np.asarray(X, dtype=np.float32)
        with threadpool_limits(limits=threads):
            for i, proba in enumerate(self.model.staged_predict_proba(X), start=1):
                if i == self.n_iter:
                    return proba[:, 1]
            return self.model.predict_proba(X)[:, 1]


def fit_trees(
    X_train: np.ndarray,
    y_train: Any,
    X_val: np.ndarray,
    y_val: Any,
    *,
    feature_names: Sequence[str] | None = None,
    max_iter: int = 300,
    learning_rate: float = 0.05,
    max_leaf_nodes: int = 31,
    min_samples_leaf: int = 40,
    l2_regularization: float = 1.0,
    class_weight: str | None = None,
    patience: int = 50,
    seed: int = 7,
    threads: int | None = 1,
) -> TreesModel:
    """Boosted trees on train; the number of trees with the best validation AUC-PR.

    sklearn's own early stopping would hold out a random slice of *train*; here the
    validation window (later in time) chooses, as for the rules and the transformer. The
    curve is cut ``patience`` iterations after its best (only the first ``best + patience``
    stages are evaluated when scoring does not improve any more). ``threads`` caps the
    OpenMP threads while fitting (None = the library default; 1 suits a shared 2-core box).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        y_tr = np.asarray(y_train, dtype=np.int64)
        y_v = np.asarray(y_val, dtype=np.float64)
        model = HistGradientBoostingClassifier(
            max_iter=max_iter,
            learning_rate=learning_rate,
            max_leaf_nodes=max_leaf_nodes,
            min_samples_leaf=min_samples_leaf,
            l2_regularization=l2_regularization,
            class_weight=class_weight,
            early_stopping=False,
            random_state=seed,
        )
        model.fit(np.asarray(X_train, dtype=np.float32), y_tr)
        curve: list[float] = []
        best_i, best_ap = 1, -1.0
        for i, proba in enumerate(model.staged_predict_proba(np.asarray(X_val, np.float32)), 1):
            ap = auc_pr(y_v, proba[:, 1])
            curve.append(ap)
            if ap > best_ap:
                best_i, best_ap = i, ap
            elif i - best_i >= patience:
                break
    names = list(feature_names) if feature_names is not None else []
    return TreesModel(
        model=model, n_iter=best_i, val_auc_pr=best_ap, val_curve=curve, feature_names=names
    )
