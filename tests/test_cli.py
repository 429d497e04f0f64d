"""The lit_bvllm command: make-tiny, make-synthetic, scan and preview through the real argument parser."""

import json
import subprocess
import sys

import pytest

from lit_bvllm.cli import main


def test_make_commands_accept_dashed_flags(tmp_path, capsys):
    main(["make-synthetic", "--out", str(tmp_path / "syn"), "--num-videos", "2", "--num-eval-videos", "1",
          "--max-duration", "9", "--seed", "5"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["videos"] == 2 and (tmp_path / "syn" / "finetune.json").is_file()
    main(["make-tiny", "--out", str(tmp_path / "tiny"), "--lm-steps", "2", "--clip-steps", "2", "--clip-batch-size", "8"])
    out = capsys.readouterr().out
    assert "tiny CLIP step     1: contrastive" in out  # the tower's losses are printed as it trains
    paths = json.loads(out[out.index("\n{") + 1:])
    assert (tmp_path / "tiny" / "llm" / "tokenizer.json").is_file() and paths["vision"].endswith("vision")


def _config(tmp_path, tiny, train):
    cfg = tmp_path / "data.yaml"
    cfg.write_text(
        "data:\n  class_path: datamodules.VideoInstructDataModule\n  init_args:\n"
        f"    train: {train}\n    tokenizer: {tiny['llm']}\n    vision_tower: {tiny['vision']}\n"
        "    max_length: 256\n    visual_tokens: 32\n    max_frames: 8\n    num_workers: 0\n"
    )
    return cfg


def test_scan_and_preview_from_a_config(tiny, synthetic, tmp_path, capsys):
    entries = json.loads((synthetic / "finetune.json").read_text())
    bad = next(i for i, e in enumerate(entries) if "video" in e)
    entries[bad]["video"] = "videos/nope.mp4"
    ann = synthetic / "finetune_one_bad.json"
    ann.write_text(json.dumps(entries))
    cfg = _config(tmp_path, tiny, ann)
    main(["scan", "--config", str(cfg), "--out", str(tmp_path / "scan.json")])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "scan.json").read_text())
    assert report["bad"] == 1 and report["counts"] == {"missing_file": 1} and report["bad_entries"][0]["index"] == bad
    assert f"--data.blocklist={tmp_path / 'scan.json'}" in out

    main(["preview", "--config", str(cfg), "--data.blocklist", str(tmp_path / "scan.json"), "--num-samples", "3"])
    out = capsys.readouterr().out
    assert f"train set: {len(entries) - 1} samples" in out
    assert "frames         (3, " in out and "[[" in out and "<|im_end|>" in out
    assert "skipped entries in this batch: 0" in out


def test_strict_flag_from_the_command_line(tiny, synthetic, tmp_path):
    from datamodules.errors import DataError

    entries = json.loads((synthetic / "finetune.json").read_text())
    for e in entries:
        e.pop("video", None), e.pop("image", None)
        e["conversations"][0]["value"] = "<video>" + e["conversations"][0]["value"]
    ann = synthetic / "finetune_all_bad.json"
    ann.write_text(json.dumps(entries))
    with pytest.raises(DataError, match="extra_tag"):
        main(["preview", "--config", str(_config(tmp_path, tiny, ann)), "--data.strict", "true"])


def test_console_script_lists_its_commands():
    out = subprocess.run([sys.executable, "-m", "lit_bvllm.cli"], capture_output=True, text=True, check=True).stdout
    for cmd in ("make-tiny", "make-synthetic", "scan", "preview"):
        assert cmd in out
    bad = subprocess.run([sys.executable, "-m", "lit_bvllm.cli", "fitt"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown command 'fitt'" in bad.stderr
