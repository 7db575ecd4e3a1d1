"""Removing the bookmaker's margin ("de-vigging") from one market's implied probabilities.

Three methods, each in numpy (reference, vectorised over many markets) and as DuckDB SQL
(what the feature store runs):

- multiplicative: ``p_i = pi_i / sum(pi)``; keeps the ratios, so the margin is spread in
  proportion to each price.
- power: ``p_i = pi_i ** k`` with ``k`` solving ``sum(pi ** k) = 1``; a longshot loses
  relatively more of its implied probability than a favourite (favourite-longshot bias).
- shin: Shin's insider-trading model, ``p_i = (sqrt(z^2 + 4 (1 - z) pi_i^2 / S) - z) /
  (2 (1 - z))`` with the insider share ``z`` solving ``sum(p) = 1``; written here in the
  cancellation-free form ``p_i = 2 a_i / (s_i + z)``, ``a_i = pi_i^2 / S``.

Markets are rows of a 2-D array (markets x outcomes) padded with NaN, so 2-way and 3-way
markets travel together. numpy solves by bisection (robust, the reference); SQL runs a
fixed number of Newton steps on list columns, set-based, so no Python loop touches a row.
A market with no margin (``sum(pi) == 1``) comes back unchanged under every method.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

Method = Literal["multiplicative", "power", "shin"]
METHODS: tuple[Method, ...] = ("multiplicative", "power", "shin")
# Chosen by the comparison in benchmarks/bench_features.py (section "devig_comparison"):
# on closing NBA moneylines (2-way) multiplicative has the lowest Brier score and log loss;
# on closing Pinnacle EPL 1X2 the three differ by < 0.0002 Brier (power marginally ahead).
# Multiplicative is also the simplest and needs no solver.
DEFAULT_METHOD: Method = "multiplicative"

# Newton steps the SQL runs. From the starting points used (k = 1, z = 0) the solvers reach
# double precision within these counts for markets whose implied probabilities lie in
# [1e-4, 1) with overround in (-5%, 60%) (checked against the numpy bisection reference in
# odds_pipeline_tests/test_devig.py); power needs more steps for extreme longshots.
SQL_POWER_STEPS = 12
SQL_SHIN_STEPS = 8
_BISECTION_STEPS = 200


def _as_2d(probs: ArrayLike) -> tuple[np.ndarray, bool]:
    arr = np.asarray(probs, dtype="float64")
    if arr.ndim == 1:
        return arr[None, :], True
    if arr.ndim != 2:
        raise ValueError(f"expected a market (1-D) or markets x outcomes (2-D), got {arr.ndim}-D")
    return arr, False


def _valid_rows(p: np.ndarray) -> np.ndarray:
    """Rows with at least two outcomes, each a probability in (0, 1); NaN is padding."""
    present = ~np.isnan(p)
    inside = np.where(present, (p > 0) & (p < 1), True)
    return (present.sum(axis=1) >= 2) & inside.all(axis=1)


def _finish(out: np.ndarray, valid: np.ndarray, p: np.ndarray, single: bool) -> np.ndarray:
    out = np.where(valid[:, None] & ~np.isnan(p), out, np.nan)
    return out[0] if single else out


def implied_probabilities(prices: ArrayLike) -> np.ndarray:
    """Decimal prices -> implied probabilities (NaN where a price is not > 1)."""
    arr = np.asarray(prices, dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(arr > 1.0, 1.0 / arr, np.nan)


def overround(probs: ArrayLike) -> np.ndarray:
    """The bookmaker's margin: sum of implied probabilities minus one."""
    p, single = _as_2d(probs)
    out = np.nansum(p, axis=1) - 1.0
    return out[0] if single else out


def devig_multiplicative(probs: ArrayLike) -> np.ndarray:
    p, single = _as_2d(probs)
    valid = _valid_rows(p)
    out = p / np.nansum(p, axis=1, keepdims=True)
    return _finish(out, valid, p, single)


def _bisect(fn, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Root of a decreasing function per row, bracketed by fn(lo) > 0 > fn(hi)."""
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        positive = fn(mid) > 0
        lo = np.where(positive, mid, lo)
        hi = np.where(positive, hi, mid)
        if np.all(hi - lo <= 1e-15 * np.maximum(1.0, np.abs(hi))):
            break
    return 0.5 * (lo + hi)


def power_exponent(probs: ArrayLike) -> np.ndarray:
    """The k of the power method: sum(pi ** k) = 1 (k > 1 when the book has a margin)."""
    p, single = _as_2d(probs)
    valid = _valid_rows(p)
    q = np.where(valid[:, None] & ~np.isnan(p), p, np.nan)

    def f(k: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.nansum(q ** k[:, None], axis=1) - 1.0

    lo = np.zeros(len(q))  # f(0) = n - 1 > 0
    hi = np.ones(len(q))
    for _ in range(64):  # widen until f(hi) < 0 (f decreases to -1 as k grows)
        grow = valid & (f(hi) > 0)
        if not grow.any():
            break
        hi = np.where(grow, hi * 2.0, hi)
    k = np.where(valid, _bisect(f, lo, hi), np.nan)
    return k[0] if single else k


def devig_power(probs: ArrayLike) -> np.ndarray:
    p, single = _as_2d(probs)
    valid = _valid_rows(p)
    k = power_exponent(p)
    with np.errstate(invalid="ignore"):
        raw = p ** k[:, None]
    out = raw / np.nansum(raw, axis=1, keepdims=True)
    return _finish(out, valid, p, single)


def _shin_terms(q: np.ndarray, z: np.ndarray) -> np.ndarray:
    booksum = np.nansum(q, axis=1, keepdims=True)
    a = q * q / booksum
    zz = z[:, None]
    s = np.sqrt(zz * zz + 4.0 * (1.0 - zz) * a)
    return 2.0 * a / (s + zz)


def shin_z(probs: ArrayLike) -> np.ndarray:
    """Shin's insider share z; sum(p(z)) decreases strictly in z on (-1, 1), so bisect."""
    p, single = _as_2d(probs)
    valid = _valid_rows(p)
    q = np.where(valid[:, None] & ~np.isnan(p), p, np.nan)

    def g(z: np.ndarray) -> np.ndarray:
        return np.nansum(_shin_terms(q, z), axis=1) - 1.0

    lo = np.full(len(q), -1.0 + 1e-12)
    hi = np.full(len(q), 1.0 - 1e-12)
    z = np.where(valid, _bisect(g, lo, hi), np.nan)
    return z[0] if single else z


def devig_shin(probs: ArrayLike) -> np.ndarray:
    p, single = _as_2d(probs)
    valid = _valid_rows(p)
    z = np.where(valid, shin_z(p), 0.0)
    raw = _shin_terms(np.where(valid[:, None], p, np.nan), z)
    out = raw / np.nansum(raw, axis=1, keepdims=True)
    return _finish(out, valid, p, single)


def shin_z_two_way(pi_1: ArrayLike, pi_2: ArrayLike) -> np.ndarray:
    """Closed form for two outcomes: z = 1 - 2 (1 - A) / (1 - d^2).

    With S = pi_1 + pi_2, A = (pi_1^2 + pi_2^2) / S and d = pi_1 - pi_2 (from s_1 + s_2 = 2,
    squared twice); a hand-checkable reference for the iterative solvers.
    """
    a1 = np.asarray(pi_1, dtype="float64")
    a2 = np.asarray(pi_2, dtype="float64")
    big_a = (a1 * a1 + a2 * a2) / (a1 + a2)
    d = a1 - a2
    return 1.0 - 2.0 * (1.0 - big_a) / (1.0 - d * d)


def devig(probs: ArrayLike, method: Method = DEFAULT_METHOD) -> np.ndarray:
    if method == "multiplicative":
        return devig_multiplicative(probs)
    if method == "power":
        return devig_power(probs)
    if method == "shin":
        return devig_shin(probs)
    raise ValueError(f"unknown de-vig method {method!r}; expected one of {METHODS}")


# --------------------------------------------------------------------------- SQL


# Helper lists built once per market: logs for power (pi^k = exp(k ln pi)) and Shin's
# a_i = pi_i^2 / S.
_S = "sqrt(z_shin * z_shin + 4.0 * (1.0 - z_shin) * a)"


def _power_step() -> str:
    f = "list_sum(list_transform(_logs, lambda l: exp(k_power * l)))"
    fp = "list_sum(list_transform(_logs, lambda l: exp(k_power * l) * l))"
    return f"k_power - ({f} - 1.0) / {fp}"


def _shin_step() -> str:
    # p = 2a / (s + z); dp/dz = -2a (ds + 1) / (s + z)^2 with ds = (z - 2a) / s.
    g = f"list_sum(list_transform(_a, lambda a: 2.0 * a / ({_S} + z_shin)))"
    gp = (
        f"list_sum(list_transform(_a, lambda a: -2.0 * a * ((z_shin - 2.0 * a) / {_S} + 1.0) "
        f"/ pow({_S} + z_shin, 2)))"
    )
    return f"greatest(-0.999, least(0.999, z_shin - ({g} - 1.0) / {gp}))"


def devig_sql(
    source: str,
    *,
    probs: str = "probs",
    power_steps: int = SQL_POWER_STEPS,
    shin_steps: int = SQL_SHIN_STEPS,
    lists: bool = True,
) -> str:
    """A SELECT over `source` (a query or table with a LIST<DOUBLE> column of implied
    probabilities) adding, per market, `booksum`, the solved `k_power` and `z_shin`, and the
    normalisers `norm_power`, `norm_shin` (so `devig_value_sql` can de-vig one outcome
    from scalars); with `lists`, also the de-vigged lists `p_multiplicative`, `p_power`,
    `p_shin` in the element order of `probs`.

    Each Newton step is one projection over the whole relation (list lambdas), so the cost
    is a few vectorised passes, not a loop over markets; results are renormalised so each
    market sums to exactly one. Callers pass only valid lists (every element in (0, 1)) or
    NULL.
    """
    sql = (
        f"SELECT *, list_sum({probs}) AS booksum, 1.0::DOUBLE AS k_power, "
        f"0.0::DOUBLE AS z_shin, list_transform({probs}, lambda x: ln(x)) AS _logs "
        f"FROM ({source})"
    )
    sql = f"SELECT *, list_transform({probs}, lambda x: x * x / booksum) AS _a FROM ({sql})"
    for step in range(max(power_steps, shin_steps)):
        updates = []
        if step < power_steps:
            updates.append(f"{_power_step()} AS k_power")
        if step < shin_steps:
            updates.append(f"{_shin_step()} AS z_shin")
        sql = f"SELECT * REPLACE ({', '.join(updates)}) FROM ({sql})"
    sql = f"""
        SELECT * EXCLUDE (_logs, _a),
            list_sum(list_transform(_logs, lambda l: exp(k_power * l))) AS norm_power,
            list_sum(list_transform(_a, lambda a: 2.0 * a / ({_S} + z_shin))) AS norm_shin
        FROM ({sql})
    """
    if not lists:
        return sql
    values = ", ".join(
        f"list_transform({probs}, lambda x: {devig_value_sql('x', m)}) AS p_{m}" for m in METHODS
    )
    return f"SELECT *, {values} FROM ({sql})"


def devig_value_sql(x: str, method: Method) -> str:
    """SQL for one outcome's de-vigged probability from its implied probability `x` and its
    market's `booksum`, `k_power`, `z_shin`, `norm_power`, `norm_shin` (see devig_sql)."""
    if method == "multiplicative":
        return f"{x} / booksum"
    if method == "power":
        return f"pow({x}, k_power) / norm_power"
    if method == "shin":
        a = f"({x} * {x} / booksum)"
        return (
            f"2.0 * {a} / (sqrt(z_shin * z_shin + 4.0 * (1.0 - z_shin) * {a}) + z_shin) / norm_shin"
        )
    raise ValueError(f"unknown de-vig method {method!r}; expected one of {METHODS}")


def score_methods(
    probs: ArrayLike, winner: ArrayLike, methods: tuple[Method, ...] = METHODS
) -> dict[str, dict[str, float]]:
    """Brier score (summed over outcomes, and for outcome 0 alone) and log loss per method.

    `probs` is markets x outcomes (implied probabilities), `winner` the column index of the
    outcome that happened; markets a method cannot de-vig are left out of every method, so
    the figures compare like with like.
    """
    p, _ = _as_2d(probs)
    win = np.asarray(winner, dtype="int64")
    results = {m: devig(p, m) for m in methods}
    keep = np.ones(len(p), dtype=bool)
    for out in results.values():
        keep &= ~np.isnan(np.where(np.isnan(p), 0.0, out)).any(axis=1)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(p)), win] = 1.0
    scores: dict[str, dict[str, float]] = {}
    for method, out in results.items():
        q = np.nan_to_num(out[keep])
        y = onehot[keep]
        p_win = q[np.arange(len(q)), win[keep]]
        scores[method] = {
            "markets": int(keep.sum()),
            "brier": float(np.mean(np.sum((q - y) ** 2, axis=1))),
            "brier_outcome0": float(np.mean((q[:, 0] - y[:, 0]) ** 2)),
            "log_loss": float(-np.mean(np.log(np.clip(p_win, 1e-15, 1.0)))),
        }
    return scores
