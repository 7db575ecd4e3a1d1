"""Parse files of one source and write them to the store.

Every file is parsed before anything is written, so a malformed file fails the whole
ingestion with nothing written; then each load replaces its previous version in its own
transaction (all-or-nothing per load), so readers get in between loads
(`OddsStore.replace_loads`). A file is a load keyed by its path (`store.load_id_for`); a
file whose content another load of the source already holds is skipped and reported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from odds_pipeline.ingestion.sources import expand_paths
from odds_pipeline.ingestion.store import FileLoad, OddsStore, load_id_for
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
    """Parse every file, then write each as its own load; the result is what was written.

    Its `notes` say what the run did with the files: `loads` (ids written, in order),
    `duplicate_content` (path of a skipped copy -> the load holding its content) and
    `replaced_loads` (deleted load -> the load now holding its file: old-style ids, stale
    copies), the last two only when not empty.
    """
    files = [
        FileLoad.of(source, path, root=PROJECT_ROOT)
        for path in expand_paths(patterns, base=PROJECT_ROOT)
    ]
    per_file = {f.load_id: parse_file(f.path, **options) for f in files}
    report = store.replace_loads(source, per_file, files={f.load_id: f for f in files})
    result = combine([per_file[load_id] for load_id in report.written])
    result.notes["loads"] = list(report.written)
    if report.duplicates:
        by_id = {f.load_id: f for f in files}
        result.notes["duplicate_content"] = {
            relative_to_project(by_id[copy].path): holder
            for copy, holder in report.duplicates.items()
        }
    if report.replaced:
        result.notes["replaced_loads"] = dict(report.replaced)
    return result


def relative_to_project(path: str | Path) -> str:
    """Paths in metadata read the same on every machine when they are inside the project."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
