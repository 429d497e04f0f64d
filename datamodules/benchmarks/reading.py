"""What every benchmark reader shares: loading annotation files, checked fields, finding a video by its id.

Every reader (the ``read`` method of each benchmark module: ``mvbench.py``, ``vnbench.py``, ...) takes the
benchmark's root folder, laid out as the reference code expects it (VideoLLaMA2's ``videollama2/eval/`` scripts and
each benchmark's own release), and returns items whose video paths are absolute. Where the annotation gives
a bare id, the video is looked up with the extensions the reference scripts try (:data:`VIDEO_EXTENSIONS`); a
video that is not there keeps its ``.mp4`` path, so the item is still read and the loader reports the missing
file. A malformed entry raises ``ValueError`` naming the file, the entry and the field (:func:`require`). No
reader decodes media.

Readers do not judge where a path points; the data module does, before it reads anything (:func:`confine_media`):
a video, frame folder or subtitle file whose path leads outside the benchmark's folders (an absolute path
elsewhere, a ``..`` past them; a symlink placed inside them is followed) makes its item an error item, unless
``--data.allow_outside_root`` is set.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from datamodules.errors import SampleError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
ALLOW_FLAG = "--data.allow_outside_root"
"""The flag that lets benchmark media lie outside the benchmark's folders."""


def confine(path: str | Path, roots: list[str | Path], field: str) -> Path:
    """``path`` made absolute (``..`` folded, symlinks kept), or a ``path_escape`` :class:`SampleError` when it lies
    outside every folder of ``roots``.

    The training data's rule (:func:`datamodules.video_instruct.resolve_media`): what the annotation says may not
    lead out of the root (no ``..`` past it, no absolute path elsewhere), and a symlink the benchmark's owner placed
    inside the root is followed. Copied here rather than imported, so that the two sides can be read alone.
    """
    inside = Path(os.path.abspath(path))
    folders = [Path(os.path.abspath(r)) for r in roots]
    if any(inside.is_relative_to(folder) for folder in folders):
        return inside
    where = " or ".join(f"'{f}'" for f in folders)
    raise SampleError("path_escape", field, f"'{path}' lies outside the benchmark root {where}; "
                                            f"set {ALLOW_FLAG}=true if the benchmark's media live elsewhere")


def confine_media(video: str, subtitles: str | None, roots: list[str | Path]) -> None:
    """:func:`confine` every path an item reads: its video (a file or a frame folder) and its subtitles."""
    confine(video, roots, "video")
    if subtitles is not None:
        confine(subtitles, roots, "subtitles")


def find_video(folders: list[Path], stems: list[str]) -> str:
    """Absolute path of the first ``<folder>/<stem><ext>`` that exists (a stem that already ends in a video
    extension is tried as it is first); ``<folders[0]>/<stems[0]>.mp4`` when none does."""
    for folder in folders:
        for stem in stems:
            names = ([stem] if stem.lower().endswith(VIDEO_EXTENSIONS) else []) + [stem + e for e in VIDEO_EXTENSIONS]
            for name in names:
                if (folder / name).is_file():
                    return os.path.abspath(folder / name)
    return os.path.abspath(folders[0] / f"{stems[0]}{VIDEO_EXTENSIONS[0]}")


def entry_name(path: Path, where) -> str:
    """``<file>: entry <where>``, the start of every reader error."""
    return f"{path}: entry {where}"


def require(entry, key: str, path: Path, where, types: tuple = (str,)):
    """``entry[key]``, or a ValueError naming the file, the entry and the field."""
    if not isinstance(entry, dict):
        raise ValueError(f"{entry_name(path, where)} is a {type(entry).__name__}, not an object")
    if entry.get(key) is None:
        raise ValueError(f"{entry_name(path, where)}: field '{key}' is missing")
    value = entry[key]
    if not isinstance(value, types) or isinstance(value, bool):
        names = " or ".join(t.__name__ for t in types)
        raise ValueError(f"{entry_name(path, where)}: field '{key}' must be {names}, "
                         f"got {type(value).__name__} {value!r}")
    return value


def require_text(entry, key: str, path: Path, where) -> str:
    """A text field; numbers (CSV ids, numeric answers) are accepted and written as text."""
    return str(require(entry, key, path, where, (str, int, float)))


def option_index(value, count: int, path: Path, where, key: str) -> int:
    """An option index given as an int or a digit string, checked against ``count`` options."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise ValueError(f"{entry_name(path, where)}: field '{key}' must be an option index, got {value!r}")
    if not 0 <= int(value) < count:
        raise ValueError(f"{entry_name(path, where)}: field '{key}' = {value!r} is not an index of its {count} options")
    return int(value)


def option_letter(value, count: int, path: Path, where, key: str) -> int:
    """An option letter (``"B"``, ``"(B)"``, ``"B."``) as an index, checked against ``count`` options."""
    letter = str(value).strip().strip("()").rstrip(".").upper()
    if len(letter) != 1 or not 0 <= ord(letter) - ord("A") < count:
        last = chr(ord("A") + count - 1)
        raise ValueError(f"{entry_name(path, where)}: field '{key}' must be one of the letters A..{last}, "
                         f"got {value!r}")
    return ord(letter) - ord("A")


def require_seconds(entry, key: str, path: Path, where) -> float:
    """A time in seconds, given as a number or a numeric string."""
    value = require(entry, key, path, where, (int, float, str))
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{entry_name(path, where)}: field '{key}' must be a number of seconds, "
                         f"got {value!r}") from None


def load_json(path: Path):
    """A JSON file (a byte-order mark is accepted); a missing or broken file is an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file '{path}' does not exist; check the benchmark root and file name")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def load_list(path: Path) -> list:
    """A JSON file holding a list of entries."""
    entries = load_json(path)
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list of entries, got a {type(entries).__name__}")
    return entries


def load_rows(path: Path) -> list[dict]:
    """Table rows from ``.parquet`` (pyarrow), ``.csv``, ``.jsonl`` or ``.json`` (a list of objects)."""
    if not path.is_file():
        raise FileNotFoundError(f"annotation file '{path}' does not exist; check the benchmark root and file name")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"reading {path} needs pyarrow: `pip install pyarrow`, or convert the file once to JSON "
                              "(the same rows as a list of objects) and pass annotation='<file>.json'") from e
        return pq.read_table(path).to_pylist()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {n} is not valid JSON: {e}") from None
        return rows
    return load_list(path)


def unique_ids(ids: list[str]) -> list[str]:
    """Repeated ids get ``_1``, ``_2``, ... in order of appearance (the GPT-judge scripts' convention)."""
    taken, out = set(ids), []
    seen: set[str] = set()
    for i in ids:
        new, k = i, 0
        while new in seen or (k and new in taken):
            k += 1
            new = f"{i}_{k}"
        seen.add(new)
        out.append(new)
    return out
