"""A paired bootstrap of the difference in circular accuracy between two methods, from their per-item predictions.

VNBench's circular rule scores a question group (one question, its 4 option rotations) right only when every try
is right. Two methods evaluated on one benchmark answer the same groups, and with several seeds each method has
one 0/1 per group and seed. The interval resamples question groups with replacement, the same groups for both
methods and every seed (paired across methods, seeds and questions); seeds are not resampled.

The statistic is the mean over groups (and seeds) of ``correct_a - correct_b``: the difference of the circular
accuracies when the task types have as many groups each (VNBench's overall number is the mean over types), as the
synthetic needle sets do.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def group_of(item_id: str) -> str:
    """The question group of a VNBench item id: the id without its ``_<try>`` suffix."""
    return str(item_id).rsplit("_", 1)[0]


def circular_groups(path: str | Path) -> dict[str, bool]:
    """``{group: every try right}`` from a ``*_predictions.jsonl`` (fields ``id``, ``correct``). A group with fewer
    tries than the file's fullest group is incomplete and left out, as VNBench's scorer leaves it out."""
    tries: dict[str, list[bool]] = defaultdict(list)
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                tries[group_of(rec["id"])].append(bool(rec.get("correct")))
    full = max((len(v) for v in tries.values()), default=0)
    return {g: all(v) for g, v in tries.items() if len(v) == full}


@dataclass(frozen=True)
class PairedInterval:
    """The observed difference (a - b) and its bootstrap interval; ``groups`` paired groups, ``seeds`` paired seeds,
    ``dropped`` groups left out because a run lacked them."""

    a: float
    b: float
    diff: float
    low: float
    high: float
    level: float
    groups: int
    seeds: int
    dropped: int
    resamples: int


def paired_bootstrap(a: dict[object, dict[str, bool]], b: dict[object, dict[str, bool]], resamples: int = 10000,
                     level: float = 0.95, seed: int = 0) -> PairedInterval:
    """The percentile interval of ``mean(correct_a - correct_b)`` over resampled question groups.

    Args:
        a: per seed, ``{group: correct}`` of method a (:func:`circular_groups`).
        b: the same for method b; only the seeds both have are paired.
        resamples: bootstrap resamples.
        level: the interval's coverage (0.95: the 2.5th and 97.5th percentiles).
        seed: the resampling generator's seed: the same inputs and seed give the same interval.
    """
    seeds = sorted(set(a) & set(b), key=str)
    if not seeds:
        raise ValueError(f"paired bootstrap: no seed in common (a: {sorted(a, key=str)}, b: {sorted(b, key=str)})")
    runs = [a[s] for s in seeds] + [b[s] for s in seeds]
    every = set().union(*runs)
    groups = sorted(set.intersection(*(set(r) for r in runs)))
    if not groups:
        raise ValueError("paired bootstrap: no question group is complete in every run")
    ca = np.array([[a[s][g] for g in groups] for s in seeds], dtype=float)  # (seeds, groups)
    cb = np.array([[b[s][g] for g in groups] for s in seeds], dtype=float)
    d = (ca - cb).mean(0)  # (groups,): the seed-mean difference of each group
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(groups), size=(resamples, len(groups)))
    stats = d[idx].mean(1)  # (resamples,)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return PairedInterval(float(ca.mean()), float(cb.mean()), float(d.mean()), float(low), float(high), level,
                          len(groups), len(seeds), len(every) - len(groups), resamples)
