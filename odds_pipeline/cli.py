"""`odds-pipeline` command line for on-call engineers and scripts.

`odds-pipeline inspect SOURCE PATH...` parses files without writing anything and prints one
JSON object; exit 0 when the files parse, 2 (with a one-line error naming the file) when not.
`odds-pipeline summary` prints what the warehouse holds. `odds-pipeline models` prints each
model's champion, challenger and previous champion with their gate verdicts and the latest
decisions. `odds-pipeline latest-day` prints the last commence day of a source's events.
`odds-pipeline loads` lists every load with its counts; `odds-pipeline drop-load ID --yes`
deletes one (without `--yes` it only says what it would delete, and exits 1).

While another process writes the warehouse, commands wait (up to $ODDS_PIPELINE_READ_WAIT_S,
default 10 s), then print one `error:` line naming the run that writes it and exit 3.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from odds_pipeline.market.quotes import SourceFormatError, combine
from odds_pipeline.warehouse import WarehouseBusy

EXIT_BAD_INPUT = 2
EXIT_WAREHOUSE_BUSY = 3
LOAD_COLUMNS = [
    "load_id",
    "source",
    "prices_read",
    "quotes_accepted",
    "quotes_rejected",
    "quote_rows",
]


def _inspect(args: argparse.Namespace) -> int:
    from odds_pipeline.ingestion.ingest import adapter
    from odds_pipeline.ingestion.sources import expand_paths

    try:
        module = adapter(args.source)
        files = expand_paths(args.paths)
        options = {"keep_in_play": args.keep_in_play}
        result = combine([module.parse_file(path, **options) for path in files])
    except SourceFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(result.summary(), indent=None if args.compact else 2, default=str))
    return 0


def _summary(args: argparse.Namespace) -> int:
    from odds_pipeline.ingestion.store import OddsStore
    from odds_pipeline.paths import warehouse_path

    path = warehouse_path()
    if not path.exists():
        print(json.dumps({"warehouse": str(path), "exists": False}))
        return 1
    store = OddsStore(path)
    out: dict[str, object] = {"warehouse": str(path)}
    with store.connection(read_only=True) as con:
        for table in ("odds_quotes", "events", "results", "rejected_quotes"):
            rows = con.execute(
                f"SELECT source, count(*) FROM {table} GROUP BY 1 ORDER BY 1"
            ).fetchall()
            out[table] = {source: int(n) for source, n in rows}
        lo, hi = con.execute(
            "SELECT min(observed_at), max(observed_at) FROM odds_quotes"
        ).fetchone()
        out["observed_from"], out["observed_to"] = str(lo), str(hi)
        reasons = con.execute(
            "SELECT reason, count(*) FROM rejected_quotes GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
        out["rejected_reasons"] = {r: int(n) for r, n in reasons}
    out["models"] = _registered_models()
    print(json.dumps(out, indent=2))
    return 0


def _registered_models() -> dict[str, dict[str, str]]:
    """Model versions behind the registry aliases (MLflow imported only here)."""
    from odds_pipeline import paths

    if not (paths.mlflow_dir() / "mlflow.db").exists():
        return {}
    from odds_pipeline.training import tracking

    client = tracking.client()
    models: dict[str, dict[str, str]] = {}
    for name in (tracking.LSTM_MODEL_NAME, tracking.TRANSFORMER_MODEL_NAME):
        for alias in (tracking.CHAMPION, tracking.CHALLENGER):
            try:
                version = client.get_model_version_by_alias(name, alias)
            except Exception:  # alias or model not there yet
                continue
            models.setdefault(name, {})[alias] = f"version {version.version} (run {version.run_id})"
    return models


def _models(args: argparse.Namespace) -> int:
    """Champion / challenger / previous champion per model, gate verdicts, latest decisions."""
    from odds_pipeline import paths

    if not (paths.mlflow_dir() / "mlflow.db").exists():
        print("no MLflow store yet: run `make run` (or materialize the candidates) first")
        return 1 if args.require_judged else 0
    from odds_pipeline.registry import promotion
    from odds_pipeline.training import tracking

    status = promotion.model_status()
    decisions = _latest_decisions()
    if args.json:
        print(json.dumps({"models": status, "decisions": decisions}, indent=2, default=str))
    else:
        for name, aliases in status.items():
            print(f"{name}")
            for alias, info in aliases.items():
                if info is None:
                    print(f"  {alias:<18} none")
                    continue
                print(f"  {alias:<18} v{info['version']:<4} gates {info['gates']}")
                for gate, summary in info["failed"].items():
                    print(f"  {'':<18}   failed {gate}: {summary}")
            if aliases.get(tracking.CHAMPION) is None:
                print("  -> no champion: scoring uses the market (LSTM) or the rule (transformer)")
            for row in decisions.get(name, [])[:3]:
                print(
                    f"  decision {row['decided_at']:%Y-%m-%d %H:%M} {row['decision']}: "
                    f"{_version(row['from_version'])} -> {_version(row['to_version'])}: "
                    f"{row['reason']}"
                )
    if args.require_judged:
        unjudged = [
            name
            for name, aliases in status.items()
            if (aliases.get("challenger") or {}).get("gates", "not judged") == "not judged"
        ]
        if unjudged:
            print(
                f"error: the gates did not judge the latest candidate of {unjudged}: the run "
                "failed before them (see its logs)",
                file=sys.stderr,
            )
            return 1
    return 0


def _version(value: object) -> str:
    """v3, or 'none' where there was no version (a first promotion, a refusal's target)."""
    return "none" if value is None or value != value else f"v{value}"


def _latest_decisions() -> dict[str, list[dict[str, object]]]:
    from odds_pipeline.ingestion.store import OddsStore
    from odds_pipeline.paths import warehouse_path
    from odds_pipeline.registry import promotion

    if not warehouse_path().exists():
        return {}
    with OddsStore(warehouse_path()).connection(read_only=True) as con:
        frame = promotion.history(con, limit=50)
    out: dict[str, list[dict[str, object]]] = {}
    for row in frame.to_dict("records"):
        out.setdefault(str(row["model"]), []).append(row)
    return out


def _export_lake(args: argparse.Namespace) -> int:
    """Write days of the canonical tables as Parquet (as the `canonical_parquet` asset does)."""
    import pandas as pd

    from odds_pipeline.ingestion import lake
    from odds_pipeline.ingestion.store import OddsStore
    from odds_pipeline.paths import lake_dir, warehouse_path
    from odds_pipeline.warehouse import table_exists

    root = Path(args.root) if args.root else lake_dir()
    with OddsStore(warehouse_path()).connection(read_only=True) as con:
        present = [t for t in lake.LAKE_TABLES if table_exists(con, t)]
        if args.day_from or args.day_to:
            if not (args.day_from and args.day_to):
                print("error: give both --from and --to (YYYY-MM-DD)", file=sys.stderr)
                return 2
            days = [d.strftime("%Y-%m-%d") for d in pd.date_range(args.day_from, args.day_to)]
            if not days:
                print(f"error: --from {args.day_from} is after --to {args.day_to}", file=sys.stderr)
                return 2
        else:
            days = sorted({d for t in present for d in lake.days_in(con, t)})
        written = lake.export_days(con, root, days, present)
        undated = {t: n for t in present if (n := lake.undated_rows(con, t))}
    rows = {table: sum(by_day.values()) for table, by_day in written.items()}
    print(
        json.dumps(
            {"root": str(root), "days": len(days), "rows": rows, "rows_without_day": undated}
        )
    )
    return 0


def _latest_day(args: argparse.Namespace) -> int:
    """The last commence day (UTC) of a source's events: the partition `make run` scores."""
    from odds_pipeline.ingestion.store import OddsStore
    from odds_pipeline.paths import warehouse_path

    with OddsStore(warehouse_path()).connection(read_only=True) as con:
        day = con.execute(
            "SELECT strftime(max(commence_time), '%Y-%m-%d') FROM events WHERE source = ?",
            [args.source],
        ).fetchone()[0]
    if day is None:
        print(f"error: no events of source {args.source!r} in the warehouse", file=sys.stderr)
        return 1
    print(day)
    return 0


def _existing_warehouse() -> Path | None:
    """The warehouse file, or None after saying on stderr that there is none yet."""
    from odds_pipeline.paths import warehouse_path

    path = warehouse_path()
    if not path.exists():
        print(f"error: no warehouse at {path}: nothing ingested yet", file=sys.stderr)
        return None
    return path


def _plain(value: object) -> object:
    """JSON-ready: numpy ints as int, missing counts (NaN/NA) as null."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str) else int(value)


def _loads(args: argparse.Namespace) -> int:
    """Every load with source, counts as written and the quote rows it holds now."""
    from odds_pipeline.ingestion.store import OddsStore

    path = _existing_warehouse()
    if path is None:
        return 1
    frame = OddsStore(path).loads()
    rows = [
        {column: _plain(value) for column, value in zip(LOAD_COLUMNS, row, strict=True)}
        for row in frame[LOAD_COLUMNS].itertuples(index=False)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cells = [LOAD_COLUMNS] + [
        ["-" if row[c] is None else str(row[c]) for c in LOAD_COLUMNS] for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(LOAD_COLUMNS))]
    for line in cells:
        print(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
    return 0


def _drop_load(args: argparse.Namespace) -> int:
    """Delete one load (a file ingested twice, a bad partition); a dry run without --yes."""
    from odds_pipeline.ingestion.store import OddsStore

    path = _existing_warehouse()
    if path is None:
        return 1
    store = OddsStore(path, holder=f"odds-pipeline drop-load {args.load_id}")
    counts = store.drop_load(args.load_id) if args.yes else store.load_footprint(args.load_id)
    if not any(counts.values()):
        print(
            f"error: no load {args.load_id!r} in {path}; `odds-pipeline loads` lists them",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    verb = "deleted" if args.yes else "would delete"
    print(f"{verb} load {args.load_id} from {path}:")
    for table, n in counts.items():
        print(f"  {table}: {n}")
    if not args.yes:
        print("nothing deleted: run again with --yes to delete")
        return 1
    return 0


def _scan(args: argparse.Namespace) -> int:
    """Arbitrage windows in saved Odds API files (parsed, not stored), as JSON."""
    from odds_pipeline.ingestion.sources import expand_paths, odds_api
    from odds_pipeline.scoring.arbitrage import ScanConfig, scan_frame

    try:
        files = expand_paths(args.paths)
        result = combine([odds_api.parse_file(path) for path in files])
        config = ScanConfig(
            staleness_seconds=args.staleness_seconds,
            bankroll=args.bankroll,
            max_margin=args.max_margin,
        )
    except (SourceFormatError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    found = scan_frame(result.quotes, config)
    windows = found.windows.copy()
    for column in windows.columns:  # timestamps and JSON text as plain JSON values
        if str(windows[column].dtype).startswith("datetime"):
            windows[column] = windows[column].astype(str)
    out = {
        "files": [str(f) for f in files],
        "quotes": len(result.quotes),
        "counts": found.counts,
        "windows": json.loads(windows.to_json(orient="records")),
    }
    print(json.dumps(out, indent=None if args.compact else 2, default=str))
    return 0


def _backtest(args: argparse.Namespace) -> int:
    """The backtest of `backtest_report` over the warehouse, printed (nothing written)."""
    from odds_pipeline.backtest.simulate import BacktestConfig, predictions_frame, run_backtest
    from odds_pipeline.ingestion.store import OddsStore
    from odds_pipeline.paths import warehouse_path
    from odds_pipeline.scoring.arbitrage import stored_windows
    from odds_pipeline.warehouse import table_exists

    config = BacktestConfig(
        bankroll=args.bankroll,
        kelly_fraction=args.kelly_fraction,
        min_edge=args.min_edge,
        n_boot=args.n_boot,
    )
    with OddsStore(warehouse_path()).connection(read_only=True) as con:
        if not table_exists(con, "predictions"):
            print(
                "error: no predictions yet: materialize win_probability_predictions",
                file=sys.stderr,
            )
            return 1
        probabilities = {"market": predictions_frame(con, "market_probability")}
        champion = predictions_frame(con, "model_probability", source="champion")
        if len(champion):
            probabilities["lstm_champion"] = champion
        windows = stored_windows(con)
        result = run_backtest(con, probabilities, windows, config)
    print(json.dumps(result.summary(), indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="odds-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser(
        "inspect", help="parse odds files without writing; print one JSON summary"
    )
    inspect.add_argument("source", choices=["odds-api", "football-data", "sbr"])
    inspect.add_argument("paths", nargs="+", help="files or globs")
    inspect.add_argument(
        "--keep-in-play",
        action="store_true",
        help="accept in-play prices instead of rejecting them",
    )
    inspect.add_argument("--compact", action="store_true", help="one-line JSON")
    inspect.set_defaults(func=_inspect)
    summary = sub.add_parser("summary", help="row counts of the canonical tables in the warehouse")
    summary.set_defaults(func=_summary)
    models = sub.add_parser(
        "models", help="champion, challenger and previous champion per model, with gate verdicts"
    )
    models.add_argument("--json", action="store_true", help="JSON instead of text")
    models.add_argument(
        "--require-judged",
        action="store_true",
        help="exit 1 when a model's latest candidate was never judged by the gates",
    )
    models.set_defaults(func=_models)
    latest = sub.add_parser("latest-day", help="last commence day (UTC) of a source's events")
    latest.add_argument("--source", default="simulator", help="events.source (default simulator)")
    latest.set_defaults(func=_latest_day)
    loads = sub.add_parser(
        "loads", help="every load: source, counts as written, quote rows it holds now"
    )
    loads.add_argument("--json", action="store_true", help="JSON instead of a table")
    loads.set_defaults(func=_loads)
    drop = sub.add_parser(
        "drop-load",
        help="delete everything one load wrote (quotes, rejects, events, results, its loads row)",
    )
    drop.add_argument("load_id", help="as `odds-pipeline loads` lists it")
    drop.add_argument(
        "--yes", action="store_true", help="delete; without it, print what would go and exit 1"
    )
    drop.set_defaults(func=_drop_load)
    export = sub.add_parser(
        "export-lake",
        help="write the canonical tables as day-partitioned Parquet (every day, or a range)",
    )
    export.add_argument("--from", dest="day_from", help="first day (YYYY-MM-DD)")
    export.add_argument("--to", dest="day_to", help="last day (YYYY-MM-DD), inclusive")
    export.add_argument("--root", help="lake folder (default $ODDS_PIPELINE_HOME/lake)")
    export.set_defaults(func=_export_lake)
    scan = sub.add_parser("scan", help="arbitrage windows in saved Odds API files, as JSON")
    scan.add_argument("paths", nargs="+", help="files or globs (Odds API responses)")
    scan.add_argument("--staleness-seconds", type=float, default=3600.0)
    scan.add_argument("--bankroll", type=float, default=1000.0)
    scan.add_argument("--max-margin", type=float, default=0.05)
    scan.add_argument("--compact", action="store_true", help="one-line JSON")
    scan.set_defaults(func=_scan)
    backtest = sub.add_parser(
        "backtest", help="walk-forward backtest over the warehouse (as backtest_report), JSON"
    )
    backtest.add_argument("--bankroll", type=float, default=1000.0)
    backtest.add_argument("--kelly-fraction", type=float, default=0.25)
    backtest.add_argument("--min-edge", type=float, default=0.02)
    backtest.add_argument("--n-boot", type=int, default=2000)
    backtest.set_defaults(func=_backtest)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except WarehouseBusy as exc:  # another process writes: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_WAREHOUSE_BUSY


if __name__ == "__main__":
    sys.exit(main())
