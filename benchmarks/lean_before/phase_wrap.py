"""Run HEAD's bench_model_targets with per-phase peak RSS (VmHWM reset at each boundary).

Usage (from the repository root; the "before" tree is commit c875db1 checked out aside):
    git worktree add /tmp/lean_before c875db1
    PYTHONPATH=/tmp/lean_before .venv/bin/python benchmarks/lean_before/phase_wrap.py \
        --part transformer-sim > before.json
    .venv/bin/python benchmarks/lean_before/compare.py before.json after.json
Patches the module's phase functions only (no change to what they compute); prints
{"phase_peak_rss_mb": {...}} to stderr as one JSON line at the end.
"""

import functools
import json
import os
import sys
from contextlib import contextmanager

BEFORE = os.environ.get("LEAN_BEFORE_TREE", "/tmp/lean_before")
sys.path.insert(0, f"{BEFORE}/benchmarks")
sys.path.insert(0, BEFORE)
import bench_model_targets as B  # noqa: E402


def _hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


STACK, PEAKS = [], {}


def _boundary():
    h = _hwm()
    for p in STACK:
        PEAKS[p] = max(PEAKS.get(p, 0.0), h)
    _reset()


@contextmanager
def phase(name):
    _boundary()
    STACK.append(name)
    try:
        yield
    finally:
        _boundary()
        STACK.pop()


def wrap(mod, attr, name):
    f = getattr(mod, attr)

    @functools.wraps(f)
    def g(*a, **k):
        with phase(name):
            return f(*a, **k)

    setattr(mod, attr, g)


from odds_pipeline.training import loop as L  # noqa: E402  (after the path insert)

wrap(B, "_simulate", "load")
wrap(B.F, "load_odds_api_change_log", "load")
wrap(B, "_compute_features", "features")
wrap(B.D, "build_arbitrage_pair_sequences", "build")
wrap(B, "_split", "split")
wrap(B, "_subsample_negatives", "subsample")
wrap(B, "_scaled", "scale")
wrap(L, "fit", "train")
wrap(L, "predict_proba", "predict")
wrap(B, "_pair_report", "report_total")
sys.argv = ["bench_model_targets.py", *sys.argv[1:]]
try:
    with phase("total"):
        B.main()
finally:
    print(
        json.dumps({"phase_peak_rss_mb": {k: round(v, 1) for k, v in PEAKS.items()}}),
        file=sys.stderr,
    )
