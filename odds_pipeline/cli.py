"""`odds-pipeline` command line for on-call engineers and scripts.

`odds-pipeline inspect SOURCE PATH...` parses files without writing anything and prints one
JSON object; exit 0 when the files parse, 2 (with a one-line error naming the file) when not.
`odds-pipeline summary` prints what the warehouse holds.
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
