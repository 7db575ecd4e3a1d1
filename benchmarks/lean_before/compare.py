"""Every non-timing figure of two bench_model_targets JSON outputs compared: the differences."""

import json
import sys


def strip(d):
    drop = {
        "wall_s",
        "build_s",
        "load_s",
        "quote_features_s",
        "pair_features_s",
        "train_seconds",
        "train_samples_per_s",
        "phase_peak_rss_mb",
        "part_peak_rss_mb",
        "peak_rss_mb",
        "load_avg_start",
        "load_avg_end",
        "host",
        "seconds",
    }
    if isinstance(d, dict):
        return {k: strip(v) for k, v in d.items() if k not in drop}
    if isinstance(d, list):
        return [strip(x) for x in d]
    return d


with open(sys.argv[1]) as fa, open(sys.argv[2]) as fb:
    a, b = strip(json.load(fa)), strip(json.load(fb))
diffs = []


def walk(x, y, path):
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if k not in x or k not in y:
                diffs.append((path + "/" + k, x.get(k, "<absent>"), y.get(k, "<absent>")))
            else:
                walk(x[k], y[k], path + "/" + k)
    elif x != y:
        diffs.append((path, x, y))


walk(a, b, "")
for d in diffs:
    print("DIFF", d)
print("differences:", len(diffs))
