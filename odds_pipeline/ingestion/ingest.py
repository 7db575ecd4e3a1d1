"""Parse files of one source and write them to the store.

Every file is parsed before anything is written, so a malformed file fails the whole
ingestion with nothing written; then each load replaces its previous version in its own
transaction (all-or-nothing per load), so readers get in between loads
(`OddsStore.replace_loads`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from odds_pipeline.ingestion.sources import expand_paths, load_id_for
from odds_pipeline.ingestion.store import OddsStore
from odds_pipeline.market.quotes import ParseResult, combine
from odds_pipeline.paths import PROJECT_ROOT

# CLI / config names -> adapter modules (imported lazily).
SOURCE_MODULES = {
    "odds-api": "odds_pipeline.ingestion.sources.odds_api",
    "football-data": "odds_pipeline.ingestion.sources.football_data",
    "sbr": "odds_pipeline.ingestion.sources.sbr",
}


def adapter(name: str) -> ModuleType:
    try:
        return importlib.import_module(SOURCE_MODULES[name])
    except KeyError:
        raise ValueError(
            f"unknown source {name!r}; expected one of {sorted(SOURCE_MODULES)}"
        ) from None


def parse_paths(
    parse_file: Callable[..., ParseResult],
    source: str,
    patterns: list[str],
    **options: object,
) -> dict[str, ParseResult]:
    """load_id -> parsed file, for every file the patterns name (relative to the project)."""
    files = expand_paths(patterns, base=PROJECT_ROOT)
    return {load_id_for(source, path): parse_file(path, **options) for path in files}


def ingest_paths(
    store: OddsStore,
    parse_file: Callable[..., ParseResult],
    source: str,
    patterns: list[str],
    **options: object,
) -> ParseResult:
    per_file = parse_paths(parse_file, source, patterns, **options)
    store.replace_loads(source, per_file)
    return combine(list(per_file.values()))


def relative_to_project(path: str | Path) -> str:
    """Paths in metadata read the same on every machine when they are inside the project."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
