"""The shared validator: every candidate is accepted or rejected with the right reason."""

import math

import pandas as pd
import pytest

from odds_pipeline.market.quotes import (
    CANDIDATE_COLUMNS,
    QUOTE_COLUMNS,
    REJECT_COLUMNS,
    validate_candidates,
)

T0 = pd.Timestamp("2024-01-01T12:00:00Z")
KICKOFF = pd.Timestamp("2024-01-02T15:00:00Z")


def candidate(**overrides):
    row = {
        "source": "test",
        "event_id": "e1",
        "bookmaker": "book",
        "market": "h2h",
        "outcome": "home",
        "outcome_name": "Home FC",
        "point": math.nan,
        "price": 2.0,
        "price_raw": "2.0",
        "observed_at": T0,
        "commence_time": KICKOFF,
        "source_file": "f.csv",
        "source_record": "line 2",
        "reason": None,
    }
    row.update(overrides)
    return row


def run(rows, **kwargs):
    frame = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)
    return validate_candidates(frame, load_id="test:f.csv", ingested_at=T0, **kwargs)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"reason": "unparseable_price", "price": math.nan}, "unparseable_price"),
        ({"price": 1.0000000004656613, "price_raw": "-2147483648"}, "sentinel_price"),
        ({"price": math.nan}, "non_finite_price"),
        ({"price": math.inf}, "non_finite_price"),
        ({"price": 1.0}, "price_not_above_one"),
        ({"price": 0.5}, "price_not_above_one"),
        ({"price": 5000.0}, "price_above_max"),
        ({"market": "player_points"}, "unknown_market"),
        ({"outcome": "draw", "market": "totals"}, "unknown_outcome"),
        ({"outcome": None}, "unknown_outcome"),
        ({"observed_at": pd.NaT}, "missing_timestamp"),
        ({"observed_at": KICKOFF + pd.Timedelta(minutes=5)}, "in_play"),
    ],
)
def test_each_bad_record_is_rejected_with_its_reason(overrides, reason):
    quotes, rejected = run([candidate(), candidate(event_id="e2", **overrides)])
    assert len(quotes) == 1 and quotes.loc[0, "event_id"] == "e1"
    assert rejected["reason"].tolist() == [reason]
    assert (
        rejected.loc[0, "source_file"] == "f.csv" and rejected.loc[0, "source_record"] == "line 2"
    )
    assert rejected.loc[0, "raw"]  # the raw record is kept


def test_in_play_is_kept_and_flagged_when_asked():
    quotes, rejected = run(
        [candidate(observed_at=KICKOFF + pd.Timedelta(minutes=5))], keep_in_play=True
    )
    assert rejected.empty
    assert bool(quotes.loc[0, "in_play"]) is True


def test_kickoff_instant_is_still_pre_match():
    quotes, rejected = run([candidate(observed_at=KICKOFF)])
    assert rejected.empty and not bool(quotes.loc[0, "in_play"])


def test_exact_duplicates_and_conflicts():
    rows = [
        candidate(),
        candidate(source_record="line 3"),
        candidate(price=2.1, price_raw="2.1", source_record="line 4"),
    ]
    quotes, rejected = run(rows)
    assert len(quotes) == 1 and quotes.loc[0, "source_record"] == "line 2"
    assert rejected.set_index("source_record")["reason"].to_dict() == {
        "line 3": "duplicate",
        "line 4": "conflicting_duplicate",
    }


def test_a_rejected_row_does_not_make_the_next_one_a_duplicate():
    rows = [candidate(price=math.nan, source_record="line 2"), candidate(source_record="line 3")]
    quotes, rejected = run(rows)
    assert quotes["source_record"].tolist() == ["line 3"]
    assert rejected["reason"].tolist() == ["non_finite_price"]


def test_counts_add_up_and_columns_are_canonical():
    rows = [
        candidate(event_id=f"e{i}", price=p) for i, p in enumerate([2.0, 0.9, math.nan, 3.0, 1.0])
    ]
    quotes, rejected = run(rows)
    assert len(quotes) + len(rejected) == len(rows)
    assert list(quotes.columns) == QUOTE_COLUMNS
    assert list(rejected.columns) == REJECT_COLUMNS
    assert str(quotes["observed_at"].dtype) == "datetime64[ns, UTC]"


def test_missing_candidate_columns_is_a_programming_error():
    with pytest.raises(ValueError, match="without columns"):
        validate_candidates(pd.DataFrame({"source": ["x"]}), load_id="x", ingested_at=T0)
