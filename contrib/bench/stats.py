#!/usr/bin/env python3
"""Small statistics helpers for contrib/bench/run (no third-party modules)."""
import json
import sys


def quantile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    pos = (len(values) - 1) * q
    low = int(pos)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (pos - low)


def hyperfine(path):
    """median and p99 (ms) of each command in a hyperfine JSON export."""
    for result in json.load(open(path))["results"]:
        times = [t * 1000 for t in result["times"]]
        print(f"{quantile(times, 0.5):.3f} {quantile(times, 0.99):.3f}")


def handoff(path):
    """Gaps (ms) between one section's end and the next one's start."""
    spans = sorted(tuple(map(int, line.split())) for line in open(path) if line.strip())
    gaps = [(b[0] - a[1]) / 1e6 for a, b in zip(spans, spans[1:])]
    overlaps = sum(1 for g in gaps if g < 0)
    print(f"{len(gaps)} {quantile(gaps, 0.5):.3f} {quantile(gaps, 0.99):.3f} {overlaps}")


{"hyperfine": hyperfine, "handoff": handoff}[sys.argv[1]](*sys.argv[2:])
