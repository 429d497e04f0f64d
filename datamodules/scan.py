"""Pre-flight validation of a training set: every entry parsed and tokenized, every media header opened.

The report (JSON) holds the counts per problem and every bad entry as ``{file, index, id, reason, field,
detail}``; pass it to training as ``--data.blocklist`` to leave those entries out.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import time
from collections import Counter
from pathlib import Path

from datamodules.errors import SampleError
from datamodules.io import write_json
from datamodules.video import IMAGE_SUFFIXES, probe_video, read_image
from datamodules.video_instruct import VideoInstructDataset

_DATASETS: list[VideoInstructDataset] = []
_CHUNK = 256


@functools.lru_cache(maxsize=1 << 16)
def _probe(path: str, image: bool) -> tuple[str, str, str] | None:
    """Open one media file's header (cached per process: QA sets ask many questions about one video)."""
    try:
        read_image(path) if image else probe_video(path)
    except SampleError as err:
        return err.reason, err.field, err.detail
    return None


def _check(dataset: VideoInstructDataset, source: int, index: int, decode: bool) -> dict | None:
    entry_id = None
    try:
        entry, conv, _, _, _, path = dataset.prepare(source, index)
        entry_id = entry.get("id")
        if conv.media is None:
            return None
        if decode:
            dataset.decode(entry, conv.media, path)
        elif (bad := _probe(path, conv.media == "image" or path.lower().endswith(IMAGE_SUFFIXES))) is not None:
            raise SampleError(*bad)
        return None
    except SampleError as err:
        return {
            "file": str(dataset.files[source].path), "index": index,
            "id": None if entry_id is None else str(entry_id),
            "reason": err.reason, "field": err.field, "detail": err.detail,
        }


def _check_chunk(args: tuple[int, int, int, int, bool]) -> list[dict]:
    d, source, lo, hi, decode = args
    return [bad for i in range(lo, hi) if (bad := _check(_DATASETS[d], source, i, decode)) is not None]


def scan_dataset(
    dataset: VideoInstructDataset | list[VideoInstructDataset], workers: int = 2, decode: bool = False
) -> dict:
    """Check every entry of every source file of ``dataset`` (weights and blocklist ignored); one report for all.

    Args:
        dataset: the dataset(s) whose files, roots, template and budgets define what "valid" means.
        workers: processes (each entry is independent).
        decode: decode every sampled frame instead of opening headers only (slower, catches mid-file corruption).
    """
    global _DATASETS
    _DATASETS = [dataset] if isinstance(dataset, VideoInstructDataset) else list(dataset)
    _probe.cache_clear()  # files may have changed since an earlier scan in this process
    files = [f for ds in _DATASETS for f in ds.files]
    jobs = [(d, s, lo, min(lo + _CHUNK, len(f)), decode)
            for d, ds in enumerate(_DATASETS) for s, f in enumerate(ds.files) for lo in range(0, len(f), _CHUNK)]
    t0 = time.perf_counter()
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            chunks = pool.map(_check_chunk, jobs)
    else:
        chunks = [_check_chunk(j) for j in jobs]
    bad = sorted((b for c in chunks for b in c), key=lambda b: (b["file"], b["index"]))
    total = sum(len(f) for f in files)
    return {
        "sources": [str(f.path) for f in files],
        "entries": total,
        "ok": total - len(bad),
        "bad": len(bad),
        "counts": dict(sorted(Counter(b["reason"] for b in bad).items())),
        "decode": decode,
        "seconds": round(time.perf_counter() - t0, 2),
        "bad_entries": bad,
    }


def write_report(report: dict, out: str | os.PathLike) -> Path:
    """Write ``report`` to ``out`` atomically (a crash never leaves half a report)."""
    return write_json(out, report)
