"""Benchmark media stay inside the benchmark's folders: an absolute path elsewhere or a ``..`` path that leads out of
them is refused (its item an error item, the run going on) unless ``--data.allow_outside_root``; a symlink the
benchmark's owner placed inside a folder is followed."""

import json
import os
import shutil
from pathlib import Path

import lightning as L
import pytest

from datamodules.benchmarks import BenchmarkDataModule, EvalItem, MVBench, VideoMME, VNBench
from datamodules.benchmarks.datamodule import refusals
from datamodules.benchmarks.reading import confine, confine_media
from datamodules.errors import SampleError

FLAG = "--data.allow_outside_root=true"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_confine_keeps_paths_inside_and_refuses_each_way_out(tmp_path):
    root, outside = tmp_path / "root", touch(tmp_path / "outside" / "v.mp4")
    inside = touch(root / "videos" / "v.mp4")
    (root / "videos" / "in_link.mp4").symlink_to(inside)
    (root / "videos" / "out_link.mp4").symlink_to(outside)
    (root / "linked_folder").symlink_to(outside.parent, target_is_directory=True)
    for kept in (inside, root / "videos" / "in_link.mp4", root / "videos" / "missing.mp4",
                 root / "videos" / "out_link.mp4", root / "linked_folder" / "v.mp4"):  # links placed in the root
        assert confine(kept, [root], "video") == kept
    for way_out in (outside, root / "videos" / ".." / ".." / "outside" / "v.mp4"):
        with pytest.raises(SampleError) as err:
            confine(way_out, [root], "video")
        assert err.value.reason == "path_escape" and err.value.field == "video"
        assert f"'{way_out}' lies outside the benchmark root '{root}'" in str(err.value) and FLAG in str(err.value)
    assert confine(outside, [root, outside.parent], "video") == outside  # any of several folders
    linked_root = tmp_path / "linked_root"  # the root itself may be a link
    linked_root.symlink_to(root, target_is_directory=True)
    assert confine(linked_root / "videos" / "v.mp4", [linked_root], "video") == linked_root / "videos" / "v.mp4"


def test_a_frame_folder_and_subtitles_are_confined_too(tmp_path):
    root, outside = tmp_path / "root", touch(tmp_path / "outside" / "00002.jpg")
    folder = root / "frames" / "clip"
    touch(folder / "00001.jpg")
    (folder / "00002.jpg").symlink_to(outside)  # a frame linked in by the owner: followed
    confine_media(str(folder), None, [root])
    with pytest.raises(SampleError, match="path_escape in field 'video'"):
        confine_media(str(outside.parent), None, [root])
    with pytest.raises(SampleError, match="path_escape in field 'subtitles'"):
        confine_media(str(folder), str(touch(tmp_path / "outside" / "v.srt")), [root])


@pytest.fixture
def escaping(tmp_path, synthetic):
    """A VNBench root with the synthetic videos hard-linked in, whose entries 1 and 2 lead out of it (an absolute
    path, a ``..`` path); entry 3 is a symlink inside the root (followed), entries 0 and 4 plain files."""
    src = synthetic / "eval" / "vnbench"
    root, outside = tmp_path / "bench", tmp_path / "elsewhere"
    shutil.copytree(src / "videos", root / "videos", copy_function=os.link)
    shutil.copytree(src / "videos", outside, copy_function=os.link)
    entries = json.loads((src / "VNBench_qa.json").read_text())[:5]
    name = Path(entries[1]["video"]).name
    entries[1]["video"] = str(outside / name)
    entries[2]["video"] = f"../elsewhere/{Path(entries[2]['video']).name}"
    (root / "videos" / "link.mp4").symlink_to(outside / Path(entries[3]["video"]).name)
    entries[3]["video"] = "videos/link.mp4"
    (root / "VNBench_qa.json").write_text(json.dumps(entries))
    return root, [e["question_id"] for e in entries]


def test_refusals_name_the_items_that_lead_out(escaping):
    root, ids = escaping
    items = VNBench(str(root)).read()
    refused = refusals(items, [str(root)])
    assert sorted(refused) == [1, 2]
    assert all(r.startswith("path_escape: ") and FLAG in r for r in refused.values())
    assert refusals(items, [str(root), str(root.parent / "elsewhere")]) == {}


def test_mvbench_videos_may_lie_in_its_video_root(tmp_path):
    """MVBench's ``video_root`` option names a media folder of its own: videos there are inside."""
    videos = touch(tmp_path / "disk" / "star" / "Charades_v1_480" / "a.mp4").parents[2]
    item = EvalItem("action_sequence_0", str(videos / "star" / "Charades_v1_480" / "a.mp4"), "q?", ["a", "b"], 0)
    assert list(refusals([item], MVBench(str(tmp_path / "mvbench")).media_roots())) == [0]
    assert refusals([item], MVBench(str(tmp_path / "mvbench"), video_root=str(videos)).media_roots()) == {}
    assert VideoMME(str(tmp_path)).media_roots() == [str(tmp_path)]


def run(model, tiny, benchmark, tmp_path, **kwargs):
    dm = BenchmarkDataModule(benchmark, tiny["llm"], vision_tower=tiny["vision"], num_workers=0, batch_size=5,
                             **kwargs)
    from lit_bvllm.training.callbacks import BenchmarkEvaluation

    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="runs", version=str(kwargs))
    trainer = L.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[BenchmarkEvaluation()])
    trainer.test(model, datamodule=dm)
    out = Path(logger.log_dir)
    records = [json.loads(line) for line in (out / "vnbench_predictions.jsonl").read_text().splitlines()]
    return json.loads((out / "vnbench_results.json").read_text()), records


@pytest.fixture
def model(eval_model):
    return eval_model


def test_media_outside_the_root_are_error_items_unless_allowed(escaping, model, tiny, tmp_path, caplog):
    """Flag off: the absolute and ``..`` entries stay as error items, counted wrong and listed by id, the symlinked
    one is read, and the run finishes; flag on: all five are read."""
    root, ids = escaping
    result, records = run(model, tiny, VNBench(str(root)), tmp_path)
    assert (result["items"], result["evaluated"], result["errors"]) == (5, 5, 2)
    assert result["error_ids"] == sorted(ids[1:3])
    bad = {r["id"]: r for r in records if r["error"]}
    assert set(bad) == set(ids[1:3]) and all(not r["correct"] and r["pred"] is None for r in bad.values())
    assert all(r["error"].startswith("path_escape: ") and FLAG in r["error"] for r in bad.values())
    assert "2 of 5 vnbench items are not read" in caplog.text

    result, records = run(model, tiny, VNBench(str(root)), tmp_path, allow_outside_root=True)
    assert (result["evaluated"], result["errors"], result["error_ids"]) == (5, 0, [])


def test_no_item_inside_the_root_stops_at_setup(escaping, tiny):
    root, _ = escaping
    entries = json.loads((root / "VNBench_qa.json").read_text())
    (root / "VNBench_qa.json").write_text(json.dumps(entries[1:3]))
    dm = BenchmarkDataModule(VNBench(str(root)), tiny["llm"], vision_tower=tiny["vision"], num_workers=0)
    with pytest.raises(ValueError, match=r"2 of 2 vnbench items are not read.*Check --data.benchmark.root"):
        dm.setup("test")
    allowed = BenchmarkDataModule(VNBench(str(root)), tiny["llm"], vision_tower=tiny["vision"], num_workers=0,
                                  allow_outside_root=True)
    allowed.setup("test")
    assert allowed.test_set[0]["meta"]["error"] is None and allowed.test_set[0]["frame_times"].numel() > 0


def test_a_refused_subtitle_file_is_not_read(tmp_path, tiny, monkeypatch):
    """Video-MME with subtitles: an .srt outside the root makes its item an error item, and the file is not opened
    (not even in blind mode, where no video is read); an .srt linked into the root by its owner is read."""
    import dataclasses

    import datamodules.benchmarks.videomme as vmod

    opened = []
    monkeypatch.setattr(vmod, "read_srt", lambda path: opened.append(path) or [])
    root = tmp_path / "videomme"
    for name in ("vid", "vid2"):
        touch(root / "data" / f"{name}.mp4")
    (root / "subtitle").mkdir()
    (root / "subtitle" / "vid2.srt").symlink_to(touch(tmp_path / "disk" / "vid2.srt"))
    private = touch(tmp_path / "private.srt")
    rows = [{"video_id": f"00{k}", "videoID": name, "duration": "short", "domain": "d", "sub_category": "s",
             "question_id": f"00{k}-1", "task_type": "Counting Problem", "question": "How many?",
             "options": ["A. 1", "B. 2", "C. 3", "D. 4"], "answer": "B"} for k, name in enumerate(("vid", "vid2"))]
    (root / "rows.json").write_text(json.dumps(rows))

    class Elsewhere(VideoMME):  # the first item's subtitles lie outside the root
        def read(self):
            items = super().read()
            return [dataclasses.replace(items[0], subtitles=str(private)), *items[1:]]

    benchmark = Elsewhere(str(root), annotation="rows.json", subtitles=True)
    dm = BenchmarkDataModule(benchmark, tiny["llm"], vision_tower=tiny["vision"], num_workers=0, blind=True)
    dm.setup("test")
    refused, linked = dm.test_set[0], dm.test_set[1]
    assert refused["meta"]["error"].startswith("path_escape: ") and "private.srt" in refused["meta"]["error"]
    assert "This video's subtitles" not in refused["meta"]["prompt"]
    assert linked["meta"]["error"] is None and opened == [str(root / "subtitle" / "vid2.srt")]  # private never

    dm = BenchmarkDataModule(benchmark, tiny["llm"], vision_tower=tiny["vision"], num_workers=0, blind=True,
                             allow_outside_root=True)
    dm.setup("test")
    assert dm.test_set[0]["meta"]["error"] is None and str(private) in opened


def test_the_flag_the_messages_name_exists(tiny, synthetic, monkeypatch):
    """``--data.allow_outside_root`` as `lit_bvllm test` parses it, over the shipped eval configs."""
    from lit_bvllm.cli.commands import lightning_cli

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    configs = ["pretrain.yaml", "finetune.yaml", "eval/base.yaml", "eval/vnbench.yaml"]
    args = [a for c in configs for a in ("--config", f"experiments/{c}")]
    args += [*tiny["flags"], "--model.init_from", "null",
             "--trainer.logger", "false", "--data.benchmark.root", str(synthetic / "eval" / "vnbench")]
    assert lightning_cli(args, run=False).datamodule.hparams.allow_outside_root is False
    dm = lightning_cli(args + ["--data.allow_outside_root", "true"], run=False).datamodule
    assert dm.hparams.allow_outside_root is True
