"""Video-instruction data: LLaVA-schema annotation files (or a weighted YAML mixture of them) to padded batches.

A batch (see :class:`VideoInstructCollator`)::

    frames        (B, T_max, 3, S, S) uint8     resized, not normalised (the vision encoder does that on the
                                                device); padded with zeros; T_max may be 0 (text-only batch)
    frame_mask    (B, T_max) bool               True where a real frame is
    frame_times   (B, T_max) float32            seconds from the start of the video
    input_ids     (B, L) int64                  text with one placeholder token per media sample
    attention_mask(B, L) int64
    labels        (B, L) int64                  -100 outside assistant spans
    question_ids  (B, Q) int64                  the first human turn without its tag, for text-conditioned reducers
    question_mask (B, Q) int64
    meta          list of dicts                 id, source file, entry index, media kind, duration, truncated
    skipped       list of dicts                 bad entries found while loading it (reason, file, index, id), each
                                                once per worker: known-bad entries are passed over silently
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.annotations import AnnotationFile, Source, mixture_index
from datamodules.conversation import IGNORE_INDEX, VIDEO_TOKEN, parse_entry, tokenize
from datamodules.errors import STRICT_HINT, DataError, SampleError, describe, row_id
from datamodules.isolation import DECODE_TIMEOUT_S, DecoderProcess
from datamodules.transforms import FrameTransform
from datamodules.video import FrameSampling, is_image, no_frames, read_image, read_video

log = logging.getLogger("lit_bvllm.data")


def resolve_media(root: str, rel: str, field: str, allow_outside_root: bool = False) -> str:
    """``root/rel``, refusing what the annotation says that leads out of ``root``: a ``..`` past it or an absolute
    path elsewhere. A symlink the data owner placed inside the root (a ``videos/`` folder on another disk, usual on
    cluster file systems) is followed. ``allow_outside_root`` (``--data.allow_outside_root``) reads any path."""
    path = os.path.normpath(os.path.join(root, rel))
    if allow_outside_root:
        return path
    inside, top = os.path.abspath(path), os.path.abspath(root)
    if os.path.commonpath([inside, top]) != top:
        raise SampleError("path_escape", field, f"'{rel}' leads outside the data root '{root}' (a '..' or an absolute "
                                                "path; set --data.allow_outside_root=true if your media live "
                                                "elsewhere, or give the media folder as the annotation's root)")
    return path


def load_blocklist(path: str | None) -> set[tuple[str, int]]:
    """``(annotation file, entry index)`` pairs listed as bad in a ``lit_bvllm scan`` report."""
    if path is None:
        return set()
    report = json.loads(Path(path).read_text())
    return {(str(Path(b["file"]).resolve()), int(b["index"])) for b in report.get("bad_entries", [])}


SHARE_MIN_ENTRIES = 100
"""The share of bad entries is judged over at least this many entries (or the whole set, if smaller), so that the
first few entries of a run, bad by chance, cannot stop it."""


class VideoInstructDataset(Dataset):
    """Entries of one or more annotation files, decoded, transformed and tokenized.

    A bad entry raises :class:`DataError` when ``strict``. Otherwise it is logged, reported once in the sample's
    ``skipped`` list (reason, file, index, id) and remembered, and the sample is replaced by a deterministic
    pseudo-random entry not yet known to be bad. Bad entries are remembered per process: each DataLoader worker
    keeps its own set for as long as it lives (the whole run with the data module's persistent workers), so an
    entry found bad is never read or reported again by that worker, and replacements depend on what it has met.
    The run stops (:class:`DataError`, with the count, the share and the way to ``lit_bvllm scan``) once more than
    ``max_bad_fraction`` of the entries a process has read are bad, judged over at least
    :data:`SHARE_MIN_ENTRIES` entries (or all of them, if fewer).

    With ``isolate_decoder`` (the default) videos are decoded in a child process
    (:class:`~datamodules.isolation.DecoderProcess`): a file that aborts or hangs the decoder is a ``crashed``
    entry, skipped and counted like any other, and every later entry using that file is ``crashed`` without
    opening it again.
    """

    def __init__(
        self,
        sources: list[Source],
        tokenizer,
        transform: FrameTransform,
        template: Literal["chat", "plain"] = "chat",
        sampling: FrameSampling = FrameSampling(max_frames=128),
        max_length: int = 2048,
        visual_tokens: int = 256,
        question_tokenizer=None,
        max_question_length: int = 64,
        strict: bool = False,
        max_bad_fraction: float = 0.5,
        blocklist: set[tuple[str, int]] | None = None,
        seed: int = 0,
        video_token: str = VIDEO_TOKEN,
        allow_outside_root: bool = False,
        decoder: str = "decord",
        isolate_decoder: bool = True,
        decode_timeout: float = DECODE_TIMEOUT_S,
    ):
        if visual_tokens >= max_length:
            raise ValueError(f"--data.visual_tokens ({visual_tokens}) must be smaller than "
                             f"--data.max_length ({max_length})")
        if not 0 < max_bad_fraction <= 1:
            raise ValueError(f"--data.max_bad_fraction must be in (0, 1], got {max_bad_fraction}")
        self.sources, self.tokenizer, self.transform = sources, tokenizer, transform
        self.template, self.sampling = template, sampling
        self.max_length, self.visual_tokens = max_length, visual_tokens
        self.question_tokenizer = question_tokenizer or tokenizer
        self.max_question_length, self.strict, self.max_bad_fraction, self.seed = (
            max_question_length, strict, max_bad_fraction, seed)
        self.video_token, self.allow_outside_root = video_token, allow_outside_root
        self.decoder, self.isolate_decoder, self.decode_timeout = decoder, isolate_decoder, decode_timeout
        if not decode_timeout > 0:
            raise ValueError(f"--data.decode_timeout must be > 0 seconds, got {decode_timeout}")
        self._decoder_process: DecoderProcess | None = None
        self.crashed_files: dict[str, str] = {}  # media path -> how decoding it crashed, in this process
        self.files = [AnnotationFile(s.path) for s in sources]
        blocked = blocklist or set()
        sizes, weights, keep = [], [], []
        for f, s in zip(self.files, sources):
            ok = np.ones(len(f), bool)
            for path, idx in blocked:
                if path == str(f.path) and idx < len(f):
                    ok[idx] = False
            keep.append(np.flatnonzero(ok))
            sizes.append(int(ok.sum()))
            weights.append(s.weight)
        self.kept = keep  # per source: the entry indices the blocklist leaves
        src, pos = mixture_index(sizes, weights, seed)
        self.source_of = src  # (N,) int32: source of each sample of the pass
        self.entry_of = np.empty_like(pos)  # (N,) int64: entry index inside its source file
        for s, kept in enumerate(keep):
            sel = src == s
            self.entry_of[sel] = kept[pos[sel]]
        self.num_blocked = sum(len(f) for f in self.files) - sum(sizes)
        self.bad: dict[tuple[int, int], str] = {}  # (source, entry index) -> reason, for entries this process found bad
        self.num_read = 0  # entries this process loaded successfully

    def __len__(self) -> int:
        return len(self.entry_of)

    def _key(self, j: int) -> tuple[int, int]:
        return int(self.source_of[j]), int(self.entry_of[j])

    def __getitem__(self, i: int) -> dict:
        skipped = []
        j = i
        for attempt in range(len(self) + 1):  # every failed load marks one more entry bad, so this ends
            if self._key(j) not in self.bad:
                try:
                    sample = self.load(j)
                except SampleError as err:
                    skipped.append(self._bad_entry(j, err))
                else:
                    self.num_read += 1
                    sample["skipped"] = skipped
                    return sample
            j = self._replacement(i, attempt)
        raise AssertionError("unreachable: every entry is known bad")

    def _bad_entry(self, j: int, err: SampleError) -> dict:
        """Remember entry ``j`` as bad, or stop the run (strict mode, or too large a share); its report row."""
        source, index = self._key(j)
        file, entry_id = str(self.files[source].path), self.entry_id(source, index)
        where = describe(err, file, index, entry_id)
        if self.strict:
            raise DataError(f"{where}. {STRICT_HINT}") from None
        log.warning("skipping %s", where)
        self.bad[source, index] = err.reason
        bad, read = len(self.bad), self.num_read + len(self.bad)
        if bad > self.max_bad_fraction * max(read, min(len(self), SHARE_MIN_ENTRIES)):
            per_reason = dict(sorted(Counter(self.bad.values()).items()))
            raise DataError(
                f"too many bad entries: {bad} of the {read} read so far by this data-loading process "
                f"({bad / read:.0%}), "
                f"above --data.max_bad_fraction={self.max_bad_fraction} (judged over at least "
                f"{min(len(self), SHARE_MIN_ENTRIES)} entries); per reason: {per_reason}; last: {where}. Run "
                "`lit_bvllm scan` with this config to list every bad entry (it writes scan_report.json; pass it as "
                "--data.blocklist), or raise --data.max_bad_fraction"
            ) from None
        return {"reason": err.reason, "file": file, "index": index, "id": row_id(entry_id, file, index)}

    def _replacement(self, i: int, attempt: int) -> int:
        """A deterministic pseudo-random sample (for ``i`` and ``attempt``) whose entry is not known to be bad."""
        rng = np.random.default_rng([self.seed, i, attempt])
        for _ in range(64):  # rejection: the known-bad share stays under max_bad_fraction, so this rarely fails
            j = int(rng.integers(len(self)))
            if self._key(j) not in self.bad:
                return j
        start = int(rng.integers(len(self)))
        for k in range(len(self)):
            if self._key(j := (start + k) % len(self)) not in self.bad:
                return j
        raise DataError(f"every entry of {[str(f.path) for f in self.files]} is bad "
                        f"({dict(Counter(self.bad.values()))}); "
                        "run `lit_bvllm scan` with this config to see why")

    def entry_id(self, source: int, index: int) -> str | None:
        """The ``id`` of an entry, or None (no id, or the entry is not even a JSON object)."""
        try:
            eid = self.files[source][index].get("id")
            return None if eid is None else str(eid)
        except SampleError:
            return None

    def prepare(self, source: int, index: int) -> tuple[dict, object, list[int], list[int], bool, str | None]:
        """Parse, validate and tokenize entry ``index`` of source ``source`` (no decoding).

        Returns ``(entry, conversation, input_ids, labels, truncated, media_path)``; raises :class:`SampleError`.
        """
        entry = self.files[source][index]
        conv = parse_entry(entry, self.video_token)
        ids, labels, truncated = tokenize(
            self.tokenizer, conv, self.template, self.video_token, self.max_length, self.visual_tokens
        )
        path = (resolve_media(self.sources[source].root, conv.media_path, conv.media, self.allow_outside_root)
                if conv.media else None)
        return entry, conv, ids, labels, truncated, path

    def decode(self, entry: dict, media: str | None, path: str | None) -> tuple[np.ndarray, np.ndarray, float]:
        """Frames ``(T, H, W, 3)`` uint8, their times and the duration; ``T = 0`` for a text-only entry."""
        if media is None:
            return no_frames(), np.zeros(0), 0.0
        if is_image(media, path):
            return read_image(path), np.zeros(1), 0.0
        start, end = entry.get("start"), entry.get("end")
        if not all(v is None or isinstance(v, (int, float)) for v in (start, end)):
            raise SampleError("bad_entry", "start/end", f"expected seconds, got {start!r}, {end!r}")
        return read_video(path, self.sampling, start, end, decoder=self.decoder)

    @property
    def decoder_process(self) -> DecoderProcess:
        """The decoder process of this dataset (one child per loading process, started on first use)."""
        if self._decoder_process is None:
            self._decoder_process = DecoderProcess(self, self.decode_timeout)
        return self._decoder_process

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_decoder_process": None}  # a spawned worker starts its own

    def frames(self, entry: dict, media: str | None, path: str | None) -> tuple[torch.Tensor, np.ndarray, float]:
        """The tower's input ``(T, 3, S, S)`` uint8, the frame times and the duration. With ``isolate_decoder`` a
        video is decoded and resized in the decoder process (only the resized frames cross back); a crash or hang
        there is this entry's ``crashed``, and the file's for every later entry."""
        if not self.isolate_decoder or media is None or is_image(media, path):
            frames, times, duration = self.decode(entry, media, path)
            return self.transform(frames), times, duration
        if path in self.crashed_files:
            raise SampleError("crashed", media, self.crashed_files[path])
        try:
            pixels, times, duration = self.decoder_process("resized", entry, media, path, what=f"'{path}'")
        except SampleError as err:
            if err.reason == "crashed":
                self.crashed_files[path] = f"decoding '{path}' for an earlier entry crashed: {err.detail}"
            raise
        return torch.from_numpy(pixels), times, duration

    def resized(self, entry: dict, media: str | None, path: str | None) -> tuple[np.ndarray, np.ndarray, float]:
        """:meth:`decode`, then the transform, as numpy (what the decoder process sends back)."""
        frames, times, duration = self.decode(entry, media, path)
        return self.transform(frames).numpy(), times, duration

    def load(self, j: int) -> dict:
        """Sample ``j`` of the mixture, or :class:`SampleError`."""
        return self.load_entry(int(self.source_of[j]), int(self.entry_of[j]))

    def load_entry(self, source: int, index: int) -> dict:
        """Entry ``index`` of source ``source`` as a sample (the batch contract's fields, one sample), or
        :class:`SampleError`."""
        entry, conv, ids, labels, truncated, path = self.prepare(source, index)
        q = self.question_tokenizer(conv.question, add_special_tokens=True, truncation=True,
                                    max_length=self.max_question_length)
        frames, times, duration = self.frames(entry, conv.media, path)
        return {
            "frames": frames,
            "frame_times": torch.as_tensor(times, dtype=torch.float32),
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "question_ids": torch.tensor(q["input_ids"], dtype=torch.long),
            "meta": {
                "id": None if entry.get("id") is None else str(entry.get("id")),
                "source": self.sources[source].path,
                "index": index,
                "media": conv.media,
                "duration": duration,
                "truncated": truncated,
                "question": conv.question,
            },
        }


class VideoInstructCollator:
    """Pads a list of samples into a batch (layout in the module docstring).

    Args:
        pad_id: token id used to pad ``input_ids``.
        image_size: frame side S, for the shape of an all-text batch's empty frame tensor.
        padding_side: ``right`` for training, ``left`` for batched generation.
        question_pad_id: token id used to pad ``question_ids`` (default ``pad_id``; differs with a Q-Former tokenizer).
    """

    def __init__(
        self,
        pad_id: int,
        image_size: int,
        padding_side: Literal["left", "right"] = "right",
        question_pad_id: int | None = None,
    ):
        self.pad_id, self.image_size, self.padding_side = pad_id, image_size, padding_side
        self.question_pad_id = pad_id if question_pad_id is None else question_pad_id

    def _pad(self, seqs: list[torch.Tensor], value: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = max((len(s) for s in seqs), default=0)
        out = torch.full((len(seqs), n), value, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for b, s in enumerate(seqs):
            sl = slice(n - len(s), n) if self.padding_side == "left" else slice(0, len(s))
            out[b, sl], mask[b, sl] = s, 1
        return out, mask

    def __call__(self, samples: list[dict]) -> dict:
        B = len(samples)
        t_max = max(len(s["frames"]) for s in samples)
        S = self.image_size
        dtype = samples[0]["frames"].dtype if samples else torch.uint8  # uint8 from the data modules' transform
        frames = torch.zeros(B, t_max, 3, S, S, dtype=dtype)
        frame_mask = torch.zeros(B, t_max, dtype=torch.bool)
        frame_times = torch.zeros(B, t_max)
        for b, s in enumerate(samples):
            t = len(s["frames"])
            frames[b, :t], frame_mask[b, :t], frame_times[b, :t] = s["frames"], True, s["frame_times"]
        input_ids, attention_mask = self._pad([s["input_ids"] for s in samples], self.pad_id)
        labels, _ = self._pad([s["labels"] for s in samples], IGNORE_INDEX)
        question_ids, question_mask = self._pad([s["question_ids"] for s in samples], self.question_pad_id)
        return {
            "frames": frames,
            "frame_mask": frame_mask,
            "frame_times": frame_times,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "question_ids": question_ids,
            "question_mask": question_mask,
            "meta": [s["meta"] for s in samples],
            "skipped": [k for s in samples for k in s.get("skipped", [])],
        }
