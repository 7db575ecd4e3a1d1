"""Price conversions between decimal, American and fractional odds.

Decimal odds are canonical (`price > 1.0`). Converters return NaN for values that
cannot be a price, so validation can name the reason instead of crashing.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

# Values feeds use for "no price"; seen in The Odds API data as -2147483648.
SENTINEL_PRICES = frozenset({-2147483648.0, 2147483647.0, -2147483647.0, 4294967295.0})


def american_to_decimal(american: float) -> float:
    """+150 -> 2.5, -200 -> 1.5; |american| < 100 is not a valid American price (NaN)."""
    if american is None or not math.isfinite(american) or abs(american) < 100:
        return math.nan
    if american > 0:
        return 1.0 + american / 100.0
    return 1.0 + 100.0 / -american


def american_to_decimal_array(american: np.ndarray) -> np.ndarray:
    values = np.asarray(american, dtype="float64")
    out = np.full(values.shape, np.nan)
    positive = values >= 100
    negative = values <= -100
    out[positive] = 1.0 + values[positive] / 100.0
    out[negative] = 1.0 + 100.0 / -values[negative]
    return out


def decimal_to_american(decimal: float) -> float:
    if decimal is None or not math.isfinite(decimal) or decimal <= 1.0:
        return math.nan
    if decimal >= 2.0:
        return (decimal - 1.0) * 100.0
    return -100.0 / (decimal - 1.0)


def fractional_to_decimal(fractional: str) -> float:
    """'5/2' -> 3.5, 'evs'/'evens' -> 2.0; anything unparseable -> NaN."""
    text = str(fractional).strip().lower()
    if text in {"evs", "evens", "even"}:
        return 2.0
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return math.nan
    if value <= 0:
        return math.nan
    return 1.0 + float(value)


def decimal_to_fractional(decimal: float, max_denominator: int = 100) -> str:
    if decimal is None or not math.isfinite(decimal) or decimal <= 1.0:
        raise ValueError(f"not a decimal price: {decimal!r}")
    frac = Fraction(decimal - 1.0).limit_denominator(max_denominator)
    return f"{frac.numerator}/{frac.denominator}"


def implied_probability(decimal: float) -> float:
    return 1.0 / decimal if decimal and decimal > 1.0 else math.nan
