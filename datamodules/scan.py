"""Pre-flight validation of a training set: every entry parsed and tokenized, every media header opened.

The report (JSON) holds the counts per problem and every bad entry as ``{file, index, id, reason, field,
detail}`` (``id`` is the entry's own, else ``<file>#<index>``); pass it to training as ``--data.blocklist`` to
leave those entries out.

Each entry is checked in a worker process, never in the caller: a decode that kills its process (a native abort
in a video library) or hangs past ``timeout`` seconds is reported as that entry's ``crashed`` error, its media
file is reported as ``crashed`` for every later entry that uses it (without opening it again), the worker is
replaced and the scan goes on. An entry whose check raises anything else is reported as ``crashed`` too, with the
exception, so the report is always written.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import signal
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

from datamodules.errors import SampleError, row_id
from datamodules.io import write_json
from datamodules.video import is_image, probe_video, read_image
from datamodules.video_instruct import VideoInstructDataset

_DATASETS: list[VideoInstructDataset] = []
_CRASHED: dict[str, str] = {}  # media path -> what happened when an earlier entry's check opened it
_CHUNK = 256
TIMEOUT_S = 300.0
"""Seconds one entry's check may take before its worker is killed and the entry reported ``crashed`` (a header
probe takes milliseconds; ``--decode true`` on an hour of 4K video takes tens of seconds)."""


@functools.lru_cache(maxsize=1 << 16)
def _probe(path: str, image: bool) -> tuple[str, str, str] | None:
    """Open one media file's header (cached per process: QA sets ask many questions about one video)."""
    try:
        read_image(path) if image else probe_video(path)
    except SampleError as err:
        return err.reason, err.field, err.detail
    return None


def _row(file: str, index: int, entry_id: str | None, reason: str, field: str, detail: str) -> dict:
    return {"file": file, "index": index, "id": row_id(entry_id, file, index), "reason": reason, "field": field,
            "detail": detail}


def _check(dataset: VideoInstructDataset, source: int, index: int, decode: bool,
           conn: Connection | None = None) -> dict | None:
    """The report row of one entry, or None when it is good; ``conn`` is told which media file is opened."""
    file = str(dataset.files[source].path)
    entry_id = dataset.entry_id(source, index)
    try:
        entry, conv, _, _, _, path = dataset.prepare(source, index)
        if conv.media is None:
            return None
        if path in _CRASHED:
            raise SampleError("crashed", conv.media, _CRASHED[path])
        if conn is not None:
            conn.send(("open", index, path))
        if decode:
            dataset.decode(entry, conv.media, path)
        elif (bad := _probe(path, is_image(conv.media, path))) is not None:
            raise SampleError(*bad)
        return None
    except SampleError as err:
        return _row(file, index, entry_id, err.reason, err.field, err.detail)
    except Exception as e:  # a bug or a library's surprise: reported, so that the report is still written
        return _row(file, index, entry_id, "crashed", "<check>", f"{type(e).__name__}: {str(e)[:300]}")


def _serve(conn: Connection) -> None:
    """A worker: check chunks ``(dataset, source, lo, hi, decode, crashed files)`` until ``None``; one message per
    entry checked, and one before each media file is opened."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops the workers
    while (task := conn.recv()) is not None:
        d, source, lo, hi, decode, crashed = task
        _CRASHED.update(crashed)  # files that killed or hung another worker since this one was forked
        for i in range(lo, hi):
            conn.send(("done", i, _check(_DATASETS[d], source, i, decode, conn)))


@dataclass
class _Worker:
    proc: mp.Process
    conn: Connection
    task: tuple | None = None
    next: int = 0  # first entry of the task not reported yet
    path: str | None = None  # media file the worker said it is opening for entry ``next``
    since: float = field(default_factory=time.monotonic)  # time of its last message


def _start() -> _Worker:
    parent, child = mp.get_context("fork").Pipe()
    proc = mp.get_context("fork").Process(target=_serve, args=(child,), daemon=True)
    proc.start()
    child.close()  # the worker holds the only copy: its death closes the pipe
    return _Worker(proc, parent)


def _run(jobs: list[tuple], workers: int, timeout: float) -> list[dict]:
    """Run ``jobs`` on ``workers`` forked processes, replacing any that dies or hangs; every bad entry's row."""
    pending, rows, pool = deque(jobs), [], []
    try:
        while pending or any(w.task is not None for w in pool):
            pool = [w for w in pool if w.proc.is_alive() or w.task is not None]
            while len(pool) < workers and pending:
                pool.append(_start())
            for w in pool:
                if w.task is None and pending:
                    w.task = pending.popleft()
                    w.next, w.path, w.since = w.task[2], None, time.monotonic()
                    w.conn.send((*w.task, dict(_CRASHED)))
            busy = [w for w in pool if w.task is not None]
            wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=1.0)
            for w in busy:
                alive = w.proc.is_alive()  # before draining: a dead worker's last messages are all in the pipe
                try:
                    while w.conn.poll():
                        _receive(w, w.conn.recv(), rows)
                except (EOFError, OSError):
                    pass  # the worker died: handled below
                hung = w.task is not None and time.monotonic() - w.since > timeout
                if w.task is not None and (hung or not alive):
                    _lost(w, rows, pending, hung, timeout)
    finally:
        for w in pool:
            if w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
    return rows


def _receive(w: _Worker, msg: tuple, rows: list[dict]) -> None:
    kind, index, payload = msg
    w.since = time.monotonic()
    if kind == "open":
        w.path = payload
        return
    if payload is not None:
        rows.append(payload)
    w.next, w.path = index + 1, None
    if w.next >= w.task[3]:
        w.task = None


def _lost(w: _Worker, rows: list[dict], pending: deque, hung: bool, timeout: float) -> None:
    """Worker ``w`` died or hung on entry ``w.next``: report it, remember its file, requeue the rest of the chunk."""
    if hung:
        w.proc.kill()
        w.proc.join()
        what = f"its check ran over {timeout:g} s and was stopped"
    else:
        w.proc.join()
        code = w.proc.exitcode
        try:
            name = signal.Signals(-code).name
        except (TypeError, ValueError):
            name = f"exit code {code}"
        what = f"its check killed the scan worker ({name}; a native crash in a media library)"
    d, source, _, hi, decode = w.task
    ds = _DATASETS[d]
    if w.path is not None:
        what += f" while opening '{w.path}'"
        _CRASHED[w.path] = f"checking '{w.path}' for an earlier entry crashed: {what}"
    rows.append(_row(str(ds.files[source].path), w.next, ds.entry_id(source, w.next), "crashed",
                     "media" if w.path is not None else "<check>", what))
    if w.next + 1 < hi:
        pending.appendleft((d, source, w.next + 1, hi, decode))
    w.task = None
    w.conn.close()


def scan_dataset(
    dataset: VideoInstructDataset | list[VideoInstructDataset], workers: int = 2, decode: bool = False,
    timeout: float = TIMEOUT_S,
) -> dict:
    """Check every entry of every source file of ``dataset`` (weights and blocklist ignored); one report for all.

    Args:
        dataset: the dataset(s) whose files, roots, template and budgets define what "valid" means.
        workers: worker processes (at least one: entries are never checked in the calling process).
        decode: decode every sampled frame instead of opening headers only (slower, catches mid-file corruption).
        timeout: seconds one entry may take before it is reported ``crashed`` (:data:`TIMEOUT_S`).
    """
    global _DATASETS
    _DATASETS = [dataset] if isinstance(dataset, VideoInstructDataset) else list(dataset)
    _CRASHED.clear()
    _probe.cache_clear()  # files may have changed since an earlier scan in this process
    files = [f for ds in _DATASETS for f in ds.files]
    jobs = [(d, s, lo, min(lo + _CHUNK, len(f)), decode)
            for d, ds in enumerate(_DATASETS) for s, f in enumerate(ds.files) for lo in range(0, len(f), _CHUNK)]
    t0 = time.perf_counter()
    bad = sorted(_run(jobs, max(1, workers), timeout), key=lambda b: (b["file"], b["index"]))
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
