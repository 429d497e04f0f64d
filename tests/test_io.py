"""The one atomic writer (datamodules.io): a crash while writing leaves the previous file or folder whole."""

import json
from pathlib import Path

import pytest

from datamodules.io import atomic_file, replace_folder, write_json


def test_a_crash_while_writing_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_json(path, {"step": 1, "when": Path("x")}, default=str)
    with pytest.raises(OSError, match="disk full"):
        with atomic_file(path, "w") as f:
            f.write('{"step": 2, "half')
            raise OSError("disk full")
    assert json.loads(path.read_text()) == {"step": 1, "when": "x"}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
    with atomic_file(path, "w") as f:
        f.write('{"step": 3}')
    assert json.loads(path.read_text()) == {"step": 3}


def test_a_finished_folder_takes_the_place_of_the_previous_one(tmp_path):
    path, new = tmp_path / "last.ckpt", tmp_path / "last.ckpt.tmp"
    path.mkdir()
    (path / "old_shard").write_text("old")
    new.mkdir()
    (new / "shard_0").write_text("new")
    replace_folder(new, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert sorted(p.name for p in path.iterdir()) == ["shard_0"]
    fresh = tmp_path / "next.tmp"
    fresh.mkdir()
    replace_folder(fresh, tmp_path / "first")  # nothing there before
    assert (tmp_path / "first").is_dir() and not fresh.exists()
