"""Selection quality without the LLM: did the frames a strategy kept show the needle the question asks about?

A needle question's *evidence* is the list of ``[start, end)`` spans (seconds) of the needle events it is about
(the synthetic needle set writes them as ``needle_times``: retrieval and counting, every event of the needle
asked about; ordering, every event). A frame decoded at time ``t`` shows an event when ``start <= t < end``, the
renderer's own rule (frames are decoded at their true timestamps, ``datamodules.video.read_video``).

- ``hit``: at least one kept frame shows an evidence event (the share of questions with a hit is the *hit rate*);
- ``event_recall``: the share of evidence events shown by at least one kept frame.

The same two numbers for ``uniform``, a uniform selection of as many frames as the strategy kept, from the same
frames (the segment-midpoint rule of the uniform reducers, ``lit_bvllm.reducers.sampling.uniform_indices``), are its
control: a text-conditioned selector is worth something only where it beats them.

A question every frame answers (``extra["every_frame"]``, the background colour ``bg_every1``: its evidence is the
whole video) is hit by any pick; it is left out of every number here, overall and per category, and counted
(``every_frame_questions``), so the hit rates stay those of the needle questions.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def in_spans(times, spans: list[list[float]]) -> np.ndarray:
    """``(T, S) bool``: whether time ``t`` (seconds) lies in span ``[start, end)`` (1e-6 s of tolerance): the one
    rule behind the hit rate, the batch's ``frame_evidence`` and the figures' needle marks."""
    t = np.asarray(times, dtype=np.float64).reshape(-1, 1)
    s = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
    return (t >= s[None, :, 0] - 1e-6) & (t < s[None, :, 1] - 1e-6)


def shown(times: list[float], spans: list[list[float]]) -> list[bool]:
    """Per span, whether any of ``times`` lies in ``[start, end)``."""
    return in_spans(times, spans).any(0).tolist()


def uniform_times(times: list[float], k: int) -> list[float]:
    """``k`` of ``times`` at the midpoints of equal segments (all of them when ``k >= len(times)``): index i is
    ``floor((i + 0.5) * len(times) / k)``, the rule of the uniform reducers (``lit_bvllm.reducers.sampling.
    uniform_indices``; the data side does not import the model side, so tests/test_selection.py checks that the
    two agree)."""
    n = len(times)
    if k >= n:
        return list(times)
    return [times[(2 * i + 1) * n // (2 * k)] for i in range(k)]


def selection_record(selected: list[float], given: list[float], spans: list[list[float]]) -> dict:
    """One item's selection numbers: kept-frame times, and hit / event recall for them and for uniform."""
    kept = sorted(set(round(t, 4) for t in selected))
    control = uniform_times(given, len(kept))
    ours, theirs = shown(kept, spans), shown(control, spans)
    return {
        "frames_given": len(given),
        "frames_kept": len(kept),
        "kept_times": kept,
        "hit": bool(any(ours)),
        "event_recall": float(np.mean(ours)) if ours else 0.0,
        "uniform_hit": bool(any(theirs)),
        "uniform_event_recall": float(np.mean(theirs)) if theirs else 0.0,
    }


def aggregate(records: list[dict], items: list) -> dict:
    """Hit rate and event recall of the strategy and of its uniform control, overall and per category, over the
    records that carry a ``selection``, one per question (the circular tries of a question share its ``group``
    and see the same frames), but the questions every frame answers (counted in ``every_frame_questions`` when
    there are any). ``items``: the benchmark's items, indexed by ``record["index"]``."""
    groups: dict[str, dict] = {}
    every: set[str] = set()
    for r in sorted(records, key=lambda r: r["index"]):
        sel = r.get("selection")
        if sel is not None:
            item = items[r["index"]]
            if item.extra.get("every_frame"):
                every.add(item.group)
            else:
                groups.setdefault(item.group, {**sel, "category": item.category})
    if not groups:
        return {"every_frame_questions": len(every)} if every else {}
    per: dict[str, list[dict]] = defaultdict(list)
    for g in groups.values():
        per[g["category"]].append(g)

    def summary(rows: list[dict]) -> dict:
        return {
            "questions": len(rows),
            "hit_rate": float(np.mean([r["hit"] for r in rows])),
            "uniform_hit_rate": float(np.mean([r["uniform_hit"] for r in rows])),
            "event_recall": float(np.mean([r["event_recall"] for r in rows])),
            "uniform_event_recall": float(np.mean([r["uniform_event_recall"] for r in rows])),
            "frames_kept": float(np.mean([r["frames_kept"] for r in rows])),
            "frames_given": float(np.mean([r["frames_given"] for r in rows])),
        }

    return {**summary(list(groups.values())), "per_category": {c: summary(v) for c, v in sorted(per.items())},
            **({"every_frame_questions": len(every)} if every else {})}
