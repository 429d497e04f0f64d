"""The needle study's held-out sets: VNBench-format needle questions about videos of one exact length each.

At an equal LLM token budget θ, does text-conditioned frame selection beat uniform sampling on long videos whose
relevant events are short? The study compares every strategy on the same questions, so these sets are fixed before
any strategy is: ``eval/needle_<L>s/`` holds ``num_videos`` videos of exactly ``L`` seconds (``L`` one-fps frames at
the evaluation's 1 fps, ``datamodules.video.sample_times``), each with 2-4 needle events of 1-2 s, and the same
retrieval / ordering / counting questions with 4 circular tries and ``needle_times`` as ``eval/vnbench/``
(:func:`lit_bvllm.world.evalsets.vnbench_entries`), then the every-frame question (the background colour,
``bg_every1``) of each video, the diagnostic of whether frames reach the LLM at all.

Held out: video ``i`` of length ``L`` is drawn from ``numpy.random.default_rng([seed, NEEDLE_VIDEOS, L, i])``, the
needle questions of length ``L`` from ``[seed, NEEDLE_QUESTIONS, L]`` and the every-frame ones from ``[seed,
NEEDLE_EVERY_FRAME, L]``: streams no training video, eval video or other file of ``make-synthetic`` draws from
(``generate.py`` numbers its streams ``0..7`` and ``10``). A set depends only on ``(seed, L, i)`` and the drawing
flags (fps range, frame size): asking for more videos or other lengths adds videos, it never changes one already
written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lit_bvllm.world.evalsets import vnbench_entries
from lit_bvllm.world.render import write_mp4
from lit_bvllm.world.scenes import sample_video

NEEDLE_VIDEOS, NEEDLE_QUESTIONS = 8, 9  # random streams after generate.py's TRAIN_VIDEOS .. BENCHMARKS (0..7)
NEEDLE_EVERY_FRAME = 11  # the every-frame questions, after generate.py's VNBENCH_EVERY_FRAME (10)
NEEDLE_FILES = ("VNBench_qa.json", "metadata.json")  # per set, beside its videos/


def needle_folder(length: int) -> str:
    """``eval/needle_<L>s``: the set of ``length``-second videos, relative to ``make-synthetic``'s ``--out``."""
    return f"eval/needle_{length}s"


def needle_records(seed: int, length: int, num_videos: int, fps_range: tuple[int, int], width: int,
                   height: int) -> list[dict]:
    """The scene records (``scenes.py``) of one set: ``num_videos`` videos of exactly ``length`` s, >= 2 needle
    events of >= 2 distinct needles each (as the eval videos), ids ``needle<L>s_XXXX``."""
    folder = needle_folder(length)
    return [sample_video(np.random.default_rng([seed, NEEDLE_VIDEOS, length, i]), f"needle{length}s_{i:04d}",
                         f"{folder}/videos/needle{length}s_{i:04d}.mp4", "eval", (length, length), fps_range, width,
                         height, min_needles=2) for i in range(num_videos)]


def write_needle_sets(root: Path, seed: int, lengths: list[int], num_videos: int, fps_range: tuple[int, int],
                      width: int, height: int, write_json: Callable[..., None]) -> dict[str, dict]:
    """Write ``<root>/eval/needle_<L>s/{VNBench_qa.json, metadata.json, videos/}`` for each length.

    ``metadata.json`` holds the set's drawing config and its scene records (the needles' shapes, colours and
    times), ``VNBench_qa.json`` 3 needle questions x 4 tries per video, then the every-frame question x 4 tries
    per video. Videos of an earlier, larger run of the same length
    are deleted. Returns per folder ``{"videos", "items", "seconds", "generation_s"}`` (the wall time to draw,
    render and encode the set)."""
    out = {}
    for length in lengths:
        start = time.perf_counter()
        folder = root / needle_folder(length)
        (folder / "videos").mkdir(parents=True, exist_ok=True)
        records = needle_records(seed, length, num_videos, fps_range, width, height)
        for record in records:
            write_mp4(record, root / record["path"])
        keep = {Path(r["path"]).name for r in records}
        for stale in (folder / "videos").glob(f"needle{length}s_*.mp4"):
            if stale.name not in keep:
                stale.unlink()
        entries = vnbench_entries(records, np.random.default_rng([seed, NEEDLE_QUESTIONS, length]),
                                  np.random.default_rng([seed, NEEDLE_EVERY_FRAME, length]))
        config = {"seed": seed, "length": length, "num_videos": num_videos, "min_fps": fps_range[0],
                  "max_fps": fps_range[1], "width": width, "height": height}
        write_json(folder / "VNBench_qa.json", entries)
        write_json(folder / "metadata.json", {"config": config, "videos": records}, sort_keys=True)
        out[needle_folder(length)] = {"videos": len(records), "items": len(entries),
                                      "seconds": length * len(records),
                                      "generation_s": round(time.perf_counter() - start, 1)}
    return out

