"""Source adapters: each turns one odds format into canonical candidate quotes (no Dagster).

Every adapter module exposes `SOURCE` (its name) and
`parse_file(path, *, keep_in_play=False, ...) -> ParseResult`; a file is one load
(`load_id_for(SOURCE, path)`), so re-ingesting a file replaces what it wrote.
"""

from __future__ import annotations

import glob
from pathlib import Path


def expand_paths(patterns: list[str] | tuple[str, ...], *, base: Path | None = None) -> list[Path]:
    """Files named by paths or globs, sorted and de-duplicated; a pattern matching nothing is an error."""
    found: list[Path] = []
    for pattern in patterns:
        raw = Path(pattern).expanduser()
        if not raw.is_absolute() and base is not None:
            raw = base / raw
        if any(ch in str(raw) for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(raw), recursive=True))
            matches = [m for m in matches if m.is_file()]
        elif raw.is_dir():
            matches = sorted(p for p in raw.iterdir() if p.is_file())
        else:
            matches = [raw] if raw.is_file() else []
        if not matches:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        found.extend(m.resolve() for m in matches)
    seen: set[Path] = set()
    unique = []
    for path in found:
        if path not in seen:
            seen.add(path)
            unique.append(path)
    return unique


def load_id_for(source: str, path: str | Path) -> str:
    """One file = one load, keyed by file name so the same file in another folder replaces it."""
    return f"{source}:{Path(path).name}"
