"""Shared helpers for benchmark scripts: each prints one JSON object of measured figures."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("ODDS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(REPO_ROOT))


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine() -> dict[str, object]:
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@contextmanager
def timer() -> iter[dict[str, float]]:
    out: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start


def emit(figures: dict[str, object]) -> None:
    print(json.dumps({**figures, "host": machine()}, indent=2, default=str))
