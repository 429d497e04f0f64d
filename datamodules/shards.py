"""Frame shards: a training set decoded once at its sampling rule and written as litdata chunks, then streamed.

``lit_bvllm shard --config <the fit config> --out DIR`` (:func:`write_shards`) reads the data section ``fit``
reads, checks every entry with the scan's rules (:func:`datamodules.scan.scan_dataset`: headers opened in worker
processes, a crash or hang is that entry's ``crashed``), then decodes, resizes and tokenizes each good entry once,
exactly as the on-the-fly loader would, and writes it with ``litdata.optimize`` (parallel over ``--workers``
processes; ``use_checkpoint``: an interrupted run, started again, finishes the work left). Each source file of the
train (and val) set becomes one litdata dataset, ``DIR/<split>/<k>-<file stem>``; ``DIR/shard_report.json`` lists
every entry left out (scan and decode problems alike: the format of a scan report, usable as
``--data.blocklist``); ``DIR/shards.json``, written last, names the datasets, their weights and sizes, and the
settings the shards were made with. A shard item holds::

    frames        bytes      the resized frames, (T, 3, S, S) uint8, as T JPEG images (quality q, 4:4:4) or raw
    frame_bytes   (T,) int64 bytes of each frame in ``frames``
    frame_times   (T,) float32
    input_ids, labels, question_ids   int64, as the loader tokenizes them (the template, budget and truncation)
    meta          str        the sample's meta (JSON); empty for an entry that failed to decode (:data:`TOMBSTONE`)

``VideoInstructDataModule(streaming=DIR)`` (``fit --data.streaming DIR``) reads them through litdata's
``StreamingDataset`` / ``StreamingDataLoader`` into the same batches: chunk-wise shuffling, sharding over ranks
and loader workers, resumable from the loader's state (which Lightning stores in the checkpoint), and a weighted
mixture of sources (``CombinedStreamingDataset``). The folder may be an object-store URL (``s3://...``): litdata
uploads and streams the chunks, and the manifest travels through obstore.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from litdata import CombinedStreamingDataset, StreamingDataset, optimize

from datamodules.errors import SampleError, describe, row_id
from datamodules.io import write_json

log = logging.getLogger("lit_bvllm.data")

MANIFEST = "shards.json"
REPORT = "shard_report.json"
FORMAT = 1
FRAME_FORMATS = ("jpeg", "raw")
SETTINGS = ("tokenizer", "template", "max_length", "visual_tokens", "video_token", "question_tokenizer",
            "max_question_length", "frame_mode", "fps", "num_frames", "max_frames", "vision_tower", "transform",
            "image_size", "resize_mode", "media_root", "allow_outside_root", "blocklist")
"""The data settings a shard is made with (what it holds depends on them): a streaming run must ask the same."""
PATHS = ("tokenizer", "question_tokenizer", "vision_tower", "media_root", "blocklist")


def is_url(path: str) -> bool:
    return "://" in str(path)


def shard_settings(hparams) -> dict:
    """The :data:`SETTINGS` of a data module's hyperparameters, local paths resolved."""
    out = {}
    for key in SETTINGS:
        value = hparams.get(key)
        if key in PATHS and value is not None:
            value = str(Path(value).expanduser().resolve())
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ one item


def pack(sample: dict, frames: Literal["jpeg", "raw"] = "jpeg", quality: int = 90) -> dict:
    """A sample of :class:`~datamodules.video_instruct.VideoInstructDataset` as a shard item (module docstring)."""
    x = sample["frames"]  # (T, 3, S, S) uint8
    if x.dtype != torch.uint8:
        raise TypeError(f"shards hold uint8 frames, got {x.dtype}: the data module's transform must not normalise")
    if frames == "raw":
        blobs = [f.numpy().tobytes() for f in x]
    else:
        from PIL import Image

        blobs = []
        for f in x:
            buf = io.BytesIO()
            Image.fromarray(f.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=quality, subsampling=0)
            blobs.append(buf.getvalue())
    return {
        "frames": b"".join(blobs),
        "frame_bytes": np.array([len(b) for b in blobs], np.int64),
        "frame_times": sample["frame_times"].numpy().astype(np.float32),
        "input_ids": sample["input_ids"].numpy(),
        "labels": sample["labels"].numpy(),
        "question_ids": sample["question_ids"].numpy(),
        "meta": json.dumps(sample["meta"]),
    }


def unpack(item: dict, image_size: int, frames: Literal["jpeg", "raw"] = "jpeg") -> dict:
    """A shard item back as the sample the on-the-fly loader gives (``skipped`` empty: bad entries were left out
    when the shards were written)."""
    blob, sizes = memoryview(item["frames"]), np.asarray(item["frame_bytes"], np.int64)
    S = image_size
    out = torch.empty(len(sizes), 3, S, S, dtype=torch.uint8)
    ends = np.cumsum(sizes)
    if frames == "raw":
        if len(sizes):
            out.copy_(torch.frombuffer(bytearray(blob), dtype=torch.uint8).view(len(sizes), 3, S, S))
    else:
        from PIL import Image

        for t, (lo, hi) in enumerate(zip(ends - sizes, ends)):
            with Image.open(io.BytesIO(blob[lo:hi])) as im:
                out[t] = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    return {
        "frames": out,
        "frame_times": torch.from_numpy(np.asarray(item["frame_times"], np.float32).copy()),
        "input_ids": torch.from_numpy(np.asarray(item["input_ids"], np.int64).copy()),
        "labels": torch.from_numpy(np.asarray(item["labels"], np.int64).copy()),
        "question_ids": torch.from_numpy(np.asarray(item["question_ids"], np.int64).copy()),
        "meta": json.loads(item["meta"]),
        "skipped": [],
    }


# ------------------------------------------------------------------------------------------------ writing

_JOB: tuple | None = None  # (dataset, source, frame format, quality, folder of bad-entry rows): set before forking


TOMBSTONE = {"frames": b"", "frame_bytes": np.zeros(0, np.int64), "frame_times": np.zeros(0, np.float32),
             "input_ids": np.zeros(0, np.int64), "labels": np.zeros(0, np.int64),
             "question_ids": np.zeros(0, np.int64), "meta": ""}
"""What an entry that fails to decode is written as. litdata's writer counts the items it was given, not the inputs
it read, and resumes an interrupted run from that count: an input that gave no item would make a resumed run
write the items after it twice. So every input gives one item; the reader passes over these (``meta`` empty)."""


def _encode(index: int) -> dict:
    """litdata's ``fn``: entry ``index`` of the job's source as a shard item, or a :data:`TOMBSTONE` (and its report
    row) when it cannot be used."""
    dataset, source, frames, quality, bad_dir = _JOB
    try:
        return pack(dataset.load_entry(source, index), frames, quality)
    except SampleError as err:
        file = str(dataset.files[source].path)
        entry_id = dataset.entry_id(source, index)
        log.warning("not written: %s", describe(err, file, index, entry_id))
        write_json(Path(bad_dir) / f"{source}-{index}.json",
                   {"file": file, "index": index, "id": row_id(entry_id, file, index), "reason": err.reason,
                    "field": err.field, "detail": err.detail})
        return dict(TOMBSTONE)


def _dataset_dir(split: str, source: int, path) -> str:
    return f"{split}/{source:02d}-{Path(path).stem}"


def _join(root: str, rel: str) -> str:
    return f"{root.rstrip('/')}/{rel}" if is_url(root) else str(Path(root) / rel)


def write_shards(data, out: str, workers: int = 2, frames: Literal["jpeg", "raw"] = "jpeg", jpeg_quality: int = 90,
                 chunk_bytes: str = "64MB", timeout: float = 300.0, overwrite: bool = False) -> dict:
    """Decode every good entry of ``data``'s train (and val) set once and write it as litdata shards in ``out``.

    Args:
        data: a :class:`~datamodules.video_instruct_datamodule.VideoInstructDataModule` (the fit config's data).
        out: the shard folder, local or an object-store URL.
        workers: processes that check headers and decode (the scan's and litdata's workers).
        frames: ``jpeg`` (each resized frame a JPEG image) or ``raw`` (the uint8 pixels).
        jpeg_quality: JPEG quality (1-95), 4:4:4 chroma.
        chunk_bytes: litdata chunk size.
        timeout: seconds one entry's header check may take (the scan's).
        overwrite: delete a local ``out`` that holds a finished or different shard set first.
    Returns:
        the manifest (also written to ``out/shards.json``).
    """
    global _JOB
    from datamodules.scan import scan_dataset

    if frames not in FRAME_FORMATS:
        raise ValueError(f"--frames must be one of {FRAME_FORMATS}, got {frames!r}")
    if not 1 <= jpeg_quality <= 95:
        raise ValueError(f"--jpeg_quality must be in [1, 95], got {jpeg_quality}")
    h = data.hparams
    if h.get("streaming"):
        raise ValueError("lit_bvllm shard reads the annotation files: leave --data.streaming unset for it")
    data.setup("fit")
    sets = {"train": data.train_set, **({"val": data.val_set} if data.val_set is not None else {})}
    settings = shard_settings(h)
    started = {"format": FORMAT, "settings": settings, "frames": frames, "jpeg_quality": jpeg_quality,
               "frame_size": data.transform.image_size,
               "sources": {split: [str(f.path) for f in ds.files] for split, ds in sets.items()}}
    url = is_url(out)
    staging = Path(tempfile.mkdtemp(prefix="shard_")) if url else Path(out)
    progress = staging / "_progress.json"
    if not url:
        if overwrite and staging.exists():
            shutil.rmtree(staging)
        if staging.exists() and any(staging.iterdir()):
            before = json.loads(progress.read_text()) if progress.exists() else None
            if before is None or before["started"] != started:
                raise FileExistsError(
                    f"--out '{out}' holds {'a finished shard set' if (staging / MANIFEST).exists() else 'other files'}"
                    " made with other settings or sources: choose another --out, or add --overwrite true to replace it")
    staging.mkdir(parents=True, exist_ok=True)
    state = json.loads(progress.read_text()) if progress.exists() else {"started": started, "done": {}}
    write_json(progress, state)

    t0 = time.perf_counter()
    report = scan_dataset(list(sets.values()), workers, decode=False, timeout=timeout)
    scanned_bad = {(b["file"], b["index"]) for b in report["bad_entries"]}
    bad_dir = staging / "_bad"
    bad_dir.mkdir(exist_ok=True)
    manifest = {**started, "splits": {}}
    for split, ds in sets.items():
        manifest["splits"][split] = []
        for s, f in enumerate(ds.files):
            rel = _dataset_dir(split, s, f.path)
            target = _join(out, rel)
            entries = [int(i) for i in ds.kept[s] if (str(f.path), int(i)) not in scanned_bad]
            bad_part = bad_dir / rel.replace("/", "_")  # this dataset's decode failures, a row each
            if rel not in state["done"]:
                _JOB = (ds, s, frames, jpeg_quality, bad_part)
                bad_part.mkdir(exist_ok=True)
                if entries:
                    optimize(_encode, entries, target, num_workers=max(1, min(workers, len(entries))),
                             chunk_bytes=chunk_bytes, use_checkpoint=True, start_method="fork", verbose=False)
                _JOB = None
                items = len(StreamingDataset(target)) if entries else 0
                if items != len(entries):  # one item per input, resumed or not
                    raise RuntimeError(
                        f"{target} holds {items} items for {len(entries)} entries of {f.path}: an interrupted write "
                        "resumed wrongly (litdata's checkpoint); write it again with --overwrite true")
                tombstones = len(list(bad_part.glob("*.json")))
                state["done"][rel] = {"items": items, "samples": items - tombstones}
                write_json(progress, state)
            manifest["splits"][split].append({"dir": rel, "annotation": str(f.path), "weight": ds.sources[s].weight,
                                              "entries": len(f), **state["done"][rel]})
    decode_bad = [json.loads(p.read_text()) for p in sorted(bad_dir.glob("*/*.json"))]
    bad = sorted(report["bad_entries"] + decode_bad, key=lambda b: (b["file"], b["index"]))
    counts = dict(sorted(Counter(b["reason"] for b in bad).items()))
    write_json(staging / REPORT, {"sources": report["sources"], "entries": report["entries"],
                                  "ok": report["entries"] - len(bad), "bad": len(bad), "counts": counts,
                                  "decode": True, "seconds": round(time.perf_counter() - t0, 2), "bad_entries": bad})
    manifest.update(written=sum(d["samples"] for split in manifest["splits"].values() for d in split),
                    bad=len(bad), counts=counts, seconds=round(time.perf_counter() - t0, 2))
    write_json(staging / MANIFEST, manifest)
    if url:
        _put(out, REPORT, (staging / REPORT).read_bytes())
        _put(out, MANIFEST, (staging / MANIFEST).read_bytes())
        shutil.rmtree(staging)
    return manifest


def _store(url: str):
    """The obstore store of an object-store URL (the manifest and report travel through it)."""
    from obstore.store import from_url

    return from_url(url)


def _put(url: str, name: str, data: bytes) -> None:
    import obstore

    obstore.put(_store(url), name, data)


# ------------------------------------------------------------------------------------------------ reading


def read_manifest(folder: str) -> dict:
    """``folder/shards.json`` (a local folder or an object-store URL); a clear error when it is not a finished
    shard set."""
    if is_url(folder):
        import obstore

        try:
            text = bytes(obstore.get(_store(folder), MANIFEST).bytes()).decode()
        except Exception as e:
            raise FileNotFoundError(f"--data.streaming '{folder}': no {MANIFEST} there ({type(e).__name__}: {e}); "
                                    "write the shards with `lit_bvllm shard --config <fit config> --out DIR`") from None
    else:
        path = Path(folder).expanduser() / MANIFEST
        if not path.is_file():
            partial = (Path(folder).expanduser() / "_progress.json").is_file()
            raise FileNotFoundError(
                f"--data.streaming '{folder}' holds no {MANIFEST}: "
                + ("its `lit_bvllm shard` run did not finish; run the same command again to finish it"
                   if partial else "write the shards with `lit_bvllm shard --config <fit config> --out DIR`"))
        text = path.read_text()
    manifest = json.loads(text)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"--data.streaming '{folder}': shard format {manifest.get('format')}, this version reads "
                         f"{FORMAT}; write them again with `lit_bvllm shard`")
    return manifest


def check_settings(manifest: dict, hparams, folder: str) -> None:
    """Refuse shards made with other data settings than this run's (their frames or tokens would differ)."""
    now = shard_settings(hparams)
    then = manifest["settings"]
    differ = [k for k in SETTINGS if then.get(k) != now.get(k)]
    if differ:
        what = "; ".join(f"--data.{k}: shards {then.get(k)!r}, this run {now.get(k)!r}" for k in differ)
        raise ValueError(f"--data.streaming '{folder}' was written with other data settings ({what}): write the "
                         "shards again with this config (`lit_bvllm shard`), or set those flags as the shards have "
                         "them")


class ReplaceTombstones:
    """The collator of a shard loader: the data module's, with each :data:`TOMBSTONE` (None from
    :class:`FrameShards`) replaced by the last real sample this loading process collated, as the on-the-fly loader
    replaces a bad entry by another: a batch keeps its size (a batch of one that came out empty would stop a
    training step, and a rank's missing step would hang the others). A tombstone before any real sample is dropped.
    """

    def __init__(self, collate):
        self.collate, self.last = collate, None

    def __call__(self, samples: list) -> dict:
        out = []
        for s in samples:
            if s is not None:
                self.last = s
            if (s or self.last) is not None:
                out.append(s or self.last)
        return self.collate(out)


class FrameShards(StreamingDataset):
    """One litdata dataset of a shard folder, whose items come back as the on-the-fly loader's samples."""

    def __init__(self, input_dir: str, image_size: int, frames: Literal["jpeg", "raw"], **kwargs):
        super().__init__(input_dir, **kwargs)
        self.image_size, self.frames = image_size, frames

    def __getitem__(self, index):
        item = super().__getitem__(index)
        return None if item["meta"] == "" else unpack(item, self.image_size, self.frames)  # a TOMBSTONE: None


def shard_stream(folder: str, manifest: dict, split: str, shuffle: bool, seed: int, cache_dir: str | None = None):
    """The split's datasets: one :class:`FrameShards`, or a weighted ``CombinedStreamingDataset`` of several.

    In a mixture each sample is drawn from a source with probability proportional to weight x size, and the epoch
    ends when the source of the highest weight runs out: each source gives weight / highest weight of its samples
    per epoch (the on-the-fly loader's proportions; its epoch, round(weight x size) samples of each, is longer by
    the highest weight when that exceeds 1). A weighted mixture has no length: set ``--trainer.max_steps``."""
    parts = [d for d in manifest["splits"].get(split, []) if d["samples"] > 0]
    if not parts:
        raise ValueError(f"--data.streaming '{folder}' has no {split} samples")
    # drop_last: litdata's default, on under several ranks: every rank gets as many full batches (uneven counts
    # would leave one rank waiting in a collective at the epoch's end), so the samples past the last whole batch of
    # each rank and worker rest that epoch (measured: 6 samples, 2 ranks, batch 2: 4 seen; 8 samples: all 8)
    sets = [FrameShards(_join(folder, d["dir"]), manifest["frame_size"], manifest["frames"], cache_dir=cache_dir,
                        shuffle=shuffle, seed=seed) for d in parts]
    if len(sets) == 1 and parts[0]["weight"] == 1:
        return sets[0]
    return CombinedStreamingDataset(sets, seed=seed, weights=[d["weight"] * d["samples"] for d in parts],
                                    iterate_over_all=False)
