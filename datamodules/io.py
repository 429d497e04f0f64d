"""The one atomic writer: files (:func:`atomic_file`, :func:`write_json`) and folders (:func:`replace_folder`) are
written beside their place and renamed into it, so a crash never leaves half a file and a reader sees the old whole
or the new whole (a rename is atomic on POSIX file systems). Checkpoints, results, sweep status files and the
annotation index cache all go through it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open ``<path>.<pid>.tmp`` for writing (one name a process: concurrent writers do not share it); on a clean exit
    flush it to disk and rename it onto ``path``. On an error the temporary file is removed and ``path`` is left as
    it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj, default=None) -> Path:
    """Write ``obj`` as indented JSON through :func:`atomic_file` (``default``: as :func:`json.dumps`'s)."""
    with atomic_file(path, "w") as f:
        f.write(json.dumps(obj, indent=2, default=default))
    return Path(path)


def remove(path: Path) -> None:
    """Delete a file or a folder; nothing when there is none."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def replace_folder(new: Path, path: Path) -> None:
    """Put the finished folder ``new`` in the place of ``path``: the old one is moved aside (``<path>.old``) first and
    deleted last, so at every moment one whole folder is at ``path`` or beside it."""
    old = path.with_name(path.name + ".old")
    remove(old)
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    remove(old)
