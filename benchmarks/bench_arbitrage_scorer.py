"""Issue #10 part 2: an arbitrage scorer against the rules and the trees, pooled and per league.

Run: .venv/bin/python benchmarks/bench_arbitrage_scorer.py [options]

1. Build (cached): every change log of $ODDS_SHARED_DATA/odds-api/changes (--leagues) is
   loaded in chunks of --chunk-events events (pair samples never cross events, so chunks
   are exact and memory stays bounded), in-play quotes deleted (pre-match only), quote
   and pair features for every pair of books, ``build_arbitrage_pair_sequences`` with cut
   stride ``--train-stride`` (denser cuts for the training window). Each chunk is saved
   with ``SequenceDataset.save`` under --cache (default /tmp/arbscorer) and reused.
2. Split per league by event commence time, 70/15/15 of the league's events (pooled =
   the union of the leagues' splits). Validation and test keep every ``--eval-every``-th
   cut of a pair key (cut stride ``train_stride * eval_every``: issue #4's densities);
   train keeps every cut, then every positive and a seeded subset of negatives up to
   --max-train-rows.
3. Scorers, all fit on train, chosen/stopped on validation, scored on the same test rows:
   the classical rules (orientation and the best rule chosen on validation:
   ``training.baselines.choose_rule``), gradient-boosted trees on window summaries +
   explicit inputs (``training.baselines.fit_trees``, early stopping on validation), and
   the DualStreamArbTransformer with the explicit inputs and book embeddings
   (``training.arbitrage_inputs``), epochs selected on validation AUC-PR (computed on
   every validation positive and --select-val-negatives of the negatives: CPU time).
   One transformer and one trees model for all leagues (pooled training); the rules are
   chosen per scope (each league, and pooled) on that scope's validation rows.
4. Report per league and pooled: positives, positive rate, AUC-PR of each, ratios to the
   best rule with event-level bootstrap 95% intervals (``registry.gates.
   paired_bootstrap_ratio``, metric auc_pr) and the verdict against the issue's target:
   ``registry.gates.baseline_gate_auc_pr`` passes (AUC-PR >= 1.2x the rule chosen on
   validation, lower bound > 1), the transformer is above the trees, and the scope has
   the gates' minimum evidence (200 test rows, 20 positives).
5. --rolling-origin K (default 0: off, the plain split above): a walk-forward evaluation.
   Per league, events ordered by commence time; fold i of K has its test window at
   [0.85 - s, 1 - s] of the events, validation the 15% just before it and train every
   event before that (expanding window), with s = (K - i) * 0.15 (K=3: tests at 55-70%,
   70-85%, 85-100%; the last fold is the plain split; events after a fold's test window
   are unused). Each fold runs steps 2-4 on its own windows (same thinning, train
   subsample, trees and transformer trained on its train, trees/epochs/rules chosen on
   its validation only) and is reported as the plain run is ("folds"). Then per scope
   the folds' test rows are pooled ("results"), each row scored by its own fold's models
   and by its own fold's chosen rule (a fold whose scope has no validation positive uses
   the rule chosen on that fold's pooled validation), every score ranked within its fold
   and scope first (``baselines.rank01``: the rule chosen can change by fold, and with it
   the unit of its raw value), and compared as in step 4 (event-level bootstrap: each
   event is in one fold's test window only). ``native_scores`` repeats the comparison on
   the raw outputs (probabilities; the rule's raw value in its validation orientation).
   Each fold trains its own scorers: K=3 took 12-20 min on 2 cores.

One JSON object on stdout (``_common.emit``), progress on stderr. CPU, one torch thread,
one OpenMP thread for the trees. Figures: BENCHMARKS.md, "Arbitrage scorer against the
rules and the trees (issue #10, part 2)".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import SHARED_DATA, emit, peak_rss_mb

from odds_pipeline.datasets import sequences as D

LEAGUES = ("mlb", "wnba", "kbo", "ncaaf", "worldcup")
# Cut strides: train every TRAIN_STRIDE-th instant of a pair key; validation/test keep every
# EVAL_EVERY-th of those cuts: validation/test at issue #4's densities (MLB 16, WNBA 4; NCAAF
# as MLB, KBO and World Cup as WNBA), train 4x (MLB, NCAAF) and 2x (the others) denser.
TRAIN_STRIDE = "mlb=4,ncaaf=4,*=2"
EVAL_EVERY = "mlb=4,ncaaf=4,*=2"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _r(value: Any, digits: int = 5) -> Any:
    if isinstance(value, dict):
        return {k: _r(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_r(v, digits) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else round(float(value), digits)
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


# --------------------------------------------------------------------------- building


def _per_league(spec: str, league: str) -> int:
    """``"mlb=4,wnba=2"`` (or one number for every league) -> the league's value."""
    values = dict(item.split("=") for item in spec.split(",")) if "=" in spec else {}
    return int(values.get(league, values.get("*", spec if "=" not in spec else 1)))


def _pair_config(args: argparse.Namespace, league: str) -> D.PairSequenceConfig:
    return D.PairSequenceConfig(
        max_len=args.max_len,
        horizon_minutes=args.horizon,
        cut_stride=_per_league(args.train_stride, league),
        min_len=args.min_len,
        max_book_pairs=55,  # every pair of the 11 books
    )


def _cache_key(league: str, args: argparse.Namespace) -> str:
    return (
        f"{league}_L{args.max_len}_m{args.min_len}_h{int(args.horizon)}"
        f"_s{_per_league(args.train_stride, league)}_c{args.chunk_events}"
    )


def _build_chunk(path: Path, events: list[str], cfg: D.PairSequenceConfig, tmp: Path):
    import duckdb

    from odds_pipeline.features import compute as F
    from odds_pipeline.ingestion.store import OddsStore

    part = tmp / "chunk.parquet"
    con0 = duckdb.connect()
    ids = ", ".join("'" + e.replace("'", "''") + "'" for e in events)
    con0.execute(
        f"COPY (SELECT * FROM read_parquet('{path}') WHERE event_id IN ({ids})) "
        f"TO '{part}' (FORMAT parquet)"
    )
    con0.close()
    db = tmp / "chunk.duckdb"
    for f in tmp.glob("chunk.duckdb*"):
        f.unlink()
    store = OddsStore(db)
    with store.connection() as con:
        con.execute("SET threads = 1")
        con.execute("SET memory_limit = '2GB'")
        F.load_odds_api_change_log(con, [part])
        con.execute("DELETE FROM odds_quotes WHERE in_play")
        F.compute_quote_features(con)
        F.compute_pair_features(con)
        ds = D.build_arbitrage_pair_sequences(con, cfg)
    for f in tmp.glob("chunk.*"):
        f.unlink()
    return ds


def build_league(league: str, args: argparse.Namespace) -> list[Path]:
    """Chunk folders of a league's pair dataset (built once, then read from the cache)."""
    import pyarrow.parquet as pq

    path = SHARED_DATA / "odds-api" / "changes" / f"{league}_changes.parquet"
    root = Path(args.cache) / _cache_key(league, args)
    done = root / "done.json"
    if done.exists():
        return [root / p for p in json.loads(done.read_text())["chunks"]]
    root.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(path, columns=["event_id", "commence_time"]).to_pandas()
    order = table.groupby("event_id")["commence_time"].min().sort_values(kind="stable")
    events = list(order.index)
    cfg = _pair_config(args, league)
    chunks: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="arbscorer_build_") as tmp:
        for i in range(0, len(events), args.chunk_events):
            sub = root / f"chunk{i // args.chunk_events:03d}"
            if (sub / "saved.txt").exists():
                chunks.append(sub.name)
                continue
            ds = _build_chunk(path, events[i : i + args.chunk_events], cfg, Path(tmp))
            if len(ds):
                ds.meta["league"] = league
                saved = ds.save(sub)
                (sub / "saved.txt").write_text(saved.name)
                chunks.append(sub.name)
            _log(
                f"{league}: events {i}..{i + args.chunk_events} -> {len(ds)} samples, "
                f"{int(ds.labels['arb_ahead'].sum()) if len(ds) else 0} positives "
                f"({time.perf_counter() - started:.0f}s)"
            )
            del ds
    done.write_text(
        json.dumps({"chunks": chunks, "build_s": round(time.perf_counter() - started, 1)})
    )
    return [root / c for c in chunks]


def _open(saved: Path) -> D.SequenceDataset:
    """A saved chunk, memory-mapped where the format allows it (rows are read on demand)."""
    return D.SequenceDataset.load(saved, verify=False, mmap=True)


# --------------------------------------------------------------------------- rows


KEY = ["event_id", "market", "line", "book_a", "book_b", "outcome_a"]
LABEL = "arb_ahead"


def _saved(folder: Path) -> Path:
    return folder / (folder / "saved.txt").read_text().strip()


def _index(leagues: list[str], args: argparse.Namespace) -> pd.DataFrame:
    """One row per built sample: league, chunk, row, key, commence, cut, label."""
    frames = []
    for league in leagues:
        for folder in build_league(league, args):
            saved = _saved(folder)
            chunk = _open(saved)
            meta = chunk.meta[[*KEY, "commence_time"]].copy()
            meta["y"] = np.asarray(chunk.labels[LABEL]).astype(np.int8)
            del chunk
            meta["league"] = league
            meta["chunk"] = str(saved)
            meta["row"] = np.arange(len(meta))
            frames.append(meta)
    return pd.concat(frames, ignore_index=True)


def _split(meta: pd.DataFrame, fractions=(0.7, 0.15, 0.15), shift: float = 0.0) -> np.ndarray:
    """70/15/15 of the events by commence time (as ``datasets.assign_splits``).

    ``shift`` (rolling origin) moves the validation and test windows back by that share of
    the events: train = every event before validation (expanding window), events after the
    test window are ``"unused"``. ``shift=0`` is the plain split (no ``"unused"``).
    """
    commence = pd.to_datetime(meta["commence_time"], utc=True)
    first = commence.groupby(meta["event_id"].to_numpy()).min().sort_values(kind="stable")
    n, total = len(first), float(sum(fractions))
    start = fractions[0] - shift
    bounds = []
    for share in (start, start + fractions[1], start + fractions[1] + fractions[2]):
        k = int(round(n * share / total))
        bounds.append(first.iloc[k] if k < n else pd.Timestamp.max.tz_localize("UTC"))
    ev = commence.groupby(meta["event_id"].to_numpy()).transform("min")
    return np.where(
        ev < bounds[0],
        "train",
        np.where(ev < bounds[1], "validation", np.where(ev < bounds[2], "test", "unused")),
    )


def _select(index: pd.DataFrame, args: argparse.Namespace, shift: float = 0.0) -> pd.DataFrame:
    """Split per league; thin validation/test to every EVAL_EVERY-th cut; subsample train.

    ``shift``: the rolling-origin fold's offset (``_split``); its ``"unused"`` rows (events
    after the fold's test window) are dropped before the train subsample is drawn.
    """
    parts = []
    for league, meta in index.groupby("league", sort=False):
        meta = meta.copy()
        meta["split"] = _split(meta, shift=shift)
        ordinal = meta.groupby([*KEY], dropna=False, sort=False).cumcount().to_numpy()
        every = _per_league(args.eval_every, str(league))
        split = meta["split"].to_numpy()
        keep = ((split == "train") | (ordinal % every == 0)) & (split != "unused")
        parts.append(meta[keep])
    sel = pd.concat(parts, ignore_index=True)
    train = sel["split"].to_numpy() == "train"
    y = sel["y"].to_numpy()
    pos = np.flatnonzero(train & (y == 1))
    neg = np.flatnonzero(train & (y == 0))
    n_neg = max(0, min(len(neg), args.max_train_rows - len(pos)))
    rng = np.random.default_rng(args.seed)
    keep_train = np.zeros(len(sel), dtype=bool)
    keep_train[pos] = True
    keep_train[rng.choice(neg, size=n_neg, replace=False)] = True
    return sel[~train | keep_train].reset_index(drop=True)


def _load_rows(sel: pd.DataFrame) -> D.SequenceDataset:
    """The selected rows' arrays, chunk by chunk, as one dataset (meta = ``sel``)."""
    keys = ("x_a", "x_b", "mask", "times", "market_type")
    pieces: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    order = []
    names, config = None, None
    for chunk, rows in sel.groupby("chunk", sort=False):
        idx = np.sort(rows["row"].to_numpy())
        part = _open(Path(chunk))
        for k in keys:
            pieces[k].append(np.array(getattr(part, k)[idx]))
        names, config = part.feature_names, part.config
        del part
        order.append(rows.sort_values("row").index.to_numpy())
    pos = np.concatenate(order)
    meta = sel.loc[pos].reset_index(drop=True)
    arrays = {k: np.concatenate(v) for k, v in pieces.items()}
    return D.SequenceDataset(
        name=D.PAIR_NAME,
        mask=arrays["mask"],
        y={LABEL: meta["y"].to_numpy(np.float32)},
        meta=meta,
        feature_names=list(names),
        config=dict(config),
        x_a=arrays["x_a"],
        x_b=arrays["x_b"],
        market_type=arrays["market_type"],
        times=arrays["times"],
        target=LABEL,
    )


# --------------------------------------------------------------------------- scorers


def _trees_matrix(ds: D.SequenceDataset, explicit: np.ndarray, books: np.ndarray) -> np.ndarray:
    from odds_pipeline.training.arbitrage_inputs import window_summaries

    summaries = window_summaries(ds.x_a, ds.x_b, ds.mask, ds.feature_names)
    return np.c_[summaries, explicit, books, ds.market_type].astype(np.float32)


def _train_transformer(
    splits: dict[str, D.SequenceDataset],
    static: dict[str, dict[str, np.ndarray]],
    args: argparse.Namespace,
) -> tuple[np.ndarray, dict[str, Any]]:
    import torch

    from odds_pipeline.datasets import scaling as S
    from odds_pipeline.training import arbitrage_inputs as AI
    from odds_pipeline.training.loop import TrainConfig, fit, predict_proba
    from odds_pipeline.training.models import DualStreamArbTransformer, count_parameters

    scaler = S.fit_scaler(splits["train"])
    st_scaler = AI.fit_standardiser(static["train"]["static"])
    arrays = {}
    for name, ds in splits.items():
        a = S.apply_scaler(ds, scaler).to_arrays(LABEL)
        if args.static:
            a["static"] = AI.standardise(static[name]["static"], st_scaler)
            a["books"] = static[name]["books"]
        arrays[name] = a
    keys = ("x_a", "x_b", "mask", "market_type", *(("static", "books") if args.static else ()))
    yv = arrays["validation"]["y"]
    rng = np.random.default_rng(args.seed)
    pick = (yv == 1) | (rng.random(len(yv)) < args.select_val_negatives)
    select_val = {k: v[pick] for k, v in arrays["validation"].items()}
    n_static = arrays["train"]["static"].shape[1] if args.static else 0

    def factory():
        return DualStreamArbTransformer(
            len(splits["train"].feature_names),
            d_model=args.d_model,
            n_heads=4,
            n_layers=2,
            cross_from_layer=1,
            dropout=0.1,
            mlp_hidden=args.d_model,
            ff_mult=2,
            n_static=n_static,
            n_books=AI.ArbitrageInputConfig().n_books if args.static else 0,
            book_dim=4,
        )

    pos_weight = None if args.pos_weight == "none" else args.pos_weight
    if pos_weight not in (None, "auto"):
        pos_weight = float(pos_weight)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=1e-2,
        patience=args.patience,
        seed=args.seed,
        device="cpu",
        pos_weight=pos_weight,
        torch_threads=1,
    )

    def progress(epoch: int, m: dict[str, float]) -> None:
        _log(
            f"transformer epoch {epoch}: train_loss {m['train_loss']:.4f} val_loss "
            f"{m['val_loss']:.4f} val_auc_pr {m.get('val_auc_pr', float('nan')):.4f} "
            f"({m['seconds']:.0f}s)"
        )

    res = fit(
        factory,
        arrays["train"],
        select_val,
        input_keys=keys,
        label_key="y",
        config=cfg,
        on_epoch=progress,
        select_metric=args.select_metric,
    )
    torch.set_num_threads(1)
    p = predict_proba(res.model, arrays["test"], input_keys=keys)
    info = {
        **_r(res.summary()),
        "parameters": count_parameters(res.model),
        "hparams": res.model.hparams,
        "val_auc_pr_by_epoch": [_r(h.get("val_auc_pr")) for h in res.history],
        "val_loss_by_epoch": [_r(h["val_loss"]) for h in res.history],
        "train_samples_per_s": _r(float(np.median([h["samples_per_s"] for h in res.history]))),
        "inputs": list(keys),
        "select_metric": args.select_metric,
        "selection_rows": int(pick.sum()),
        "selection_positives": int(yv[pick].sum()),
    }
    return p, info


# --------------------------------------------------------------------------- report


def _ratio(y, p, q, events, args) -> dict[str, Any]:
    from odds_pipeline.registry.gates import paired_bootstrap_ratio

    res = paired_bootstrap_ratio(
        y, p, q, events, metric="auc_pr", n_resamples=args.resamples, seed=7
    )
    return _r({k: res[k] for k in ("ratio", "ci_low", "ci_high", "n_groups", "dropped")}, 4)


def _gate_ratio(gate: Any) -> dict[str, Any]:
    """``_ratio``'s fields from a gate result (the same bootstrap, seed 7)."""
    return _r(
        {
            "ratio": gate.value,
            "ci_low": gate.ci_low,
            "ci_high": gate.ci_high,
            "n_groups": gate.details["n_groups"],
            "dropped": gate.details["dropped_resamples"],
        },
        4,
    )


def _rule_tables() -> dict[str, dict[str, str]]:
    from odds_pipeline.training import baselines as B

    return {"classical": B.CLASSICAL_RULES, "extended": B.EXTENDED_RULES}


def _rule_apply(choice, signs: dict[str, float], explicit_test: np.ndarray, table) -> dict:
    """A rule choice on test rows: ``score`` (``RuleChoice.score``, a ranking in [0, 1]),
    ``signed`` (the chosen rule's raw value times its orientation: the same order) and
    ``each`` (every rule's raw value in its validation orientation, by display name)."""
    from odds_pipeline.training import baselines as B

    raws = B.rule_values(explicit_test, table)
    return {
        "score": choice.score(explicit_test),
        "signed": choice.sign * raws[choice.name],
        "each": {f"{n} ({signs[n]:+.0f})": signs[n] * raw for n, raw in raws.items()},
    }


def _rule_pick(
    explicit_val: np.ndarray, y_val: np.ndarray, explicit_test: np.ndarray, table: dict[str, str]
) -> dict[str, Any]:
    """The rule (and each rule's orientation) chosen on validation, applied to the test rows."""
    from odds_pipeline.training import baselines as B

    choice = B.choose_rule(explicit_val, y_val, table)
    signs = {
        name: 1.0 if choice.table[name]["+1"] >= choice.table[name]["-1"] else -1.0
        for name in table
    }
    return {
        "choice": choice,
        "name": choice.name,
        "label": choice.label,
        "val_auc_pr": choice.val_auc_pr,
        "signs": signs,
        **_rule_apply(choice, signs, explicit_test, table),
    }


def _scope_head(y: np.ndarray, events: np.ndarray, y_val: np.ndarray) -> dict[str, Any]:
    return {
        "test_rows": int(len(y)),
        "test_events": int(len(np.unique(events))),
        "positives": int(y.sum()),
        "positive_rate": _r(float(y.mean()) if len(y) else math.nan, 6),
        "validation_positives": int(y_val.sum()),
    }


def _scope_report(
    y: np.ndarray,
    events: np.ndarray,
    scores: dict[str, np.ndarray],
    explicit_val: np.ndarray,
    y_val: np.ndarray,
    explicit_test: np.ndarray,
    args: argparse.Namespace,
) -> dict[str, Any]:
    out = _scope_head(y, events, y_val)
    if y.sum() == 0 or y_val.sum() == 0:
        out["error"] = "no positive in the validation or test rows: nothing to compare"
        return out
    rules, names = {}, {}
    for label, table in _rule_tables().items():
        pick = _rule_pick(explicit_val, y_val, explicit_test, table)
        rules[label] = {
            "chosen_on_validation": pick["label"],
            "validation_auc_pr": _r(pick["val_auc_pr"], 5),
            "score": pick["score"],
            "each": pick["each"],
        }
        names[label] = pick["name"]
    name = f"rule {names['classical']} (best on validation)"
    return _compare(out, y, events, scores, rules, name, args)


def _compare(
    out: dict[str, Any],
    y: np.ndarray,
    events: np.ndarray,
    scores: dict[str, np.ndarray],
    rules: dict[str, dict[str, Any]],
    baseline_name: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """AUC-PR of every scorer and rule, bootstrap ratios to the rule, and the verdict.

    ``rules[label]``: ``score`` (the chosen rule's test scores), ``each`` (every rule's
    test scores by display name) and the fields reported as they are (the choice).
    """
    from odds_pipeline.registry.decision import GateThresholds
    from odds_pipeline.registry.gates import baseline_gate_auc_pr
    from odds_pipeline.training import baselines as B

    for label, rule in rules.items():
        info = {k: v for k, v in rule.items() if k not in ("score", "each")}
        out[f"rule_{label}"] = {
            **info,
            "test_auc_pr": _r(B.auc_pr(y, rule["score"]), 5),
            "test_auc_pr_each_rule_validation_orientation": {
                name: _r(B.auc_pr(y, s), 5) for name, s in rule["each"].items()
            },
        }
    rule_score = rules["classical"]["score"]
    out["auc_pr"] = {name: _r(B.auc_pr(y, s), 5) for name, s in scores.items()}
    out["auc_pr"]["best_rule_classical"] = out["rule_classical"]["test_auc_pr"]
    out["auc_pr"]["best_rule_extended"] = out["rule_extended"]["test_auc_pr"]
    ratios, gates = {}, {}
    for name, s in scores.items():
        # the gate's own bootstrap (seed 7) is the ratio to the rule: run once, read twice
        gates[name] = baseline_gate_auc_pr(
            y, s, rule_score, events, baseline_name=baseline_name, n_resamples=args.resamples
        )
        ratios[f"{name}_vs_rule"] = _gate_ratio(gates[name])
        ratios[f"{name}_vs_rule_extended"] = _ratio(y, s, rules["extended"]["score"], events, args)
    if "transformer" in scores and "trees" in scores:
        ratios["transformer_vs_trees"] = _ratio(
            y, scores["transformer"], scores["trees"], events, args
        )
    out["ratios"] = ratios
    if "transformer" in scores:
        gate = gates["transformer"]
        above_trees = (out["auc_pr"]["transformer"] or 0) > (out["auc_pr"].get("trees") or 0)
        t = GateThresholds()  # the gates' enough_evidence defaults
        evidence = len(y) >= t.min_test_rows and y.sum() >= t.min_test_positives
        out["verdict"] = {
            "enough_evidence": bool(evidence),
            "beats_baseline_gate": gate.passed,
            "gate_summary": gate.summary,
            "above_trees": bool(above_trees),
            "target_met": bool(evidence and gate.passed and above_trees),
        }
    if "trees" in scores:
        out["trees_would_pass_gate"] = gates["trees"].passed
    return out


def _fit_scorers(sel: pd.DataFrame, args: argparse.Namespace, out: dict[str, Any]):
    """Load ``sel``'s arrays, fit the trees and the transformer on its train rows (chosen on
    its validation rows), score its test rows; figures go into ``out``.

    Returns (test scores by scorer, the validation and test datasets, their static inputs).
    """
    from odds_pipeline.training import arbitrage_inputs as AI
    from odds_pipeline.training.baselines import fit_trees

    _log(f"selected {len(sel)} rows; loading arrays")
    ds = _load_rows(sel)
    _log(f"loaded; peak rss {peak_rss_mb():.0f} MB")
    icfg = AI.ArbitrageInputConfig(feature_names=tuple(ds.feature_names))
    split_col = ds.meta["split"].to_numpy()
    splits = {s: ds.subset(split_col == s) for s in ("train", "validation", "test")}
    del ds
    static = {s: AI.static_inputs(d, icfg) for s, d in splits.items()}
    out["input_config"] = icfg.to_dict()
    scores: dict[str, np.ndarray] = {}

    if "trees" in args.scorers:
        start = time.perf_counter()
        X = {
            s: _trees_matrix(d, static[s]["static"], static[s]["books"]) for s, d in splits.items()
        }
        trees = fit_trees(
            X["train"],
            splits["train"].labels[LABEL],
            X["validation"],
            splits["validation"].labels[LABEL],
            max_iter=args.tree_iters,
            seed=args.seed,
        )
        scores["trees"] = trees.score(X["test"])
        out["trees"] = {
            "n_iter_chosen_on_validation": trees.n_iter,
            "validation_auc_pr": _r(trees.val_auc_pr),
            "features": int(X["train"].shape[1]),
            "seconds": round(time.perf_counter() - start, 1),
        }
        _log(f"trees: {out['trees']}")
        del X

    if "transformer" in args.scorers:
        start = time.perf_counter()
        p, info = _train_transformer(splits, static, args)
        scores["transformer"] = p
        info["seconds"] = round(time.perf_counter() - start, 1)
        out["transformer"] = info
        _log(f"transformer done in {info['seconds']}s, best epoch {info['best_epoch']}")

    evaluation = {s: splits[s] for s in ("validation", "test")}
    return scores, evaluation, {s: static[s] for s in ("validation", "test")}


def _evaluation_columns(splits: dict[str, D.SequenceDataset]) -> tuple[np.ndarray, ...]:
    """(test labels, validation labels, test events, test leagues, validation leagues)."""
    test, val = splits["test"], splits["validation"]
    return (
        test.labels[LABEL].astype(np.float64),
        val.labels[LABEL].astype(np.float64),
        test.meta["event_id"].to_numpy(dtype=object),
        test.meta["league"].to_numpy(dtype=object),
        val.meta["league"].to_numpy(dtype=object),
    )


def _report_scopes(
    leagues: list[str],
    scores: dict[str, np.ndarray],
    splits: dict[str, D.SequenceDataset],
    static: dict[str, dict[str, np.ndarray]],
    args: argparse.Namespace,
    tag: str = "",
) -> dict[str, Any]:
    """``_scope_report`` for each league and pooled (rules chosen on each scope's validation)."""
    y, yv, ev, lg_t, lg_v = _evaluation_columns(splits)
    results = {}
    for scope in [*leagues, "pooled"]:
        t = np.ones(len(y), bool) if scope == "pooled" else lg_t == scope
        v = np.ones(len(yv), bool) if scope == "pooled" else lg_v == scope
        results[scope] = _scope_report(
            y[t],
            ev[t],
            {k: s[t] for k, s in scores.items()},
            static["validation"]["static"][v],
            yv[v],
            static["test"]["static"][t],
            args,
        )
        _log(
            f"{tag}{scope}: {json.dumps(results[scope].get('auc_pr'))} {results[scope].get('verdict', {}).get('target_met')}"
        )
    return results


def _index_and_counts(leagues: list[str], args: argparse.Namespace, out: dict[str, Any]):
    started = time.perf_counter()
    index = _index(leagues, args)
    out["build_and_index_s"] = round(time.perf_counter() - started, 1)
    out["built"] = {
        lg: {
            "samples": int((index["league"] == lg).sum()),
            "positives": int(index.loc[index["league"] == lg, "y"].sum()),
        }
        for lg in leagues
    }
    return index


def _row_counts(sel: pd.DataFrame) -> dict[str, Any]:
    return {
        f"{lg}_{s}": {
            "rows": int(len(g)),
            "positives": int(g["y"].sum()),
            "events": int(g["event_id"].nunique()),
        }
        for (lg, s), g in sel.groupby(["league", "split"])
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    leagues = args.leagues.split(",")
    out: dict[str, Any] = {"leagues": leagues}
    index = _index_and_counts(leagues, args, out)
    sel = _select(index, args)
    del index
    out["rows"] = _row_counts(sel)
    scores, splits, static = _fit_scorers(sel, args, out)
    out["results"] = _report_scopes(leagues, scores, splits, static, args)
    return out


# --------------------------------------------------------------------------- rolling origin


def _fold_shifts(k_folds: int, fractions=(0.7, 0.15, 0.15)) -> list[float]:
    """``_split`` shifts of the K rolling-origin folds, oldest first (the last one is 0.0:
    the plain 70/15/15 split). Fold i's test window is the test share of the events just
    after fold i-1's; the first fold must keep some train events."""
    if k_folds < 1:
        raise ValueError(f"--rolling-origin needs at least 1 fold, got {k_folds}")
    shifts = [(k_folds - 1 - i) * fractions[2] for i in range(k_folds)]
    if fractions[0] - shifts[0] <= 0.05:
        raise ValueError(
            f"{k_folds} folds leave the first fold {fractions[0] - shifts[0]:.2f} of the "
            "events to train on: use fewer folds"
        )
    return shifts


def _fold_scope_rules(
    explicit_val: np.ndarray,
    y_val: np.ndarray,
    explicit_test: np.ndarray,
    fallback: dict[str, dict[str, Any]] | None,
) -> tuple[dict[str, dict[str, Any]] | None, str]:
    """A fold's rules for one scope: chosen on the scope's validation rows, or (no validation
    positive there) the rules chosen on the fold's pooled validation, applied to these rows."""
    if 0 < y_val.sum() < len(y_val):
        return {
            label: _rule_pick(explicit_val, y_val, explicit_test, table)
            for label, table in _rule_tables().items()
        }, "scope validation"
    if fallback is None:
        return None, "no validation positive"
    tables = _rule_tables()
    picks = {
        label: {**pick, **_rule_apply(pick["choice"], pick["signs"], explicit_test, tables[label])}
        for label, pick in fallback.items()
    }
    return picks, "pooled validation (no positive in the scope's validation)"


def _pool_folds(parts: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """One scope's test rows of every fold, each row scored by its own fold's models and by
    the rule chosen on its own fold's validation, compared as ``_scope_report`` does."""
    from odds_pipeline.training import baselines as B

    used = [p for p in parts if p["rules"] is not None]
    y = np.concatenate([p["y"] for p in used]) if used else np.zeros(0)
    events = np.concatenate([p["events"] for p in used]) if used else np.zeros(0, object)
    out = _scope_head(y, events, np.array([p["y_val"].sum() for p in parts], dtype=float))
    out["folds"] = [
        {
            "fold": p["fold"],
            "test_rows": int(len(p["y"])),
            "positives": int(p["y"].sum()),
            "validation_positives": int(p["y_val"].sum()),
            "rules_chosen_on": p["rules_from"],
        }
        for p in parts
    ]
    if y.sum() == 0:
        out["error"] = "no positive in the test rows of any fold: nothing to compare"
        return out
    names = list(used[0]["scores"])
    chosen = sorted({p["rules"]["classical"]["name"] for p in used})
    name = f"rule chosen per fold on validation ({', '.join(chosen)})"

    def pooled(transform) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        scores = {k: np.concatenate([transform(p["scores"][k]) for p in used]) for k in names}
        rules = {}
        for label in _rule_tables():
            # the same rule may carry another orientation in another fold: key by rule name
            each: dict[str, list[np.ndarray]] = {}
            signs: dict[str, list[str]] = {}
            for p in used:
                for key, values in p["rules"][label]["each"].items():
                    rule = key.split(" (")[0]
                    each.setdefault(rule, []).append(transform(values))
                    signs.setdefault(rule, []).append(key.split(" (")[1].rstrip(")"))
            rules[label] = {
                "chosen_on_validation_per_fold": [p["rules"][label]["label"] for p in used],
                "validation_auc_pr_per_fold": [
                    _r(p["rules"][label]["val_auc_pr"], 5) for p in used
                ],
                "score": np.concatenate([transform(p["rules"][label]["signed"]) for p in used]),
                "each": {
                    f"{rule} ({'/'.join(signs[rule])})": np.concatenate(v)
                    for rule, v in each.items()
                },
            }
        return scores, rules

    # primary: every scorer ranked within its own fold first, so that rows of different
    # folds compare on one scale even where the rule chosen (and its unit) changes by fold
    scores, rules = pooled(B.rank01)
    out["pooling"] = "ranked within fold"
    out = _compare(out, y, events, scores, rules, name, args)
    # secondary: each fold's raw outputs (probabilities, the rule's signed raw value)
    scores, rules = pooled(lambda v: v)
    out["native_scores"] = _compare(
        {"pooling": "native outputs"}, y, events, scores, rules, name, args
    )
    return out


def run_rolling(args: argparse.Namespace) -> dict[str, Any]:
    """Rolling-origin (walk-forward) evaluation: K folds, each trained, chosen and scored as
    the plain run is on its own train/validation/test windows; the folds' test rows pooled."""
    import torch

    torch.set_num_threads(1)
    leagues = args.leagues.split(",")
    shifts = _fold_shifts(args.rolling_origin)
    out: dict[str, Any] = {"leagues": leagues}
    index = _index_and_counts(leagues, args, out)
    sels = [_select(index, args, shift=shift) for shift in shifts]
    del index
    out["rolling_origin"] = {
        "folds": len(shifts),
        "windows": [
            {
                "fold": i + 1,
                "train": [0.0, round(0.7 - sh, 4)],
                "validation": [round(0.7 - sh, 4), round(0.85 - sh, 4)],
                "test": [round(0.85 - sh, 4), round(1.0 - sh, 4)],
            }
            for i, sh in enumerate(shifts)
        ],
        "windows_unit": "share of each league's events ordered by commence time",
    }
    folds: list[dict[str, Any]] = []
    parts: dict[str, list[dict[str, Any]]] = {scope: [] for scope in [*leagues, "pooled"]}
    for i, sel in enumerate(sels):
        fold = i + 1
        start = time.perf_counter()
        _log(f"fold {fold}/{len(sels)}")
        fold_out: dict[str, Any] = {"fold": fold, "rows": _row_counts(sel)}
        scores, splits, static = _fit_scorers(sel, args, fold_out)
        sels[i] = None  # free the fold's selection
        del sel
        fold_out["results"] = _report_scopes(
            leagues, scores, splits, static, args, tag=f"fold {fold} "
        )
        y, yv, ev, lg_t, lg_v = _evaluation_columns(splits)
        sv, st = static["validation"]["static"], static["test"]["static"]
        pooled_rules = None
        for scope in ["pooled", *leagues]:
            t = np.ones(len(y), bool) if scope == "pooled" else lg_t == scope
            v = np.ones(len(yv), bool) if scope == "pooled" else lg_v == scope
            rules, source = _fold_scope_rules(sv[v], yv[v], st[t], pooled_rules)
            if scope == "pooled":
                pooled_rules = rules
            parts[scope].append(
                {
                    "fold": fold,
                    "y": y[t],
                    "y_val": yv[v],
                    "events": ev[t],
                    "scores": {k: s[t] for k, s in scores.items()},
                    "rules": rules,
                    "rules_from": source,
                }
            )
        fold_out["seconds"] = round(time.perf_counter() - start, 1)
        folds.append(fold_out)
        del scores, splits, static
    out["folds"] = folds
    results = {}
    for scope in [*leagues, "pooled"]:
        results[scope] = _pool_folds(parts[scope], args)
        _log(
            f"all folds {scope}: {json.dumps(results[scope].get('auc_pr'))} "
            f"{results[scope].get('verdict', {}).get('target_met')}"
        )
    out["results"] = results
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--build-only", action="store_true", help="build the cache and stop")
    parser.add_argument("--leagues", default=",".join(LEAGUES))
    parser.add_argument("--cache", default="/tmp/arbscorer")
    parser.add_argument("--max-len", type=int, default=32)
    parser.add_argument("--min-len", type=int, default=8)
    parser.add_argument("--horizon", type=float, default=120.0, help="arb_ahead horizon, min")
    parser.add_argument("--train-stride", default=TRAIN_STRIDE, help="cut stride (per league)")
    parser.add_argument(
        "--eval-every", default=EVAL_EVERY, help="validation/test: every N-th train cut"
    )
    parser.add_argument("--chunk-events", type=int, default=12)
    parser.add_argument("--max-train-rows", type=int, default=40_000)
    parser.add_argument(
        "--select-val-negatives",
        type=float,
        default=0.25,
        help="transformer epoch selection: every validation positive and this share of the "
        "negatives (seeded; CPU time); rules and trees choose on the whole validation",
    )
    parser.add_argument("--scorers", default="trees,transformer")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--pos-weight", default="auto", help="auto, none or a number")
    parser.add_argument("--select-metric", default="auc_pr", choices=("auc_pr", "val_loss"))
    parser.add_argument(
        "--no-static",
        dest="static",
        action="store_false",
        help="transformer without the "
        "explicit inputs and book embeddings (the issue #4 model, for an ablation)",
    )
    parser.add_argument("--tree-iters", type=int, default=300)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rolling-origin",
        type=int,
        default=0,
        metavar="K",
        help="rolling-origin evaluation over K folds (0: the plain 70/15/15 split)",
    )
    args = parser.parse_args()
    from bench_model_targets import _to_datetime_without_cache

    figures: dict[str, Any] = {
        "benchmark": "arbitrage_scorer",
        "load_avg_start": os.getloadavg(),
        # --rolling-origin is left out when off: the plain run's output stays as it was
        "args": {k: v for k, v in vars(args).items() if k != "rolling_origin" or v},
    }
    start = time.perf_counter()
    with _to_datetime_without_cache():
        if args.build_only:
            for league in args.leagues.split(","):
                _log(f"building {league}")
                figures[league] = {"chunks": len(build_league(league, args))}
        elif args.rolling_origin:
            figures.update(run_rolling(args))
        else:
            figures.update(run(args))
    figures["wall_s"] = round(time.perf_counter() - start, 1)
    figures["load_avg_end"] = os.getloadavg()
    figures["peak_rss_mb"] = round(peak_rss_mb(), 1)
    emit(figures)


if __name__ == "__main__":
    main()
