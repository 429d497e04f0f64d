"""Annotation files as compact byte-offset indexes, and YAML mixtures of them.

A 1M-entry LLaVA-style JSON file held as a list of dicts costs gigabytes, and DataLoader workers touching it
copy it page by page (reference counts write to every object: the copy-on-write blow-up). Here a file is
indexed once into two ``int64`` numpy arrays (byte start and length of every entry); an entry is parsed only
when it is read, with ``os.pread`` on a descriptor each worker opens for itself. The arrays are cached on disk
(keyed by path, size and mtime) so the next run starts at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from datamodules.errors import SampleError
from datamodules.io import atomic_file

_CHUNK = 1 << 24


def _cache_dir() -> Path:
    return Path(os.environ.get("LIT_BVLLM_CACHE", Path.home() / ".cache" / "lit_bvllm")) / "index"


def _jsonl_offsets(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of every non-blank line, scanning the bytes in chunks with numpy."""
    size = path.stat().st_size
    newlines = []
    with open(path, "rb") as f:
        pos = 0
        while chunk := f.read(_CHUNK):
            newlines.append(np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10) + pos)
            pos += len(chunk)
    ends = np.concatenate(newlines + [np.array([size])]).astype(np.int64)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lengths = ends - starts
    keep = lengths > 0
    if keep.any():  # drop whitespace-only lines without parsing the others
        with open(path, "rb") as f:
            for i in np.flatnonzero(keep & (lengths < 8)):
                f.seek(starts[i])
                keep[i] = bool(f.read(int(lengths[i])).strip())
    return starts[keep], lengths[keep]


def _json_list_offsets(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Start and length (in bytes) of every element of a top-level JSON list.

    Each element is parsed once to find where it ends and then dropped. Peak memory is about twice the file's size
    (its bytes and its text), once, in the main process; the offsets are then cached, and JSONL avoids the peak.
    """
    text = path.read_bytes().decode("utf-8")
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    byte_pos = len(text[:i].encode("utf-8"))
    starts, lengths = [], []
    n = len(text)
    while True:
        j = i
        while j < n and text[j] in " \t\r\n,":  # separators are ASCII: one char, one byte
            j += 1
        byte_pos += j - i
        i = j
        if i >= n:
            raise ValueError(f"{path}: JSON list is not closed with ']'")
        if text[i] == "]":
            break
        try:
            _, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: invalid JSON in element {len(starts)} (line {e.lineno}, column {e.colno}): {e.msg}. "
                "A broken JSON list cannot be skipped entry by entry; fix the file or convert it to JSONL."
            ) from None
        element = text[i:end]
        nbytes = end - i if element.isascii() else len(element.encode("utf-8"))
        starts.append(byte_pos)
        lengths.append(nbytes)
        byte_pos += nbytes
        i = end
    return np.asarray(starts, np.int64), np.asarray(lengths, np.int64)


class AnnotationFile:
    """Random access to the entries of one JSON-list or JSONL annotation file.

    Args:
        path: the annotation file (``.json`` holding a list, or ``.jsonl`` with one object per line).
        use_cache: read/write the offset index under ``$LIT_BVLLM_CACHE`` (default ``~/.cache/lit_bvllm``).
    """

    def __init__(self, path: str | Path, use_cache: bool = True):
        self.path = Path(path).resolve()
        if not self.path.is_file():
            raise FileNotFoundError(f"annotation file '{path}' does not exist (check --data.train / --data.val)")
        self.starts, self.lengths = self._load_index(use_cache)
        self._fd: int | None = None
        self._pid: int | None = None

    def _load_index(self, use_cache: bool) -> tuple[np.ndarray, np.ndarray]:
        st = self.path.stat()
        key = hashlib.sha1(f"{self.path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        cache = _cache_dir() / f"{key}.npy"
        if use_cache and cache.is_file():
            arr = np.load(cache)
            return arr[0].copy(), arr[1].copy()
        with open(self.path, "rb") as f:
            head = f.read(4096).lstrip()
        starts, lengths = _json_list_offsets(self.path) if head[:1] == b"[" else _jsonl_offsets(self.path)
        if use_cache:
            try:
                with atomic_file(cache) as f:
                    np.save(f, np.stack([starts, lengths]))
            except OSError:
                pass  # a read-only cache only costs re-indexing next time
        return starts, lengths

    def __len__(self) -> int:
        return len(self.starts)

    def raw(self, index: int) -> bytes:
        if self._fd is None or self._pid != os.getpid():  # one descriptor per (worker) process
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return os.pread(self._fd, int(self.lengths[index]), int(self.starts[index]))

    def __getitem__(self, index: int) -> dict:
        try:
            entry = json.loads(self.raw(index))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SampleError("bad_entry", "<json>", f"not valid JSON ({e})") from None
        if not isinstance(entry, dict):
            raise SampleError("bad_entry", "<json>", f"expected a JSON object, got {type(entry).__name__}")
        return entry

    def __getstate__(self) -> dict:  # descriptors do not travel to workers
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)


@dataclass(frozen=True)
class Source:
    """One annotation file of a mixture.

    Args:
        path: the annotation file.
        root: folder that media paths resolve against (default: the annotation file's folder).
        weight: samples drawn per epoch, as a multiple of the file's size (0.5: a fixed random half, 2: twice).
    """

    path: str
    root: str
    weight: float = 1.0


def load_sources(spec: str | list[str]) -> list[Source]:
    """Annotation files, or a YAML mixture, as a list of :class:`Source`.

    A mixture YAML lists ``datasets: [{path, root?, weight?}, ...]``; relative paths are taken from the YAML's
    folder. A plain ``.json``/``.jsonl`` path is a source of weight 1 whose root is its own folder.
    """
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    sources: list[Source] = []
    for s in specs:
        p = Path(s).expanduser()
        if p.suffix in (".yaml", ".yml"):
            if not p.is_file():
                raise FileNotFoundError(f"mixture file '{p}' does not exist")
            cfg = yaml.safe_load(p.read_text()) or {}
            items = cfg.get("datasets") if isinstance(cfg, dict) else None
            if not isinstance(items, list) or not items:
                raise ValueError(f"{p}: a mixture needs a non-empty 'datasets:' list of {{path, root, weight}}")
            for k, item in enumerate(items):
                if not isinstance(item, dict) or "path" not in item:
                    raise ValueError(f"{p}: datasets[{k}] needs a 'path' key")
                unknown = set(item) - {"path", "root", "weight"}
                if unknown:
                    raise ValueError(f"{p}: datasets[{k}] has unknown keys {sorted(unknown)} "
                                     "(allowed: path, root, weight)")
                path = (p.parent / item["path"]).resolve()
                root = (p.parent / item["root"]).resolve() if item.get("root") else path.parent
                weight = float(item.get("weight", 1.0))
                if weight < 0:
                    raise ValueError(f"{p}: datasets[{k}].weight must be >= 0, got {weight}")
                sources.append(Source(str(path), str(root), weight))
        else:
            path = p.resolve()
            sources.append(Source(str(path), str(path.parent), 1.0))
    return sources


def mixture_index(sizes: list[int], weights: list[float], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (source, entry) arrays for one pass over a weighted mixture.

    A source of size n and weight w contributes ``round(w * n)`` samples: ``floor(w)`` full copies plus a
    seeded random subset (without replacement) for the fractional part. Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    src, ent = [], []
    for s, (n, w) in enumerate(zip(sizes, weights)):
        total = int(round(w * n))
        full, rest = divmod(total, n) if n else (0, 0)
        picks = [np.tile(np.arange(n, dtype=np.int64), full), np.sort(rng.choice(n, rest, replace=False))]
        e = np.concatenate(picks).astype(np.int64)
        src.append(np.full(len(e), s, np.int32))
        ent.append(e)
    return np.concatenate(src) if src else np.zeros(0, np.int32), np.concatenate(ent) if ent else np.zeros(0, np.int64)
