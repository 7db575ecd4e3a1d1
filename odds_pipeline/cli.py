"""`odds-pipeline` command line for on-call engineers and scripts.

`odds-pipeline inspect SOURCE PATH...` parses files without writing anything and prints one
JSON object; exit 0 when the files parse, 2 (with a one-line error naming the file) when not.
`odds-pipeline summary` prints what the warehouse holds. `odds-pipeline models` prints each
model's champion, challenger and previous champion with their gate verdicts and the latest
decisions. `odds-pipeline latest-day` prints the last commence day of a source's events.
"""

from __future__ import annotations

import argparse
import json
import sys

from odds_pipeline.market.quotes import SourceFormatError, combine

EXIT_BAD_INPUT = 2


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

    client = tracking._client()
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
                    f"v{row['from_version']} -> v{row['to_version']}: {row['reason']}"
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
