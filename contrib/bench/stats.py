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


def rounds(path):
    """Quartiles (p25/p50/p75) of the per-round ratio of the first command's
    time to the second's in an `alternate` output of two commands run in
    turns: how far a ratio of medians near a goal can be trusted."""
    times = runs(path)
    ratios = [a / b for a, b in zip(times[0], times[1])]
    print("/".join(f"{quantile(ratios, q):.2f}" for q in (0.25, 0.5, 0.75)))


def handoff(*paths):
    """Gaps (ms) between one section's end and the next one's start, within
    each file (one block of sections) and pooled over the files."""
    gaps = []
    for path in paths:
        spans = sorted(tuple(map(int, line.split())) for line in open(path) if line.strip())
        gaps += [(b[0] - a[1]) / 1e6 for a, b in zip(spans, spans[1:])]
    overlaps = sum(1 for g in gaps if g < 0)
    print(f"{len(gaps)} {quantile(gaps, 0.5):.3f} {quantile(gaps, 0.99):.3f} {overlaps}")


{"alternate": alternate, "rounds": rounds, "handoff": handoff}[sys.argv[1]](*sys.argv[2:])
