"""Point-in-time retrieval against a brute-force reference, and proof the tests bite.

The reference scans every feature row for every entity row in plain Python and applies the
rule of DESIGN §3 literally; the store must agree with it row for row on generated data
with exact ties, late rows, gaps beyond the TTL, NULL values, NULL points and unknown
entities, in both knowledge modes, and on 10,000 probes of the real change logs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import odds_pipeline.features.feature_store as fs_mod
from odds_pipeline.features.feature_store import FeatureStore
from odds_pipeline_tests.conftest import SHARED_DATA, needs_shared_data

BASE = datetime(2024, 1, 1, tzinfo=UTC)
KEYS = ("event_id", "bookmaker", "market", "outcome", "point")
FEATURES = ("price", "note")


def ts(minutes: int | None) -> datetime | None:
    return None if minutes is None else BASE + timedelta(minutes=minutes)


# --------------------------------------------------------------------------- reference
def _lowest(value: object) -> tuple:
    """NULL sorts below every value, as in the store's tie-break."""
    return (False,) if value is None else (True, value)


def reference(
    rows: list[dict],
    entities: list[dict],
    *,
    keys: tuple[str, ...],
    ttl: int | None = None,
    delay: int = 0,
    knowledge: str = "observed",
    sequence: bool = False,
    rowid: bool = True,
) -> list[dict]:
    """DESIGN §3 read literally: scan all rows, keep the qualifying ones, take the max."""
    out = []
    for e in entities:
        t = e["as_of"]
        best, best_key = None, None
        if t is not None:
            for position, r in enumerate(rows):
                if any(r[k] != e[k] for k in keys):
                    continue
                if r["observed_at"] > t - delay:
                    continue
                if knowledge == "ingested" and (r["ingested_at"] is None or r["ingested_at"] > t):
                    continue
                order = (
                    r["observed_at"],
                    _lowest(r["ingested_at"]),
                    _lowest(r["seq"]) if sequence else (),
                    position if rowid else tuple(_lowest(r[f]) for f in FEATURES),
                )
                if best_key is None or order > best_key:
                    best, best_key = r, order
            if best is not None and ttl is not None and best["observed_at"] < t - ttl:
                best = None
        out.append(
            {
                "price": None if best is None else best["price"],
                "note": None if best is None else best["note"],
                "observed_at": None if best is None else best["observed_at"],
                "ingested_at": None if best is None else best["ingested_at"],
            }
        )
    return out


# --------------------------------------------------------------------------- fixtures
def build_store(rows: list[dict], *, as_view: bool = False, sequence: bool = False):
    """An in-memory DuckDB holding `rows` (times in minutes) as feature view `fv`."""
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute(
        "CREATE TABLE fv_rows (event_id VARCHAR, bookmaker VARCHAR, market VARCHAR, "
        "outcome VARCHAR, point DOUBLE, observed_at TIMESTAMPTZ, ingested_at TIMESTAMPTZ, "
        "seq BIGINT, price DOUBLE, note VARCHAR)"
    )
    if rows:
        frame = pd.DataFrame(
            {
                **{k: [r[k] for r in rows] for k in KEYS},
                "observed_at": pd.to_datetime([ts(r["observed_at"]) for r in rows], utc=True),
                "ingested_at": pd.to_datetime([ts(r["ingested_at"]) for r in rows], utc=True),
                "seq": pd.array([r["seq"] for r in rows], dtype="Int64"),
                "price": pd.array([r["price"] for r in rows], dtype="Float64"),
                "note": [r["note"] for r in rows],
            }
        )
        con.register("incoming", frame)
        con.execute("INSERT INTO fv_rows SELECT * FROM incoming")
        con.unregister("incoming")
    table = "fv_rows"
    if as_view:
        con.execute("CREATE VIEW fv_rows_view AS SELECT * FROM fv_rows")
        table = "fv_rows_view"
    store = FeatureStore(con)
    store.register_view(
        "fv",
        table,
        keys=list(KEYS),
        sequence="seq" if sequence else None,
        features=list(FEATURES),
    )
    return store


def entity_frame(entities: list[dict], keys: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame({k: [e[k] for e in entities] for k in keys})
    frame["as_of"] = pd.to_datetime([ts(e["as_of"]) for e in entities], utc=True)
    return frame


def _same(a: object, b: object) -> bool:
    a_null = a is None or a is pd.NaT or (isinstance(a, float) and np.isnan(a))
    b_null = b is None or b is pd.NaT or (isinstance(b, float) and np.isnan(b))
    if a_null or b_null:
        return a_null and b_null
    return a == b


def mismatches(
    store: FeatureStore,
    rows: list[dict],
    entities: list[dict],
    *,
    keys: tuple[str, ...] = KEYS,
    ttl: int | None = None,
    delay: int = 0,
    knowledge: str = "observed",
    sequence: bool = False,
    rowid: bool = True,
    chunk_rows: int = 2_000_000,
) -> list[tuple]:
    got = store.get_historical_features(
        entity_frame(entities, keys),
        ["fv:price", "fv:note"],
        ttl=None if ttl is None else timedelta(minutes=ttl),
        source_delay=timedelta(minutes=delay),
        knowledge=knowledge,
        include_timestamps=True,
        chunk_rows=chunk_rows,
    )
    want = reference(
        rows,
        entities,
        keys=keys,
        ttl=ttl,
        delay=delay,
        knowledge=knowledge,
        sequence=sequence,
        rowid=rowid,
    )
    bad = []
    for i, w in enumerate(want):
        observed = got["fv__observed_at"].iloc[i]
        ingested = got["fv__ingested_at"].iloc[i]
        have = {
            "price": got["price"].iloc[i],
            "note": got["note"].iloc[i],
            "observed_at": None if pd.isna(observed) else observed.to_pydatetime(),
            "ingested_at": None if pd.isna(ingested) else ingested.to_pydatetime(),
        }
        expect = {**w, "observed_at": ts(w["observed_at"]), "ingested_at": ts(w["ingested_at"])}
        if not all(_same(have[c], expect[c]) for c in expect):
            bad.append((i, entities[i], have, expect))
    return bad


# --------------------------------------------------------------------------- strategies
# Small domains force many rows per key, exact ties on observed_at (and on ingested_at).
row_strategy = st.fixed_dictionaries(
    {
        "event_id": st.sampled_from(["e1", "e2"]),
        "bookmaker": st.sampled_from(["b1", "b2"]),
        "market": st.just("spreads"),
        "outcome": st.sampled_from(["home", "away"]),
        "point": st.sampled_from([None, 1.5]),
        "observed_at": st.integers(0, 30),
        # lag: 0 on time, small, late (ingested long after), negative (clock skew), unknown
        "lag": st.sampled_from([0, 0, 0, 1, 2, 20, -1, None]),
        "seq": st.one_of(st.none(), st.integers(0, 3)),
        "price": st.sampled_from([None, 1.5, 2.0, 2.5]),
        "note": st.sampled_from([None, "a", "b"]),
    }
).map(
    lambda r: {
        **{k: v for k, v in r.items() if k != "lag"},
        "ingested_at": None if r["lag"] is None else r["observed_at"] + r["lag"],
    }
)
entity_strategy = st.fixed_dictionaries(
    {
        "event_id": st.sampled_from(["e1", "e2", "e9"]),  # e9 has no data
        "bookmaker": st.sampled_from(["b1", "b2"]),
        "market": st.just("spreads"),
        "outcome": st.sampled_from(["home", "away"]),
        "point": st.sampled_from([None, 1.5]),
        "as_of": st.one_of(st.integers(-2, 45), st.just(None)),
    }
)
query_strategy = st.fixed_dictionaries(
    {
        "ttl": st.sampled_from([None, 0, 2, 10]),
        "delay": st.sampled_from([0, 0, 1, 5]),
        "knowledge": st.sampled_from(["observed", "ingested"]),
        "keys": st.sampled_from([KEYS, KEYS, ("event_id", "bookmaker")]),
    }
)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(
    rows=st.lists(row_strategy, max_size=30),
    entities=st.lists(entity_strategy, min_size=1, max_size=15),
    query=query_strategy,
    layout=st.sampled_from(["table", "table_seq", "view", "view_seq"]),
)
def test_matches_brute_force_reference(rows, entities, query, layout):
    sequence = layout.endswith("_seq")
    as_view = layout.startswith("view")
    store = build_store(rows, as_view=as_view, sequence=sequence)
    query = dict(query)
    keys = query.pop("keys")
    bad = mismatches(
        store, rows, entities, keys=keys, sequence=sequence, rowid=not as_view, **query
    )
    assert not bad, bad[:3]


@PROPERTY
@given(
    rows=st.lists(row_strategy, max_size=30),
    entities=st.lists(entity_strategy, min_size=1, max_size=15),
    query=query_strategy,
    sequence=st.booleans(),
)
def test_struct_order_key_path_matches_reference(rows, entities, query, sequence):
    """Tables whose time ranges do not fit the packed HUGEINT key use the STRUCT key."""
    store = build_store(rows, sequence=sequence)
    query = dict(query)
    keys = query.pop("keys")
    with mock.patch.object(fs_mod, "_PACK_BITS", 0):
        bad = mismatches(store, rows, entities, keys=keys, sequence=sequence, **query)
    assert not bad, bad[:3]


def _random_case(seed: int, n_rows: int = 400, n_entities: int = 300):
    """A fixed, dense data set with ties and late rows (for tests that must not flake)."""
    rng = np.random.default_rng(seed)
    rows, entities = [], []
    for _ in range(n_rows):
        o = int(rng.integers(0, 100))
        lag = int(rng.choice([0, 0, 1, 30, -1]))
        rows.append(
            {
                "event_id": str(rng.choice(["e1", "e2"])),
                "bookmaker": "b1",
                "market": "spreads",
                "outcome": str(rng.choice(["home", "away"])),
                "point": [None, 1.5][int(rng.integers(0, 2))],
                "observed_at": o,
                "ingested_at": o + lag,
                "seq": None,
                "price": float(rng.choice([1.5, 2.0, 2.5])),
                "note": str(rng.choice(["a", "b"])),
            }
        )
    for _ in range(n_entities):
        entities.append(
            {
                "event_id": str(rng.choice(["e1", "e2", "e9"])),
                "bookmaker": "b1",
                "market": "spreads",
                "outcome": str(rng.choice(["home", "away"])),
                "point": [None, 1.5][int(rng.integers(0, 2))],
                "as_of": int(rng.integers(-5, 110)),
            }
        )
    return rows, entities


def test_dense_case_matches_in_every_mode_and_chunking():
    rows, entities = _random_case(7)
    store = build_store(rows)
    for knowledge in ("observed", "ingested"):
        for ttl, delay in ((None, 0), (5, 0), (10, 3)):
            for chunk_rows in (2_000_000, 37):
                bad = mismatches(
                    store,
                    rows,
                    entities,
                    ttl=ttl,
                    delay=delay,
                    knowledge=knowledge,
                    chunk_rows=chunk_rows,
                )
                assert not bad, (knowledge, ttl, delay, chunk_rows, bad[:2])


def test_a_join_that_reads_the_future_is_caught(monkeypatch):
    """The comparison is not vacuous: flip the ASOF inequality and it fails loudly."""
    rows, entities = _random_case(11)
    store = build_store(rows)
    assert not mismatches(store, rows, entities)
    monkeypatch.setattr(fs_mod, "_ASOF_PROBE_OP", "<=")  # nearest row at or after as_of
    bad = mismatches(store, rows, entities)
    assert len(bad) > len(entities) // 4
    leaked = [b for b in bad if b[2]["observed_at"] is not None and b[1]["as_of"] is not None]
    assert any(b[2]["observed_at"] > ts(b[1]["as_of"]) for b in leaked)


def test_ignoring_ingested_at_is_caught():
    """Answering an "as known" question from "as observed" data leaks late rows: caught."""
    rows, entities = _random_case(13)
    store = build_store(rows)
    got = store.get_historical_features(
        entity_frame(entities, KEYS), ["fv:price", "fv:note"], include_timestamps=True
    )
    want = reference(rows, entities, keys=KEYS, knowledge="ingested")
    differ = [
        i
        for i, w in enumerate(want)
        if not _same(
            None if pd.isna(got["fv__observed_at"].iloc[i]) else got["fv__observed_at"].iloc[i],
            ts(w["observed_at"]),
        )
    ]
    assert differ, "late rows should make the two knowledge modes disagree"
    assert not mismatches(store, rows, entities, knowledge="ingested")


# --------------------------------------------------------------------------- named cases
def _seed_chapter_store() -> FeatureStore:
    rows = [
        {
            "event_id": "e1",
            "bookmaker": "b1",
            "market": "h2h",
            "outcome": "home",
            "point": None,
            "observed_at": minutes,
            "ingested_at": minutes,
            "seq": None,
            "price": price,
            "note": label,
        }
        for minutes, price, label in (
            (0, 1.9, "jan1"),  # Jan 1
            (31 * 24 * 60, 2.4, "feb1"),  # Feb 1
        )
    ]
    return build_store(rows)


@pytest.mark.parametrize("knowledge", ["observed", "ingested"])
def test_seed_chapter_leakage_case(knowledge):
    """Asked on Jan 15, the Jan 1 value comes back, never the Feb 1 one."""
    store = _seed_chapter_store()
    entity = pd.DataFrame(
        {
            "event_id": ["e1"],
            "bookmaker": ["b1"],
            "market": ["h2h"],
            "outcome": ["home"],
            "point": [None],
            "as_of": [pd.Timestamp("2024-01-15", tz="UTC")],
        }
    )
    got = store.get_historical_features(entity, ["fv:price", "fv:note"], knowledge=knowledge)
    assert got["note"].tolist() == ["jan1"]
    assert got["price"].tolist() == [1.9]


def test_same_query_twice_gives_the_same_answer_despite_ties():
    rows = [
        {
            "event_id": "e1",
            "bookmaker": "b1",
            "market": "h2h",
            "outcome": "home",
            "point": None,
            "observed_at": 5,
            "ingested_at": 5,
            "seq": None,
            "price": 1.5 + n / 10,
            "note": str(n),
        }
        for n in range(50)  # fifty rows tied on observed_at and ingested_at
    ]
    entities = [dict(rows[0], as_of=t) for t in range(0, 20)] * 50
    store = build_store(rows)
    frame = entity_frame(entities, KEYS)
    first = store.get_historical_features(frame, ["fv:*"])
    for _ in range(3):
        pd.testing.assert_frame_equal(first, store.get_historical_features(frame, ["fv:*"]))
    assert set(first["note"].dropna()) == {"49"}  # the last written row wins a full tie


def test_null_point_matches_null_point_and_nan_is_null():
    rows, _ = _random_case(3, n_rows=50)
    store = build_store(rows)
    probe = {"event_id": "e1", "bookmaker": "b1", "market": "spreads", "outcome": "home"}
    frame = pd.DataFrame([{**probe, "point": p} for p in (None, np.nan, 1.5)])
    frame["as_of"] = ts(200)
    got = store.get_historical_features(frame, "fv:price", include_timestamps=True)
    want = reference(rows, [{**probe, "point": p, "as_of": 200} for p in (None, 1.5)], keys=KEYS)
    assert want[0]["observed_at"] is not None and want[1]["observed_at"] is not None
    assert got["price"].tolist() == [want[0]["price"], want[0]["price"], want[1]["price"]]


def test_as_of_naive_is_utc_and_other_zones_are_converted():
    rows, entities = _random_case(5, n_rows=100, n_entities=50)
    store = build_store(rows)
    aware = entity_frame(entities, KEYS)
    naive = aware.assign(as_of=aware["as_of"].dt.tz_localize(None))
    tokyo = aware.assign(as_of=aware["as_of"].dt.tz_convert("Asia/Tokyo"))
    base = store.get_historical_features(aware, ["fv:price"])["price"]
    for frame in (naive, tokyo):
        got = store.get_historical_features(frame, ["fv:price"])["price"]
        pd.testing.assert_series_equal(got, base)


def test_order_and_index_are_kept_and_entity_columns_untouched():
    rows, entities = _random_case(9, n_rows=100, n_entities=40)
    store = build_store(rows)
    frame = entity_frame(entities, KEYS)
    frame.index = pd.Index(np.arange(len(frame))[::-1] * 3, name="probe")
    frame["extra"] = np.arange(len(frame))
    got = store.get_historical_features(frame, ["fv:price"], chunk_rows=7)
    pd.testing.assert_frame_equal(got[frame.columns], frame)
    want = reference(rows, entities, keys=KEYS)
    assert [_same(g, w["price"]) for g, w in zip(got["price"], want, strict=True)] == [True] * 40


def test_errors_are_clear():
    store = build_store(_random_case(1, n_rows=10)[0])
    with pytest.raises(ValueError, match="as_of"):
        store.get_historical_features(pd.DataFrame({"event_id": ["e1"]}), ["fv:price"])
    frame = pd.DataFrame({"event_id": ["e1"], "as_of": [ts(1)]})
    with pytest.raises(ValueError, match="view:column"):
        store.get_historical_features(frame, ["price"])
    with pytest.raises(ValueError, match="no feature"):
        store.get_historical_features(frame, ["fv:nope"])
    with pytest.raises(KeyError, match="register"):
        store.get_historical_features(frame, ["missing_view:x"])
    with pytest.raises(ValueError, match="shares no key"):
        store.get_historical_features(pd.DataFrame({"as_of": [ts(1)]}), ["fv:price"])
    with pytest.raises(ValueError, match="knowledge"):
        store.get_historical_features(frame, ["fv:price"], knowledge="future")


def test_feature_names_plain_unless_ambiguous():
    rows, entities = _random_case(2, n_rows=30, n_entities=5)
    store = build_store(rows)
    store.register_view("fv2", "fv_rows", keys=list(KEYS), features=["price"])
    frame = entity_frame(entities, KEYS)
    got = store.get_historical_features(frame, ["fv:price", "fv:note", "fv2:price"])
    assert list(got.columns[-3:]) == ["fv__price", "note", "fv2__price"]
    pd.testing.assert_series_equal(got["fv__price"], got["fv2__price"], check_names=False)
    got = store.get_historical_features(frame, ["fv:note"], full_feature_names=True)
    assert got.columns[-1] == "fv__note"


def test_auto_registered_view_and_empty_entity_frame():
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE quote_features AS SELECT 'e1' AS event_id, 'b1' AS bookmaker, "
        "TIMESTAMPTZ '2024-01-01' AS observed_at, TIMESTAMPTZ '2024-01-01' AS ingested_at, "
        "0.5 AS implied_prob"
    )
    store = FeatureStore(con)
    frame = pd.DataFrame({"event_id": ["e1"], "bookmaker": ["b1"], "as_of": ["2024-01-02"]})
    got = store.get_historical_features(frame, ["quote_features:implied_prob"])
    assert got["implied_prob"].tolist() == [0.5]
    assert store.view("quote_features").keys == ("event_id", "bookmaker")
    empty = store.get_historical_features(frame.iloc[:0], ["quote_features:*"])
    assert len(empty) == 0 and "implied_prob" in empty.columns


# --------------------------------------------------------------------------- online
def test_online_features_are_the_latest_row_per_key(tmp_path):
    rows, entities = _random_case(17)
    path = tmp_path / "features.duckdb"
    con = duckdb.connect(str(path))
    build = build_store(rows)  # reuse the loader, then copy the table into a file
    frame = build._con.execute("SELECT * FROM fv_rows").df()
    con.register("frame", frame)
    con.execute("CREATE TABLE fv_rows AS SELECT * FROM frame")
    con.close()
    store = FeatureStore(path)
    store.register_view("fv", "fv_rows", keys=list(KEYS), features=list(FEATURES))
    with pytest.raises(LookupError, match="materialize"):
        store.get_online_features(entity_frame(entities, KEYS), "fv:price")
    assert store.materialize_online("fv") == len({tuple(r[k] for k in KEYS) for r in rows})
    got = store.get_online_features(
        entity_frame(entities, KEYS).drop(columns="as_of"), ["fv:*"], include_timestamps=True
    )
    latest = reference(rows, [dict(e, as_of=10**6) for e in entities], keys=KEYS)
    for i, w in enumerate(latest):
        assert _same(got["price"].iloc[i], w["price"]) and _same(got["note"].iloc[i], w["note"])
        observed = got["fv__observed_at"].iloc[i]
        assert _same(None if pd.isna(observed) else observed.to_pydatetime(), ts(w["observed_at"]))


# --------------------------------------------------------------------------- real data
CHANGE_LOGS = ("mlb", "wnba")


def _load_change_logs(con: duckdb.DuckDBPyConnection) -> None:
    """The real logs as a view (no rowid) and, with injected corrections, as a table."""
    files = ", ".join(
        f"'{SHARED_DATA / 'odds-api' / 'changes' / f'{name}_changes.parquet'}'"
        for name in CHANGE_LOGS
    )
    con.execute(
        f"""CREATE VIEW changes AS SELECT event_id, bookmaker, market, outcome, point,
        snapshot_time::TIMESTAMPTZ AS observed_at, snapshot_time::TIMESTAMPTZ AS ingested_at,
        price FROM read_parquet([{files}])"""
    )
    # Corrections: 2,000 rows re-sent 90 s later with another price for the same instant,
    # so exact observed_at ties and late rows occur at real scale.
    con.execute(
        """CREATE TABLE changes_corrected AS
        SELECT * FROM changes
        UNION ALL
        SELECT event_id, bookmaker, market, outcome, point, observed_at,
               ingested_at + INTERVAL 90 SECOND, price + 1
        FROM (SELECT * FROM changes ORDER BY hash(event_id, bookmaker, outcome, observed_at)
              LIMIT 2000)"""
    )


def _clean(values: pd.Series) -> list:
    """Python values with NULL/NaN as None (NaN never equals itself as a dict key)."""
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in values]


class IndexedReference:
    """Independent reference for the real logs: rows sorted per key, then binary search.

    Rows are sorted by (key, observed_at, ingested_at, position); the answer for a key at
    ``t`` is the last row of the key with observed_at <= t - delay (and, "as known", the
    last of those with ingested_at <= t).
    """

    def __init__(self, frame: pd.DataFrame):
        codes = frame.groupby(list(KEYS), dropna=False, sort=False).ngroup().to_numpy()
        o = frame["o"].to_numpy()
        i = frame["i"].to_numpy()
        order = np.lexsort((np.arange(len(frame)), i, o, codes))
        self.codes = codes[order]
        self.o = o[order]
        self.i = i[order]
        self.price = np.array(_clean(frame["price"]), dtype=object)[order]
        first = np.unique(codes, return_index=True)[1]
        uniques = frame.iloc[first]
        self.code_of = dict(
            zip(
                zip(*(_clean(uniques[k]) for k in KEYS), strict=True),
                codes[first].tolist(),
                strict=True,
            )
        )

    def lookup(self, key, t, *, ttl=None, delay=0, knowledge="observed"):
        code = self.code_of.get(key)
        if code is None:
            return None, None
        lo = int(np.searchsorted(self.codes, code, side="left"))
        hi = int(np.searchsorted(self.codes, code, side="right"))
        cut = lo + int(np.searchsorted(self.o[lo:hi], t - delay, side="right"))
        pos = cut - 1
        if knowledge == "ingested":
            while pos >= lo and self.i[pos] > t:
                pos -= 1
        if pos < lo:
            return None, None
        if ttl is not None and self.o[pos] < t - ttl:
            return None, None
        return self.price[pos], int(self.o[pos])


@pytest.fixture(scope="module")
def real_logs():
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    _load_change_logs(con)
    yield con
    con.close()


@needs_shared_data
@pytest.mark.shared_data
@pytest.mark.parametrize("relation", ["changes", "changes_corrected"])
def test_ten_thousand_real_probes_match_the_reference(relation, real_logs):
    con = real_logs
    dupes = con.execute(
        "SELECT count(*) FROM (SELECT 1 FROM changes GROUP BY event_id, bookmaker, market, "
        "outcome, point, observed_at HAVING count(*) > 1)"
    ).fetchall()[0][0]
    assert dupes == 0  # the raw logs have no exact ties: the corrected table adds them
    frame = con.execute(
        f"SELECT *, epoch_us(observed_at) AS o, epoch_us(ingested_at) AS i FROM {relation}"
    ).df()
    ref = IndexedReference(frame)

    rng = np.random.default_rng(2024)
    n = 10_000
    pick = rng.integers(0, len(frame), n)
    probes = frame.iloc[pick][list(KEYS)].reset_index(drop=True)
    probes["point"] = probes["point"].astype("float64")
    unknown = rng.random(n) < 0.05
    probes.loc[unknown, "event_id"] = "no-such-event"
    offsets = rng.choice([0, 0, -1, 1, -600, 600, -7200, 7200, 86400], n) * 1_000_000
    t_us = frame["o"].to_numpy()[pick] + offsets
    probes["as_of"] = pd.to_datetime(t_us, unit="us", utc=True)

    store = FeatureStore(con)
    store.register_view("chg", relation, keys=list(KEYS), features=["price"])
    cases = [
        {"knowledge": "observed"},
        {
            "knowledge": "observed",
            "ttl": timedelta(minutes=30),
            "source_delay": timedelta(minutes=5),
        },
        {"knowledge": "ingested"},
    ]
    probe_keys = list(zip(*(_clean(probes[k]) for k in KEYS), strict=True))
    for case in cases:
        got = store.get_historical_features(probes, ["chg:price"], include_timestamps=True, **case)
        got_price = got["price"].tolist()
        got_observed = got["chg__observed_at"].tolist()
        ttl = case.get("ttl")
        delay = case.get("source_delay", timedelta(0))
        bad = 0
        found = 0
        for row, key in enumerate(probe_keys):
            price, o = ref.lookup(
                key,
                int(t_us[row]),
                ttl=None if ttl is None else ttl // timedelta(microseconds=1),
                delay=delay // timedelta(microseconds=1),
                knowledge=case["knowledge"],
            )
            observed = got_observed[row]
            got_o = None if pd.isna(observed) else observed.value // 1000
            found += o is not None
            if got_o != o or not _same(got_price[row], price):
                bad += 1
        assert bad == 0, (relation, case, bad)
        assert found > n // 4  # many probes find a value: the comparison is not vacuous
