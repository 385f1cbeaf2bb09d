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


def runs(path):
    """The wall times (ms) of each command in an `alternate` output, by
    command index, in the order of the rounds."""
    times = {}
    for line in open(path):
        index, nanos = line.split()
        times.setdefault(int(index), []).append(int(nanos) / 1e6)
    return times


def alternate(path):
    """median and p99 (ms) of each command in an `alternate` output."""
    times = runs(path)
    for index in sorted(times):
        print(f"{quantile(times[index], 0.5):.3f} {quantile(times[index], 0.99):.3f}")


def handoff(*paths):
    """Gaps (ms) between one section's end and the next one's start, within
    each file (one block of sections) and pooled over the files."""
    gaps = []
    for path in paths:
        spans = sorted(tuple(map(int, line.split())) for line in open(path) if line.strip())
        gaps += [(b[0] - a[1]) / 1e6 for a, b in zip(spans, spans[1:])]
    overlaps = sum(1 for g in gaps if g < 0)
    print(f"{len(gaps)} {quantile(gaps, 0.5):.3f} {quantile(gaps, 0.99):.3f} {overlaps}")


{"alternate": alternate, "handoff": handoff}[sys.argv[1]](*sys.argv[2:])
