"""Kelly staking for decimal odds: single bets, vectorised independent bets, one event's outcomes.

Kelly maximises the expected logarithm of the bankroll, which is what compounds over a long
run of bets. Full Kelly is very sensitive to errors in the estimated probability, so
`kelly_stakes` defaults to a quarter of it and caps every stake; `simultaneous_kelly` is the
exact optimum when several outcomes of one event (home/draw/away) are backed together, where
staking each at its own single-bet Kelly would over-bet.

Everything validates its inputs and raises `StakingError` naming the bad value: a NaN price
or probability that slipped through would otherwise turn into a NaN or infinite stake.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

# Probabilities of mutually exclusive outcomes may sum to slightly above one after de-vigging.
PROBABILITY_SUM_TOLERANCE = 1e-9
# Probability mass below this counts as none, so float noise in sum(p) != 1 is not a total loss.
_MASS_EPS = 1e-12
# Relative slack when rounding down, so 0.3 with increment 0.1 stays 0.3 despite 0.3 / 0.1 < 3.
_ROUNDING_SLACK = 1e-9


class StakingError(ValueError):
    """An input that cannot be staked on; the message names the value."""


def _describe(values: np.ndarray, bad: np.ndarray) -> str:
    """The first offending value (and its index when the input is an array)."""
    flat_bad = np.flatnonzero(bad)
    first = int(flat_bad[0])
    value = float(values.reshape(-1)[first])
    if values.ndim == 0:
        return f"got {value!r}"
    return f"got {value!r} at index {first}"


def _float_array(values: ArrayLike, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype="float64")
    except (TypeError, ValueError) as exc:
        raise StakingError(f"{name} must be numeric, got {values!r}") from exc
    return arr


def _probabilities(values: ArrayLike, name: str) -> np.ndarray:
    arr = _float_array(values, name)
    bad = np.isnan(arr) | (arr < 0) | (arr > 1)
    if bad.any():
        raise StakingError(f"{name} must be a probability in [0, 1], {_describe(arr, bad)}")
    return arr


def _prices(values: ArrayLike, name: str = "price") -> np.ndarray:
    arr = _float_array(values, name)
    bad = ~np.isfinite(arr) | (arr <= 1)
    if bad.any():
        raise StakingError(f"{name} must be decimal odds > 1, {_describe(arr, bad)}")
    return arr


def _unit_share(value: float, name: str) -> float:
    """A share in (0, 1], e.g. the Kelly fraction or the cap per stake."""
    value = float(value)
    if not (0 < value <= 1):  # also rejects NaN
        raise StakingError(f"{name} must be in (0, 1], got {value!r}")
    return value


def _bankroll(value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise StakingError(f"bankroll must be finite and > 0 to stake, got {value!r}")
    return value


def _broadcast(*arrays: np.ndarray, names: str) -> list[np.ndarray]:
    try:
        return [np.atleast_1d(a) for a in np.broadcast_arrays(*arrays)]
    except ValueError as exc:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise StakingError(f"{names} have incompatible shapes {shapes}") from exc


def kelly_fraction(p: float, price: float) -> float:
    """Full Kelly share of bankroll, ``(p * price - 1) / (price - 1)``; 0 without a positive edge."""
    p_val = float(_probabilities(p, "p"))
    price_val = float(_prices(price))
    return max((p_val * price_val - 1.0) / (price_val - 1.0), 0.0)


def kelly_stakes(
    p: ArrayLike,
    prices: ArrayLike,
    bankroll: float,
    *,
    fraction: float = 0.25,
    min_edge: float = 0.0,
    max_stake_share: float = 0.05,
    limits: ArrayLike | None = None,
    increment: ArrayLike | None = None,
) -> np.ndarray:
    """Fractional Kelly stakes (money) for independent bets, capped so no one bet can ruin us.

    A bet gets a stake only where its edge ``p * price - 1`` is positive and at least
    `min_edge`. Each stake is ``fraction`` of full Kelly, then capped at
    ``max_stake_share * bankroll`` and at the bookmaker's limit (`limits`, inf for none),
    scaled down proportionally if the total would exceed the bankroll, and finally rounded
    down to the bookmaker's `increment`. The result is finite, >= 0 and sums to <= bankroll.
    """
    p_arr = _probabilities(p, "p")
    price_arr = _prices(prices)
    p_arr, price_arr = _broadcast(p_arr, price_arr, names="p and prices")
    bank = _bankroll(bankroll)
    frac = _unit_share(fraction, "fraction")
    share = _unit_share(max_stake_share, "max_stake_share")
    min_edge = float(min_edge)
    if math.isnan(min_edge):
        raise StakingError(f"min_edge must be a number, got {min_edge!r}")

    edge = p_arr * price_arr - 1.0
    bet = (edge > 0) & (edge >= min_edge)
    full = np.where(bet, edge / (price_arr - 1.0), 0.0)
    stakes = np.minimum(frac * full * bank, share * bank)

    if limits is not None:
        lim = _float_array(limits, "limits")
        bad = np.isnan(lim) | (lim < 0)
        if bad.any():
            raise StakingError(f"limits must be >= 0 (inf for none), {_describe(lim, bad)}")
        stakes, lim = _broadcast(stakes, lim, names="prices and limits")
        stakes = np.minimum(stakes, lim)

    total = stakes.sum()
    if total > bank:
        scale = bank / total
        # float rounding can leave the scaled sum a few ulps above the bankroll
        while (stakes * scale).sum() > bank:
            scale = np.nextafter(scale, 0.0)
        stakes = stakes * scale

    if increment is not None:
        inc = _float_array(increment, "increment")
        bad = ~np.isfinite(inc) | (inc <= 0)
        if bad.any():
            raise StakingError(f"increment must be finite and > 0, {_describe(inc, bad)}")
        stakes, inc = _broadcast(stakes, inc, names="prices and increment")
        steps = np.floor(stakes / inc + _ROUNDING_SLACK)
        stakes = np.minimum(steps * inc, stakes)  # never round up, even by the slack

    return np.asarray(stakes, dtype="float64")


def _outcome_arrays(probs: ArrayLike, prices: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """One event's outcomes: 1-D probabilities (summing to <= 1) and prices of equal length."""
    p_arr = _probabilities(probs, "probs")
    price_arr = _prices(prices)
    if p_arr.ndim != 1 or p_arr.shape != price_arr.shape:
        raise StakingError(
            f"probs and prices must be 1-D of equal length, got shapes {p_arr.shape} "
            f"and {price_arr.shape}"
        )
    total = float(p_arr.sum())
    if total > 1 + PROBABILITY_SUM_TOLERANCE:
        raise StakingError(f"probs of mutually exclusive outcomes must sum to <= 1, got {total!r}")
    return p_arr, price_arr


def simultaneous_kelly(probs: ArrayLike, prices: ArrayLike) -> np.ndarray:
    """Kelly-optimal fractions for backing several mutually exclusive outcomes of one event.

    Thorp's / Smoczynski & Tomkins' algorithm: take outcomes in decreasing expected return
    ``p * price`` while it exceeds the reserve rate ``R = (1 - sum p) / (1 - sum 1/price)``
    of the outcomes already taken; then ``f_i = p_i - R / price_i`` for those, 0 otherwise.
    The unstaked share ``1 - sum f`` equals R. Fractions are >= 0 and sum to <= 1.
    """
    p_arr, price_arr = _outcome_arrays(probs, prices)
    total = p_arr.sum()
    if total > 1:  # within tolerance: renormalise so the reserve formula stays valid
        p_arr = p_arr / total

    expected = p_arr * price_arr
    order = np.argsort(-expected, kind="stable")
    reserve = 1.0
    p_in = 0.0
    inv_in = 0.0
    chosen: list[int] = []
    for i in order:
        if expected[i] <= reserve:
            break
        denominator = 1.0 - (inv_in + 1.0 / price_arr[i])
        if denominator <= 0:  # only reachable through float noise in sum(p) ~ 1
            break
        p_in += p_arr[i]
        inv_in += 1.0 / price_arr[i]
        reserve = max(1.0 - p_in, 0.0) / denominator
        chosen.append(int(i))

    fractions = np.zeros_like(p_arr)
    if chosen:
        idx = np.array(chosen)
        fractions[idx] = np.maximum(p_arr[idx] - reserve / price_arr[idx], 0.0)
    staked = fractions.sum()
    if staked > 1:
        fractions = fractions / staked
    return fractions


def expected_log_growth(fractions: ArrayLike, probs: ArrayLike, prices: ArrayLike) -> float:
    """Expected log of bankroll multiple after staking `fractions` on one event's outcomes.

    Outcome i pays ``1 - sum f + f_i * price_i``; the unstaked part is kept. Probability mass
    missing from ``sum(probs) < 1`` (no backed outcome wins, e.g. a single bet losing) keeps
    only ``1 - sum f``. Returns -inf when a possible outcome leaves nothing.
    """
    p_arr, price_arr = _outcome_arrays(probs, prices)
    f_arr = _float_array(fractions, "fractions")
    if f_arr.shape != p_arr.shape:
        raise StakingError(
            f"fractions must match probs in shape, got {f_arr.shape} and {p_arr.shape}"
        )
    bad = ~np.isfinite(f_arr) | (f_arr < 0)
    if bad.any():
        raise StakingError(f"fractions must be finite and >= 0, {_describe(f_arr, bad)}")
    staked = float(f_arr.sum())
    if staked > 1 + _MASS_EPS:
        raise StakingError(f"fractions must sum to <= 1, got {staked!r}")

    kept = max(1.0 - staked, 0.0)
    wealth = kept + f_arr * price_arr
    no_win_mass = 1.0 - float(p_arr.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = float(np.sum(np.where(p_arr > 0, p_arr * np.log(wealth), 0.0)))
        if no_win_mass > _MASS_EPS:
            growth += no_win_mass * (math.log(kept) if kept > 0 else -math.inf)
    return growth
