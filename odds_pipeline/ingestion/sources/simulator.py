"""A simulated betting market: the embedded default source and the large-benchmark generator.

Why: the pipeline needs data with a *known* truth (oracle comparisons for calibration,
backtests and arbitrage detection) and data at any scale (tests: a handful of events;
benchmarks: tens of millions of quotes) without network or licence questions.

Model (all times are milliseconds after an event's market opens, `days_before` before
kickoff):

- The latent state of an event is `x`, the logit of the home-win probability of a
  logistic goal-margin model (margin ~ Logistic(mu = MARGIN_SCALE * x, MARGIN_SCALE)),
  and `y`, the log of the expected total. Both are pure-jump random walks: frequent
  small drift steps plus Poisson news shocks (big jumps). The truth is a step function,
  so "the truth at t" is the last truth row with `observed_at <= t`.
- Books re-quote every market (h2h, spreads, totals; all outcomes at one moment) at an
  opening time, at Poisson times, and in reaction to each shock. The sharp book sees the
  truth at once and re-quotes about `reaction_minutes` after a shock; each retail book
  sees the truth as of `t - lag` (lag drawn per book and event from `retail_lag_minutes`)
  and re-quotes after the sharp book, its lag and its own reaction time later, with a
  larger margin. Stale retail prices next to a moved sharp price are the cross-book
  arbitrage windows.
- `arbitrage_rate` dials them: it multiplies the retail lags and reaction times and the
  rate of retail mispricings (a quote off by a logit shift, corrected minutes later).
  0 removes lag- and mispricing-driven windows (every book re-prices a shock at the same
  moment); what remains comes from books re-quoting at different times while the truth
  drifts. 2 gives twice the lags and mispricings.
- Prices are `1 / (p * (1 + margin))` rounded to two decimals, clamped to [1.01, 1000].
- Results are drawn from the final truth: the h2h outcome follows the final home/draw
  probabilities exactly; the score line is consistent with it (totals approximately).

Regime change (off by default; for drift drills): events whose market opens at or after
`regime_change_at` follow `regime_*` values in place of home_advantage, base_total,
drift_scale, shock_rate_per_day, shock_scale, retail_margin and retail_lag_minutes. The
truth and every book follow the new regime at once, so both what a model sees (prices,
overrounds, how much and how often prices move) and how outcomes relate to it (a new home
advantage) change. Events before the change are bit-identical to a run without one.

Determinism: random numbers are drawn per block of BLOCK_EVENTS events from
`SeedSequence(seed, spawn_key=(1, block, stream))` with separate truth and quote
streams, so the same seed gives byte-identical frames whatever `batch_events` is, the
first N events of a run do not depend on `n_events`, and book/quote settings do not
change the truth or the results. Everything is vectorized per block. A regime change
draws its extra randomness (added and thinned shocks, their quotes) from streams 2 and 3
of the block and otherwise only swaps loc/scale/bounds per event, so the base streams draw
the same numbers and the old regime's events keep their values.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from datetime import datetime

import numpy as np
import pandas as pd

from odds_pipeline.market.quotes import (
    CANDIDATE_COLUMNS,
    EVENT_COLUMNS,
    QUOTE_COLUMNS,
    REJECT_COLUMNS,
    RESULT_COLUMNS,
    ParseResult,
    combine,
    empty_frame,
    validate_candidates,
)

SOURCE = "simulator"

# Randomness is drawn per block of this many events (fixed, so content is independent of
# batch_events and n_events). Changing it changes every simulated number.
BLOCK_EVENTS = 256
# Logistic scale of the goal margin and of the total (football-like: sd ~ 1.6 goals).
MARGIN_SCALE = 0.9
TOTAL_SCALE = 0.9
# Latent logit and expected total are clamped here when turned into probabilities.
LOGIT_CLAMP = 4.0
TOTAL_RANGE = (0.5, 8.0)
MIN_PRICE, MAX_PRICE = 1.01, 1000.0
OPEN_WINDOW_MS = 10 * 60_000  # books post their opening prices within 10 minutes
MATCH_DURATION = pd.Timedelta(hours=2)

_DAY_MS = 86_400_000
_NS_PER_MS = 1_000_000
_STRIDE = 1 << 40  # > any window in ms: (group * _STRIDE + t) sorts by group then time


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that shapes a simulated market; the same config gives the same data."""

    seed: int = 7
    n_events: int = 200
    start: str = "2024-01-01T00:00:00Z"  # the first event's market opens here
    days_before: float = 3.0  # markets open this long before kickoff
    kickoffs_per_day: float = 8.0
    n_teams: int = 20
    sharp_books: tuple[str, ...] = ("pinnacle",)
    retail_books: tuple[str, ...] = ("bet365", "williamhill", "draftkings", "fanduel")
    sharp_margin: float = 0.025
    retail_margin: tuple[float, float] = (0.04, 0.08)  # spread evenly over retail books
    mean_quotes_per_book_per_day: float = 6.0  # regular re-quotes (besides reactions)
    drift_steps_per_day: float = 24.0
    drift_scale: float = 0.03  # logit sd of a drift step
    shock_rate_per_day: float = 0.5
    shock_scale: float = 0.45  # logit sd of a news shock
    total_drift_scale: float = 0.01  # log-total sd of a drift step
    total_shock_scale: float = 0.06  # log-total sd of a news shock
    home_advantage: float = 0.3  # logit
    base_total: float = 2.6
    reaction_minutes: float = 1.0  # mean delay of a re-quote after a book sees a shock
    retail_lag_minutes: tuple[float, float] = (2.0, 45.0)
    arbitrage_rate: float = 1.0
    mispricing_rate_per_day: float = 0.05  # per retail book and event, times arbitrage_rate
    mispricing_scale: tuple[float, float] = (0.3, 0.8)  # logit shift of a mispriced quote
    mispricing_minutes: float = 5.0  # mean time before a mispricing is corrected
    max_ingest_delay_seconds: float = 30.0
    sport: str = "simulated_football"
    draw: bool = False  # True: 3-way h2h (home/draw/away)
    batch_events: int = 512
    # A regime change (off by default), for drift drills: events whose market opens at or
    # after `regime_change_at` (an ISO timestamp with a zone) follow the regime_* values
    # below; a regime_* value of None keeps the field it replaces. See `_new_regime`.
    regime_change_at: str | None = None
    regime_home_advantage: float | None = None  # replaces home_advantage (truth and books)
    regime_base_total: float | None = None  # replaces base_total
    regime_drift_scale: float | None = None  # replaces drift_scale
    regime_shock_rate_per_day: float | None = None  # replaces shock_rate_per_day
    regime_shock_scale: float | None = None  # replaces shock_scale
    regime_retail_margin: tuple[float, float] | None = None  # replaces retail_margin
    regime_retail_lag_minutes: tuple[float, float] | None = None  # replaces retail_lag_minutes

    def __post_init__(self) -> None:
        problems = []
        if self.n_events < 0:
            problems.append("n_events must be >= 0")
        if not self.days_before > 0:
            problems.append("days_before must be > 0")
        if self.days_before * _DAY_MS >= _STRIDE // 4:
            problems.append("days_before is too large")
        if not self.kickoffs_per_day > 0:
            problems.append("kickoffs_per_day must be > 0")
        if self.n_teams < 2:
            problems.append("n_teams must be >= 2")
        books = [*self.sharp_books, *self.retail_books]
        if not books:
            problems.append("at least one bookmaker is needed")
        if len(set(books)) != len(books):
            problems.append("bookmaker names must be unique")
        if len(books) > 4096:
            problems.append("too many bookmakers")
        if self.batch_events < 1:
            problems.append("batch_events must be >= 1")
        for name in ("retail_margin", "retail_lag_minutes", "mispricing_scale"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                problems.append(f"{name} must be (low, high) with 0 <= low <= high")
        if self.sharp_margin < 0 or self.arbitrage_rate < 0 or self.base_total <= 0:
            problems.append("sharp_margin, arbitrage_rate must be >= 0 and base_total > 0")
        rates = (
            self.mean_quotes_per_book_per_day,
            self.drift_steps_per_day,
            self.shock_rate_per_day,
            self.mispricing_rate_per_day,
            self.max_ingest_delay_seconds,
        )
        if any(r < 0 for r in rates):
            problems.append("rates and delays must be >= 0")
        try:
            ts = pd.Timestamp(self.start)
            if ts.tzinfo is None:
                problems.append(f"start {self.start!r} needs a time zone (e.g. a trailing Z)")
        except ValueError:
            problems.append(f"start {self.start!r} is not a timestamp")
        problems += self._regime_problems()
        if problems:
            raise ValueError("invalid SimulatorConfig: " + "; ".join(problems))

    def _regime_problems(self) -> list[str]:
        """What is wrong with the regime_* fields; each message names its field."""
        changed = [name for name in _REGIME_FIELDS if getattr(self, name) is not None]
        if self.regime_change_at is None:
            # Silently ignoring them would make a drift drill that drifts nothing.
            return [f"{name} needs regime_change_at" for name in changed]
        problems = []
        if not changed:
            problems.append(f"regime_change_at is set but none of {list(_REGIME_FIELDS)} is")
        try:
            if pd.Timestamp(self.regime_change_at).tzinfo is None:
                problems.append(f"regime_change_at {self.regime_change_at!r} needs a time zone")
        except (ValueError, TypeError):
            problems.append(f"regime_change_at {self.regime_change_at!r} is not a timestamp")
        scalars = {  # field: (smallest allowed value, whether it is allowed itself)
            "regime_home_advantage": (-math.inf, True),
            "regime_base_total": (0.0, False),
            "regime_drift_scale": (0.0, True),
            "regime_shock_rate_per_day": (0.0, True),
            "regime_shock_scale": (0.0, True),
        }
        for name, (low, closed) in scalars.items():
            value = getattr(self, name)
            if value is None:
                continue
            ok = _is_number(value) and math.isfinite(value)
            if not (ok and (value >= low if closed else value > low)):
                bound = "" if low == -math.inf else f" {'>=' if closed else '>'} {low:g}"
                problems.append(f"{name} must be a finite number{bound}, not {value!r}")
        for name in ("regime_retail_margin", "regime_retail_lag_minutes"):
            value = getattr(self, name)
            if value is None:
                continue
            pair = tuple(value) if isinstance(value, tuple | list) else ()
            if not (
                len(pair) == 2
                and all(_is_number(v) and math.isfinite(v) for v in pair)
                and 0 <= pair[0] <= pair[1]
            ):
                problems.append(f"{name} must be (low, high) with 0 <= low <= high, not {value!r}")
        return problems

    @property
    def books(self) -> tuple[str, ...]:
        return (*self.sharp_books, *self.retail_books)

    @property
    def load_id(self) -> str:
        return f"{SOURCE}:seed-{self.seed}"

    @property
    def source_file(self) -> str:
        return f"{SOURCE}:seed-{self.seed}"

    def margins(self, *, regime: bool = False) -> np.ndarray:
        """Multiplicative margin per book: sharp books first, retail spread evenly.

        `regime=True`: the margins after the regime change (`regime_retail_margin`).
        """
        new = self.regime_retail_margin if regime else None
        lo, hi = new if new is not None else self.retail_margin
        n_r = len(self.retail_books)
        retail = np.linspace(lo, hi, n_r) if n_r > 1 else np.full(n_r, lo)
        return np.concatenate([np.full(len(self.sharp_books), self.sharp_margin), retail])


_REGIME_FIELDS = (
    "regime_home_advantage",
    "regime_base_total",
    "regime_drift_scale",
    "regime_shock_rate_per_day",
    "regime_shock_scale",
    "regime_retail_margin",
    "regime_retail_lag_minutes",
)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def config_from_mapping(values: Mapping[str, object]) -> SimulatorConfig:
    """Build a config from run config / JSON (lists become tuples, unknown keys refused).

    Datetimes become ISO strings: YAML reads an unquoted `2024-02-01T00:00:00Z` as one.
    """
    known = {f.name for f in fields(SimulatorConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown SimulatorConfig fields {unknown}")

    def plain(value: object) -> object:
        if isinstance(value, list):
            return tuple(value)
        if isinstance(value, datetime):
            return value.isoformat()
        return value

    return SimulatorConfig(**{k: plain(v) for k, v in values.items()})


def expected_quotes_per_event(config: SimulatorConfig) -> float:
    """Mean quotes an event produces (a little less in practice: late reactions drop).

    For the old regime: a regime change's shock rate changes its events' volume.
    """
    nb, n_r = len(config.books), len(config.retail_books)
    wd = config.days_before
    updates = nb * (1 + config.mean_quotes_per_book_per_day * wd + config.shock_rate_per_day * wd)
    updates += n_r * 2 * config.mispricing_rate_per_day * config.arbitrage_rate * wd
    return updates * _n_slots(config)


# --------------------------------------------------------------------------- market model


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def home_cover_probability(expected_margin: np.ndarray, point: np.ndarray) -> np.ndarray:
    """P(margin + point > 0) for the home side of a spread (oracle for any line)."""
    return _sigmoid((np.asarray(expected_margin) + np.asarray(point)) / MARGIN_SCALE)


def over_probability(expected_total: np.ndarray, point: np.ndarray) -> np.ndarray:
    """P(total > point) (oracle for any totals line)."""
    return _sigmoid((np.asarray(expected_total) - np.asarray(point)) / TOTAL_SCALE)


def _probabilities(x: np.ndarray, y: np.ndarray, draw: bool) -> dict[str, np.ndarray]:
    """Market probabilities and fair lines from latent logit `x` and log-total `y`."""
    xc = np.clip(x, -LOGIT_CLAMP, LOGIT_CLAMP)
    mu = MARGIN_SCALE * xc
    total = np.clip(np.exp(y), *TOTAL_RANGE)
    if draw:
        half = 0.5 / MARGIN_SCALE
        home = _sigmoid(xc - half)
        away = _sigmoid(-xc - half)
        draw_p = 1.0 - home - away
    else:
        home = _sigmoid(xc)
        away = 1.0 - home
        draw_p = np.zeros_like(home)
    spread_point = -(np.floor(mu) + 0.5)  # the home line; away gets -spread_point
    total_point = np.floor(total) + 0.5
    return {
        "home": home,
        "draw": draw_p,
        "away": away,
        "mu": mu,
        "total": total,
        "spread_point": spread_point,
        "cover": home_cover_probability(mu, spread_point),
        "total_point": total_point,
        "over": over_probability(total, total_point),
    }


# (market, outcome, name kind) per slot; name kind 0 home team, 1 away team, 2 Draw, 3 Over, 4 Under.
_SLOTS_2WAY = [
    ("h2h", "home", 0),
    ("h2h", "away", 1),
    ("spreads", "home", 0),
    ("spreads", "away", 1),
    ("totals", "over", 3),
    ("totals", "under", 4),
]
_SLOTS_3WAY = [_SLOTS_2WAY[0], _SLOTS_2WAY[1], ("h2h", "draw", 2), *_SLOTS_2WAY[2:]]


def _slots(config: SimulatorConfig) -> list[tuple[str, str, int]]:
    return _SLOTS_3WAY if config.draw else _SLOTS_2WAY


def _n_slots(config: SimulatorConfig) -> int:
    return len(_slots(config))


def _slot_matrices(p: dict[str, np.ndarray], draw: bool) -> tuple[np.ndarray, np.ndarray]:
    """(probability, point) per update and slot, in the order of `_slots`."""
    nan = np.full_like(p["home"], np.nan)
    sp, tp = p["spread_point"], p["total_point"]
    probs = [p["home"], p["away"], p["cover"], 1.0 - p["cover"], p["over"], 1.0 - p["over"]]
    points = [nan, nan, sp, -sp, tp, tp]
    if draw:
        probs.insert(2, p["draw"])
        points.insert(2, nan)
    return np.column_stack(probs), np.column_stack(points)


# --------------------------------------------------------------------------- one block


def _strictly_increasing(group: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Times sorted by (group, t) nudged up by 1 ms where needed so no two tie in a group."""
    n = len(t)
    if n == 0:
        return t
    first = np.ones(n, dtype=bool)
    first[1:] = group[1:] != group[:-1]
    starts = np.flatnonzero(first)
    rank = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
    key = group * _STRIDE + (t - rank)
    return np.maximum.accumulate(key) - group * _STRIDE + rank


@dataclass
class _Truth:
    """The latent paths and results of one block's events (local event index 0..B-1)."""

    x0: np.ndarray
    y0: np.ndarray
    home: np.ndarray
    away: np.ndarray
    je: np.ndarray  # jump event, sorted by (je, jt)
    jt: np.ndarray  # jump time, ms after open, strictly increasing per event, in [1, W)
    jx: np.ndarray  # level after the jump
    jy: np.ndarray
    jshock: np.ndarray
    jkey: np.ndarray
    jstart: np.ndarray  # first jump index per event
    home_score: np.ndarray
    away_score: np.ndarray
    # Shocks the regime change added (drawn from a stream of their own), and how many
    # shocks the base stream drew: the quote stream draws reactions for that many, so its
    # later draws line up with a run without a regime change (see `_regime_shocks`).
    jextra: np.ndarray
    n_base_shocks: int

    def level(self, e: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of events `e` at times `q` (ms after open): the step function's value."""
        if len(self.jx) == 0:
            return self.x0[e], self.y0[e]
        idx = np.searchsorted(self.jkey, e * _STRIDE + q, side="right") - 1
        has = idx >= self.jstart[e]
        safe = np.maximum(idx, 0)
        return np.where(has, self.jx[safe], self.x0[e]), np.where(has, self.jy[safe], self.y0[e])


def _team_strengths(config: SimulatorConfig) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(0,)))
    return rng.normal(0.0, 0.5, config.n_teams)


def _window_ms(config: SimulatorConfig) -> int:
    return int(round(config.days_before * _DAY_MS))


def _new_regime(config: SimulatorConfig, block: int) -> np.ndarray | None:
    """Which local events of `block` follow the new regime; None when none does.

    An event belongs to the regime in force when its market opens: all its truth, quotes
    and its result then follow one regime, and nothing observed before `regime_change_at`
    reflects the new one. Events are in opening order, so the new regime's events are a
    suffix of every block. None keeps the regime-free code path (and its numbers) exactly.
    """
    if config.regime_change_at is None:
        return None
    change_ns = pd.Timestamp(config.regime_change_at).tz_convert("UTC").value
    change_ms = -(-change_ns // _NS_PER_MS)
    events = np.arange(BLOCK_EVENTS) + block * BLOCK_EVENTS
    post = _commence_ms(config, events) - _window_ms(config) >= change_ms
    return post if post.any() else None


def _per_event(post: np.ndarray | None, old: float, new: float | None) -> float | np.ndarray:
    """`old`, or per event `new` for the new regime's events.

    Why arrays of parameters rather than a second draw: numpy's generators draw the same
    underlying numbers whatever the loc/scale/bounds, so the old regime's events keep their
    exact values and the stream stays aligned for the events after them.
    """
    if post is None or new is None:
        return old
    return np.where(post, float(new), old)


def _regime_shocks(
    config: SimulatorConfig,
    block: int,
    post: np.ndarray,
    jumps: tuple[np.ndarray, ...],
) -> tuple[np.ndarray, ...]:
    """The jumps (je, jt, dx, dy, shock, extra) with the new regime's shock rate.

    Thinning keeps each base shock of a new-regime event with probability new/old; an
    independent Poisson process of rate new - old adds the rest: either way the rate is
    `regime_shock_rate_per_day`. Both draw from stream 2 of the block, so the base truth
    stream draws exactly what it draws without a regime change (the number of base shocks
    is a Poisson draw: redrawing it at another rate would shift every later draw of the
    block, the old regime's events included).
    """
    B, W, wd = BLOCK_EVENTS, _window_ms(config), config.days_before
    je, jt, dx, dy, shock = jumps
    old, new = config.shock_rate_per_day, config.regime_shock_rate_per_day
    assert new is not None
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1, block, 2)))
    live = ~(shock & post[je] & (rng.random(len(je)) * old >= new))
    n_extra = rng.poisson(max(new - old, 0.0) * wd * post)
    ne = int(n_extra.sum())
    scale = config.shock_scale if config.regime_shock_scale is None else config.regime_shock_scale
    je = np.concatenate([je[live], np.repeat(np.arange(B), n_extra)])
    jt = np.concatenate([jt[live], 1 + np.floor(rng.random(ne) * (W - 1)).astype(np.int64)])
    dx = np.concatenate([dx[live], rng.normal(0.0, scale, ne)])
    dy = np.concatenate([dy[live], rng.normal(0.0, config.total_shock_scale, ne)])
    shock = np.concatenate([shock[live], np.ones(ne, dtype=bool)])
    extra = np.concatenate([np.zeros(int(live.sum()), dtype=bool), np.ones(ne, dtype=bool)])
    order = np.argsort(je * _STRIDE + jt, kind="stable")
    je, jt, dx, dy, shock, extra = (a[order] for a in (je, jt, dx, dy, shock, extra))
    jt = _strictly_increasing(je, jt)
    keep = jt < W
    return tuple(a[keep] for a in (je, jt, dx, dy, shock, extra))


def _simulate_truth(config: SimulatorConfig, block: int, strengths: np.ndarray) -> _Truth:
    """Latent paths and results for the BLOCK_EVENTS events of `block` (fixed shapes)."""
    B, W, wd = BLOCK_EVENTS, _window_ms(config), config.days_before
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1, block, 0)))
    post = _new_regime(config, block)
    home_advantage = _per_event(post, config.home_advantage, config.regime_home_advantage)
    new_total = config.regime_base_total
    log_total = _per_event(
        post, math.log(config.base_total), None if new_total is None else math.log(new_total)
    )
    home = rng.integers(0, config.n_teams, B)
    away = (home + rng.integers(1, config.n_teams, B)) % config.n_teams
    x0 = home_advantage + strengths[home] - strengths[away] + rng.normal(0.0, 0.3, B)
    y0 = log_total + rng.normal(0.0, 0.12, B)
    n_drift = rng.poisson(config.drift_steps_per_day * wd, B)
    n_shock = rng.poisson(config.shock_rate_per_day * wd, B)
    nd, ns = int(n_drift.sum()), int(n_shock.sum())
    t = np.concatenate([rng.random(nd), rng.random(ns)])
    drift_scale = _per_event(post, config.drift_scale, config.regime_drift_scale)
    shock_scale = _per_event(post, config.shock_scale, config.regime_shock_scale)
    if isinstance(drift_scale, np.ndarray):
        drift_scale = np.repeat(drift_scale, n_drift)
    if isinstance(shock_scale, np.ndarray):
        shock_scale = np.repeat(shock_scale, n_shock)
    dx = np.concatenate([rng.normal(0.0, drift_scale, nd), rng.normal(0.0, shock_scale, ns)])
    dy = np.concatenate(
        [
            rng.normal(0.0, config.total_drift_scale, nd),
            rng.normal(0.0, config.total_shock_scale, ns),
        ]
    )
    u_margin, u_total = rng.random(B), rng.random(B)

    je = np.concatenate([np.repeat(np.arange(B), n_drift), np.repeat(np.arange(B), n_shock)])
    jt = 1 + np.floor(t * (W - 1)).astype(np.int64)
    shock = np.concatenate([np.zeros(nd, dtype=bool), np.ones(ns, dtype=bool)])
    order = np.argsort(je * _STRIDE + jt, kind="stable")
    je, jt, dx, dy, shock = je[order], jt[order], dx[order], dy[order], shock[order]
    jt = _strictly_increasing(je, jt)
    keep = jt < W
    je, jt, dx, dy, shock = je[keep], jt[keep], dx[keep], dy[keep], shock[keep]
    n_base_shocks = int(shock.sum())
    extra = np.zeros(len(je), dtype=bool)
    if post is not None and config.regime_shock_rate_per_day is not None:
        je, jt, dx, dy, shock, extra = _regime_shocks(config, block, post, (je, jt, dx, dy, shock))
    jkey = je * _STRIDE + jt
    jstart = np.searchsorted(jkey, np.arange(B + 1) * _STRIDE)
    cx, cy = np.concatenate([[0.0], np.cumsum(dx)]), np.concatenate([[0.0], np.cumsum(dy)])
    jx = x0[je] + cx[1:] - cx[jstart[je]]
    jy = y0[je] + cy[1:] - cy[jstart[je]]

    last = jstart[1:] - 1
    has = last >= jstart[:-1]
    x_final = np.where(has, jx[np.maximum(last, 0)] if len(jx) else 0.0, x0)
    y_final = np.where(has, jy[np.maximum(last, 0)] if len(jy) else 0.0, y0)
    p = _probabilities(x_final, y_final, config.draw)
    margin = p["mu"] + MARGIN_SCALE * np.log(u_margin / (1.0 - u_margin))
    if config.draw:
        m = np.rint(margin)  # draw iff |margin| < 0.5, as the draw probability says
    else:
        m = np.where(margin > 0, 1.0, -1.0) * np.maximum(1.0, np.rint(np.abs(margin)))
    total = np.maximum(
        np.abs(m), np.rint(p["total"] + TOTAL_SCALE * np.log(u_total / (1.0 - u_total)))
    )
    total += (total - np.abs(m)) % 2  # same parity as the margin, so scores are integers
    return _Truth(
        x0=x0,
        y0=y0,
        home=home,
        away=away,
        je=je,
        jt=jt,
        jx=jx,
        jy=jy,
        jshock=shock,
        jkey=jkey,
        jstart=jstart,
        home_score=(total + m) / 2,
        away_score=(total - m) / 2,
        jextra=extra,
        n_base_shocks=n_base_shocks,
    )


@dataclass
class _Quotes:
    """One row per price: event (global index), book, slot, point, price, times in ns."""

    event: np.ndarray
    book: np.ndarray
    slot: np.ndarray
    point: np.ndarray
    price: np.ndarray
    observed_ns: np.ndarray
    ingested_ns: np.ndarray


def _reactions(
    config: SimulatorConfig, react: np.ndarray, lag: np.ndarray, shock_e: np.ndarray
) -> np.ndarray:
    """Delays (ms) of each book's re-quote after each shock, from exponential draws."""
    nb_s = len(config.sharp_books)
    # Retail follows the (first) sharp book after its lag plus its own reaction time, both
    # scaled by the dial: at arbitrage_rate 0 every book re-prices at the same moment.
    react[:, nb_s:] *= config.arbitrage_rate
    if nb_s:
        react[:, nb_s:] += react[:, :1]
    react += lag[shock_e]
    return react


def _simulate_quotes(
    config: SimulatorConfig, block: int, truth: _Truth, lo: int, hi: int, open_ms: np.ndarray
) -> _Quotes:
    """Quotes of the block's local events [lo, hi); `open_ms` is indexed by local event."""
    B, W, wd = BLOCK_EVENTS, _window_ms(config), config.days_before
    nb_s, nb_r = len(config.sharp_books), len(config.retail_books)
    nb = nb_s + nb_r
    dial = config.arbitrage_rate
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1, block, 1)))
    post = _new_regime(config, block)

    lag = np.zeros((B, nb))
    lag_lo, lag_hi = config.retail_lag_minutes
    if post is not None and config.regime_retail_lag_minutes is not None:
        new_lo, new_hi = config.regime_retail_lag_minutes
        lag_lo, lag_hi = (
            np.where(post, new_lo, lag_lo)[:, None],
            np.where(post, new_hi, lag_hi)[:, None],
        )
    lag[:, nb_s:] = rng.uniform(lag_lo, lag_hi, (B, nb_r)) * 60_000.0 * dial
    open_t = rng.random((B, nb)) * OPEN_WINDOW_MS
    n_reg = rng.poisson(config.mean_quotes_per_book_per_day * wd, (B, nb))
    reg_t = rng.random(int(n_reg.sum())) * W
    base = truth.jshock & ~truth.jextra
    shock_e, shock_t = truth.je[base], truth.jt[base]
    # As many reaction rows as the base truth stream has shocks, so the draws after these
    # line up with a run without a regime change; shocks it thinned out leave rows unused.
    scale = config.reaction_minutes * 60_000.0
    n_base = truth.n_base_shocks
    react = _reactions(config, rng.exponential(scale, (n_base, nb))[: len(shock_e)], lag, shock_e)
    n_mis = rng.poisson(config.mispricing_rate_per_day * dial * wd, (B, nb_r))
    m = int(n_mis.sum())
    mis_t = rng.random(m) * W
    mis_shift = rng.uniform(*config.mispricing_scale, m) * np.where(rng.random(m) < 0.5, -1.0, 1.0)
    mis_fix = mis_t + rng.exponential(config.mispricing_minutes * 60_000.0, m)

    flat_reg = np.repeat(np.arange(B * nb), n_reg.ravel())
    flat_mis = np.repeat(np.arange(B * nb_r), n_mis.ravel())
    mis_e, mis_b = flat_mis // max(nb_r, 1), nb_s + flat_mis % max(nb_r, 1)
    e = np.concatenate(
        [np.repeat(np.arange(B), nb), flat_reg // nb, np.repeat(shock_e, nb), mis_e, mis_e]
    )
    b = np.concatenate(
        [
            np.tile(np.arange(nb), B),
            flat_reg % nb,
            np.tile(np.arange(nb), len(shock_e)),
            mis_b,
            mis_b,
        ]
    )
    t = np.concatenate(
        [open_t.ravel(), reg_t, np.repeat(shock_t, nb) + react.ravel(), mis_t, mis_fix]
    )
    shift = np.concatenate([np.zeros(len(t) - 2 * m), mis_shift, np.zeros(m)])
    max_ingest = int(config.max_ingest_delay_seconds * 1000) + 1
    ingest = rng.integers(0, max_ingest, len(t) + (n_base - len(shock_e)) * nb)
    if n_base > len(shock_e):  # drop the delays of thinned shocks' rows (the tail: new regime)
        used = len(open_t.ravel()) + len(reg_t) + len(shock_e) * nb
        ingest = np.concatenate([ingest[:used], ingest[used + (n_base - len(shock_e)) * nb :]])
    if truth.jextra.any():  # the regime's added shocks: quotes from a stream of their own
        x_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(1, block, 3)))
        x_e, x_t = truth.je[truth.jextra], truth.jt[truth.jextra]
        x_react = _reactions(config, x_rng.exponential(scale, (len(x_e), nb)), lag, x_e)
        e = np.concatenate([e, np.repeat(x_e, nb)])
        b = np.concatenate([b, np.tile(np.arange(nb), len(x_e))])
        t = np.concatenate([t, np.repeat(x_t, nb) + x_react.ravel()])
        shift = np.concatenate([shift, np.zeros(len(x_e) * nb)])
        ingest = np.concatenate([ingest, x_rng.integers(0, max_ingest, len(x_e) * nb)])
    t = np.floor(t).astype(np.int64)

    sel = (e >= lo) & (e < hi)
    e, b, t, shift, ingest = e[sel], b[sel], t[sel], shift[sel], ingest[sel]
    group = e * nb + b
    order = np.argsort(group * _STRIDE + t, kind="stable")
    e, b, t, shift, ingest, group = (
        e[order],
        b[order],
        t[order],
        shift[order],
        ingest[order],
        group[order],
    )
    t = _strictly_increasing(group, t)
    keep = t < W  # no in-play quotes: reactions after kickoff never happen
    e, b, t, shift, ingest = e[keep], b[keep], t[keep], shift[keep], ingest[keep]
    order = np.argsort((e * _STRIDE + t) * nb + b, kind="stable")
    e, b, t, shift, ingest = e[order], b[order], t[order], shift[order], ingest[order]

    seen = np.maximum(t - np.floor(lag[e, b]).astype(np.int64), 0)
    x, y = truth.level(e, seen)
    probs, points = _slot_matrices(_probabilities(x + shift, y, config.draw), config.draw)
    k = probs.shape[1]
    margin = config.margins()[b]
    if post is not None and config.regime_retail_margin is not None:
        margin = np.where(post[e], config.margins(regime=True)[b], margin)
    price = 1.0 / (np.clip(probs, 1e-3, 1.0) * (1.0 + margin)[:, None])
    price = np.clip(np.round(price, 2), MIN_PRICE, MAX_PRICE)
    observed_ms = open_ms[e] + t
    return _Quotes(
        event=np.repeat(e + block * B, k),
        book=np.repeat(b, k),
        slot=np.tile(np.arange(k), len(e)),
        point=points.ravel(),
        price=price.ravel(),
        observed_ns=np.repeat(observed_ms * _NS_PER_MS, k),
        ingested_ns=np.repeat((observed_ms + ingest) * _NS_PER_MS, k),
    )


# --------------------------------------------------------------------------- batches


def _commence_ms(config: SimulatorConfig, events: np.ndarray) -> np.ndarray:
    start_ms = pd.Timestamp(config.start).tz_convert("UTC").value // _NS_PER_MS
    spacing = _DAY_MS / config.kickoffs_per_day
    return start_ms + _window_ms(config) + np.round(events * spacing).astype(np.int64)


def _utc(ns: np.ndarray) -> pd.Series:
    return pd.Series(
        pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("M8[ns]")).tz_localize("UTC")
    )


def _batch_ranges(config: SimulatorConfig) -> Iterator[tuple[int, int]]:
    for lo in range(0, config.n_events, config.batch_events):
        yield lo, min(lo + config.batch_events, config.n_events)


def _blocks(lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
    """(block, local lo, local hi) covering global events [lo, hi)."""
    for block in range(lo // BLOCK_EVENTS, (hi - 1) // BLOCK_EVENTS + 1):
        base = block * BLOCK_EVENTS
        yield block, max(lo, base) - base, min(hi, base + BLOCK_EVENTS) - base


def _truth_frame(
    config: SimulatorConfig,
    truth: _Truth,
    block: int,
    lo: int,
    hi: int,
    event_ids: np.ndarray,
    first: int,
) -> pd.DataFrame:
    """Truth rows of local events [lo, hi): an opening row, then one row per change."""
    local = np.arange(lo, hi)
    sel = slice(truth.jstart[lo], truth.jstart[hi])
    e = np.concatenate([local, truth.je[sel]])
    t = np.concatenate([np.zeros(len(local), dtype=np.int64), truth.jt[sel]])
    x = np.concatenate([truth.x0[local], truth.jx[sel]])
    y = np.concatenate([truth.y0[local], truth.jy[sel]])
    shock = np.concatenate([np.zeros(len(local), dtype=bool), truth.jshock[sel]])
    order = np.argsort(e * _STRIDE + t, kind="stable")
    e, t, x, y, shock = e[order], t[order], x[order], y[order], shock[order]
    g = e + block * BLOCK_EVENTS
    observed_ms = _commence_ms(config, g) - _window_ms(config) + t
    p = _probabilities(x, y, config.draw)
    return pd.DataFrame(
        {
            "event_id": event_ids[g - first],
            "observed_at": _utc(observed_ms * _NS_PER_MS),
            "true_home_prob": p["home"],
            "true_draw_prob": p["draw"],
            "true_away_prob": p["away"],
            "expected_margin": p["mu"],
            "expected_total": p["total"],
            "spread_point": p["spread_point"],
            "true_home_cover_prob": p["cover"],
            "total_point": p["total_point"],
            "true_over_prob": p["over"],
            "is_shock": shock,
        }
    )


def _concat_quotes(parts: list[_Quotes]) -> _Quotes:
    if len(parts) == 1:
        return parts[0]
    return _Quotes(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Quotes)))


_STRING_COLUMNS = [
    "source",
    "load_id",
    "event_id",
    "bookmaker",
    "market",
    "outcome",
    "outcome_name",
    "source_file",
    "source_record",
]


def _arrow_strings(
    dictionary: np.ndarray, codes: np.ndarray | None, n: int
) -> pd.api.extensions.ExtensionArray:
    """A pyarrow-backed string column `dictionary[codes]` (all null when codes is None).

    Why: DuckDB scans Arrow strings 2-3x faster than Python str objects, and `take` on a
    small dictionary costs a memcpy instead of millions of Python refcount updates.
    """
    import pyarrow as pa

    if codes is None:
        return pd.arrays.ArrowStringArray(pa.nulls(n, pa.large_string()))
    values = pa.array(dictionary.tolist(), type=pa.large_string())
    return pd.arrays.ArrowStringArray(values.take(pa.array(codes.astype(np.int32, copy=False))))


def _quote_frame(
    config: SimulatorConfig,
    q: _Quotes,
    lo: int,
    event_ids: np.ndarray,
    home_names: np.ndarray,
    away_names: np.ndarray,
    trusted: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted, rejected): built directly when trusted, else via validate_candidates.

    Every string column is `dictionary[codes]`; the trusted frame keeps them as pyarrow
    strings (same values; missing = <NA>), the validated one as Python objects.
    """
    n = len(q.price)
    slots = _slots(config)
    kind = np.array([s[2] for s in slots])[q.slot]
    e = q.event - lo
    n_ev = len(event_ids)
    zeros = np.zeros(n, dtype=np.int32)
    strings: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
        "source": (np.array([SOURCE], dtype=object), zeros),
        "load_id": (np.array([config.load_id], dtype=object), zeros),
        "event_id": (event_ids, e),
        "bookmaker": (np.array(config.books, dtype=object), q.book),
        "market": (np.array([s[0] for s in slots], dtype=object), q.slot),
        "outcome": (np.array([s[1] for s in slots], dtype=object), q.slot),
        "outcome_name": (
            np.concatenate(
                [home_names, away_names, np.array(["Draw", "Over", "Under"], dtype=object)]
            ),
            np.where(kind == 0, e, np.where(kind == 1, n_ev + e, 2 * n_ev + kind - 2)),
        ),
        "source_file": (np.array([config.source_file], dtype=object), zeros),
        "source_record": (np.array([None], dtype=object), None),
    }
    columns: dict[str, object] = {
        "point": q.point,
        "price": q.price,
        "observed_at": _utc(q.observed_ns),
        "ingested_at": _utc(q.ingested_ns),
    }
    if not trusted:
        for name, (dictionary, codes) in strings.items():
            columns[name] = (
                dictionary[codes] if codes is not None else np.full(n, None, dtype=object)
            )
        commence = _commence_ms(config, q.event) * _NS_PER_MS
        columns.update(
            price_raw=q.price, commence_time=_utc(commence), reason=np.full(n, None, dtype=object)
        )
        candidates = pd.DataFrame(columns)[[*CANDIDATE_COLUMNS, "ingested_at"]]
        return validate_candidates(candidates, load_id=config.load_id)
    for name, (dictionary, codes) in strings.items():
        columns[name] = _arrow_strings(dictionary, codes, n)
    columns["in_play"] = np.zeros(n, dtype=bool)
    columns["last_update"] = pd.Series(pd.NaT, index=pd.RangeIndex(n), dtype="datetime64[ns, UTC]")
    return pd.DataFrame(columns)[QUOTE_COLUMNS], empty_frame(REJECT_COLUMNS)


def _event_ids(config: SimulatorConfig, lo: int, hi: int) -> np.ndarray:
    return np.array([f"sim:{config.seed}:{i}" for i in range(lo, hi)], dtype=object)


def _batch(
    config: SimulatorConfig, lo: int, hi: int, strengths: np.ndarray, *, quotes: bool, trusted: bool
) -> tuple[ParseResult | None, pd.DataFrame]:
    event_ids = _event_ids(config, lo, hi)
    team_names = np.array([f"Team {i + 1}" for i in range(config.n_teams)], dtype=object)
    truths, quote_parts, home, away, hs, as_ = [], [], [], [], [], []
    for block, b_lo, b_hi in _blocks(lo, hi):
        truth = _simulate_truth(config, block, strengths)
        truths.append(_truth_frame(config, truth, block, b_lo, b_hi, event_ids, lo))
        home.append(truth.home[b_lo:b_hi])
        away.append(truth.away[b_lo:b_hi])
        hs.append(truth.home_score[b_lo:b_hi])
        as_.append(truth.away_score[b_lo:b_hi])
        if quotes:
            open_ms = _commence_ms(
                config, np.arange(BLOCK_EVENTS) + block * BLOCK_EVENTS
            ) - _window_ms(config)
            quote_parts.append(_simulate_quotes(config, block, truth, b_lo, b_hi, open_ms))
    truth_frame = pd.concat(truths, ignore_index=True) if len(truths) > 1 else truths[0]
    if not quotes:
        return None, truth_frame

    home_names, away_names = team_names[np.concatenate(home)], team_names[np.concatenate(away)]
    commence_ms = _commence_ms(config, np.arange(lo, hi))
    commence = _utc(commence_ms * _NS_PER_MS)
    events = pd.DataFrame(
        {
            "event_id": event_ids,
            "source": SOURCE,
            "sport": config.sport,
            "league": "SIM",
            "season": commence.dt.year.astype(str).to_numpy(dtype=object),
            "commence_time": commence,
            "home_team": home_names,
            "away_team": away_names,
        }
    )[EVENT_COLUMNS]
    results = pd.DataFrame(
        {
            "event_id": event_ids,
            "source": SOURCE,
            "home_score": np.concatenate(hs),
            "away_score": np.concatenate(as_),
            "resolved_at": commence + MATCH_DURATION,
        }
    )[RESULT_COLUMNS]
    q = _concat_quotes(quote_parts)
    accepted, rejected = _quote_frame(config, q, lo, event_ids, home_names, away_names, trusted)
    result = ParseResult(
        quotes=accepted,
        rejected=rejected,
        events=events,
        results=results,
        prices_read=len(q.price),
        files=[config.source_file],
        notes={"truth": truth_frame},
    )
    return result, truth_frame


# --------------------------------------------------------------------------- public API


def iter_batches(
    config: SimulatorConfig, *, trusted: bool = False, prefetch: bool = False
) -> Iterator[ParseResult]:
    """Bounded batches of `batch_events` events each, for streaming into one store load.

    `trusted=True` builds the canonical quote frame directly (simulated quotes are valid
    by construction) instead of running `validate_candidates`: the same rows and values,
    with string columns as pyarrow strings (missing = <NA>) because DuckDB ingests those
    several times faster. `prefetch=True` simulates the next batch in a background
    thread while the caller consumes the current one (numpy, pyarrow and DuckDB release
    the GIL, so generation overlaps the store's insert); at most two batches are alive.
    Each batch carries its own truth rows in `notes["truth"]`.
    """
    strengths = _team_strengths(config)
    ranges = list(_batch_ranges(config))

    def make(lo: int, hi: int) -> ParseResult:
        result, _ = _batch(config, lo, hi, strengths, quotes=True, trusted=trusted)
        assert result is not None
        return result

    if not prefetch or len(ranges) < 2:
        for lo, hi in ranges:
            yield make(lo, hi)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="simulator") as pool:
        pending = pool.submit(make, *ranges[0])
        try:
            for nxt in [*ranges[1:], None]:
                current = pending.result()
                pending = pool.submit(make, *nxt) if nxt is not None else None
                yield current
                del current
        finally:
            if pending is not None:
                pending.cancel()


def iter_truth_batches(config: SimulatorConfig) -> Iterator[pd.DataFrame]:
    """The latent truth batch by batch, without simulating quotes (cheap at any size)."""
    strengths = _team_strengths(config)
    for lo, hi in _batch_ranges(config):
        yield _batch(config, lo, hi, strengths, quotes=False, trusted=True)[1]


def simulate_truth(config: SimulatorConfig) -> pd.DataFrame:
    """All truth rows: (event_id, observed_at, true_*_prob, expected_*, lines, is_shock).

    A step function per event: the truth at time t is the last row with observed_at <= t.
    """
    frames = list(iter_truth_batches(config))
    return pd.concat(frames, ignore_index=True) if frames else _empty_truth()


def _empty_truth() -> pd.DataFrame:
    cfg = SimulatorConfig(n_events=1)
    return next(iter_truth_batches(cfg)).iloc[0:0]


def generate(config: SimulatorConfig | None = None, *, trusted: bool = False) -> ParseResult:
    """A whole (small) simulated market in memory; `notes["truth"]` holds the latent truth."""
    config = config or SimulatorConfig()
    batches = list(iter_batches(config, trusted=trusted))
    result = combine(batches)
    if not batches:
        result.rejected = empty_frame(REJECT_COLUMNS)
        result.quotes = empty_frame(QUOTE_COLUMNS)
    result.files = [config.source_file]
    result.notes = {
        "truth": pd.concat([b.notes["truth"] for b in batches], ignore_index=True)
        if batches
        else _empty_truth(),
        "config": asdict(config),
        "load_id": config.load_id,
    }
    return result
