"""One bad entry never kills a run (issue 10, points 5-8): a lone surrogate in the text, a decompression bomb, a
hostile video container and a missing file are skipped and counted once in training, named in the scan report,
and a DataError naming file, entry and flag in strict mode; scan survives a decode that kills or hangs its
worker; bad entries are remembered, so replacements come from the rest and only a large share stops a run."""

import json
import shutil
import time

import lightning as L
import pytest
import torch
from bad_media import LONE_SURROGATE, write_png_header, write_spaced_mkv

from datamodules import SkippedSamplesLogger, VideoInstructDataModule, video
from datamodules import scan as scan_module
from datamodules.errors import DataError
from datamodules.scan import scan_dataset, write_report


def GOOD(i, path="videos/good.mp4"):
    return {"id": f"good{i}", "video": path,
            "conversations": [{"from": "human", "value": "<video>\nWhat is shown?"},
                              {"from": "gpt", "value": f"Shapes {i}."}]}


def TEXT(i):
    return {"id": f"text{i}", "conversations": [{"from": "human", "value": f"Question {i}?"},
                                                {"from": "gpt", "value": f"Answer {i}."}]}


BAD = {  # reason -> entry
    "bad_text": {**GOOD(0), "conversations": [{"from": "human", "value": f"<video>\nWhat is {LONE_SURROGATE}?"},
                                              {"from": "gpt", "value": "Shapes."}]},
    "bad_image": {"image": "images/bomb.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                                {"from": "gpt", "value": "A picture."}]},
    "bad_container": GOOD(0, "videos/hostile.mp4"),
    "missing_file": GOOD(0, "videos/missing.mp4"),
}


@pytest.fixture(scope="module")
def root(synthetic, tmp_path_factory):
    """A data root: a real video, a hostile Matroska file named .mp4 and a 30000x30000 PNG bomb."""
    data = tmp_path_factory.mktemp("bad_data") / "data"
    (data / "videos").mkdir(parents=True)
    (data / "images").mkdir()
    shutil.copy(synthetic / "videos" / "vid_0000.mp4", data / "videos" / "good.mp4")
    shutil.copy(synthetic / "videos" / "vid_0000.mp4", data / "videos" / "slow.mp4")
    write_spaced_mkv(data / "videos" / "hostile.mp4", gap_s=1e10)
    write_png_header(data / "images" / "bomb.png", 30000, 30000)
    return data


def write(root, name, entries):
    path = root / name
    path.write_text(json.dumps(entries))  # json escapes the lone surrogate as "\udcff", as a real file would hold it
    return path


def dm(tiny, train, **kw):
    args = dict(tokenizer=tiny["llm"], vision_tower=tiny["vision"], num_workers=0, batch_size=4, max_length=128,
                visual_tokens=16, max_frames=4)
    args.update(kw)
    d = VideoInstructDataModule(train=str(train), **args)
    d.setup("fit")
    return d


def with_bad(root, name):
    """8 good video entries with one entry of each bad kind between them (ids ``bad_<reason>``); their indices."""
    entries, where = [GOOD(i) for i in range(8)], {}
    for k, (reason, entry) in enumerate(sorted(BAD.items())):
        where[reason] = 1 + 3 * k
        entries.insert(where[reason], {**entry, "id": f"bad_{reason}"})
    return write(root, name, entries), where


class _Consumer(L.LightningModule):
    """Smallest module that trains on a batch: a scalar through the mean frame."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def training_step(self, batch, batch_idx):
        return (self.w * batch["frames"].float().mean()) ** 2 + self.w ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("workers", [0, 2])
def test_each_bad_kind_is_skipped_and_counted_once_in_fit(tiny, root, tmp_path, workers):
    path, where = with_bad(root, f"fit{workers}.json")
    data = dm(tiny, path, num_workers=workers)
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=2, callbacks=[SkippedSamplesLogger()],
                        logger=L.pytorch.loggers.CSVLogger(tmp_path), enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(_Consumer(), datamodule=data)
    assert trainer.global_step == 2 * 3  # 12 samples in batches of 4, both epochs to the end
    assert trainer.callback_metrics["data/skipped"].item() == 4  # two epochs, two workers: each entry once
    report = json.loads((tmp_path / "lightning_logs" / "version_0" / "skipped_samples.json").read_text())
    assert report["skipped"] == 4
    assert report["per_reason"] == {"bad_container": 1, "bad_image": 1, "bad_text": 1, "missing_file": 1}
    assert [(e["id"], e["reason"], e["file"], e["index"]) for e in report["entries"]] == [
        (f"bad_{r}", r, str(path), where[r]) for r in sorted(where, key=where.get)]


@pytest.mark.parametrize("workers", [0, 2])
def test_fit_survives_a_file_that_aborts_the_decoder(tiny, root, tmp_path, monkeypatch, workers):
    """Without the header check decord aborts on the hostile file (SIGABRT), which no ``try`` catches: decoded in
    the data module's decoder process, it costs its two entries (the second never reopened), not the run."""
    monkeypatch.setattr(video, "check_container", lambda path: None)  # inherited by the workers and decoders
    entries = [GOOD(i) for i in range(8)]
    entries.insert(2, {**GOOD(90, "videos/hostile.mp4"), "id": "hostile1"})
    entries.insert(6, {**GOOD(91, "videos/hostile.mp4"), "id": "hostile2"})
    path = write(root, f"abort{workers}.json", entries)
    data = dm(tiny, path, num_workers=workers, batch_size=5)
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=1, callbacks=[SkippedSamplesLogger()],
                        logger=L.pytorch.loggers.CSVLogger(tmp_path), enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(_Consumer(), datamodule=data)
    assert trainer.global_step == 2  # 10 samples in batches of 5: the epoch ran to its end
    report = json.loads((tmp_path / "lightning_logs" / "version_0" / "skipped_samples.json").read_text())
    assert (report["skipped"], report["per_reason"]) == (2, {"crashed": 2})
    assert {e["id"] for e in report["entries"]} == {"hostile1", "hostile2"}
    if workers == 0:  # the training process's own dataset: what happened, and that the file was opened once
        how = data.train_set.crashed_files[str(root / "videos" / "hostile.mp4")]
        assert "earlier entry" in how and "SIGABRT" in how
        assert data.train_set.decoder_process.restarts == 1


def test_a_decode_that_hangs_is_stopped_and_counted(tiny, root, monkeypatch):
    """A decode past --data.decode_timeout: its child is killed, the entry is crashed, the next one decodes."""
    from datamodules.video_instruct import VideoInstructDataset

    real = VideoInstructDataset.resized

    def resized(self, entry, media, path):  # runs in the decoder process (forked after this patch)
        if path.endswith("slow.mp4"):
            time.sleep(3600)
        return real(self, entry, media, path)

    monkeypatch.setattr(VideoInstructDataset, "resized", resized)
    path = write(root, "hang_fit.json", [GOOD(0), {**GOOD(1, "videos/slow.mp4"), "id": "slow"}, GOOD(2)])
    ds = dm(tiny, path, decode_timeout=2).train_set
    t0 = time.perf_counter()
    sample = ds[1]
    assert time.perf_counter() - t0 < 30
    assert [(s["id"], s["reason"]) for s in sample["skipped"]] == [("slow", "crashed")]
    assert "ran over 2 s" in ds.crashed_files[str(root / "videos" / "slow.mp4")]
    assert sample["meta"]["id"] in ("good0", "good2") and len(sample["frames"]) > 0  # a replacement, decoded
    assert ds.decoder_process.restarts == 1


def test_each_bad_kind_is_named_in_the_scan_report(tiny, root, tmp_path):
    path, where = with_bad(root, "scan.json")
    entries = json.loads(path.read_text())
    entries += [{k: v for k, v in GOOD(9, "videos/missing.mp4").items() if k != "id"}, [1, 2]]  # no id; no object
    path = write(root, "scan.json", entries)
    report = scan_dataset(dm(tiny, path).train_set, workers=2)
    saved = json.loads(write_report(report, tmp_path / "scan_report.json").read_text())
    assert saved == report and (saved["entries"], saved["ok"], saved["bad"]) == (14, 8, 6)
    assert saved["counts"] == {"bad_container": 1, "bad_entry": 1, "bad_image": 1, "bad_text": 1, "missing_file": 2}
    rows = [(b["index"], b["id"], b["reason"], b["file"]) for b in saved["bad_entries"]]
    assert rows == sorted([(i, f"bad_{r}", r, str(path)) for r, i in where.items()]
                          + [(12, f"{path}#12", "missing_file", str(path)), (13, f"{path}#13", "bad_entry", str(path))])
    hostile = next(b for b in saved["bad_entries"] if b["reason"] == "bad_container")
    assert str(root / "videos" / "hostile.mp4") in hostile["detail"] and "duration of 9e+10 s" in hostile["detail"]


@pytest.mark.parametrize("reason", sorted(BAD))
def test_strict_mode_names_the_file_the_entry_and_the_flag(tiny, root, reason):
    path = write(root, f"strict_{reason}.json", [GOOD(1), {**BAD[reason], "id": f"bad_{reason}"}])
    ds = dm(tiny, path, strict=True).train_set
    with pytest.raises(DataError) as err:
        ds[1]
    msg = str(err.value)
    assert f"{path}: entry 1, id 'bad_{reason}': {reason} in field '" in msg and "--data.strict=false" in msg


def test_scan_isolates_a_decode_that_kills_its_worker(tiny, root, monkeypatch):
    """Without the header check decord aborts on the hostile file (SIGABRT): the scan reports that entry, and a
    later entry of the same file, as crashed and checks the rest."""
    monkeypatch.setattr(video, "check_container", lambda path: None)  # inherited by the forked scan workers
    entries = [GOOD(0), {**GOOD(1, "videos/hostile.mp4"), "id": "hostile1"},
               {**GOOD(2, "videos/missing.mp4"), "id": "missing"},
               {**GOOD(3, "videos/hostile.mp4"), "id": "hostile2"}, TEXT(4), GOOD(5)]
    path = write(root, "crash.json", entries)
    t0 = time.perf_counter()
    report = scan_dataset(dm(tiny, path).train_set, workers=2, timeout=60)
    assert time.perf_counter() - t0 < 60  # finished by itself, not by the timeout
    rows = {b["id"]: b for b in report["bad_entries"]}
    assert (report["ok"], report["bad"], report["counts"]) == (3, 3, {"crashed": 2, "missing_file": 1})
    hostile = str(root / "videos" / "hostile.mp4")
    assert rows["hostile1"]["reason"] == "crashed" and rows["hostile1"]["index"] == 1
    assert "SIGABRT" in rows["hostile1"]["detail"] and hostile in rows["hostile1"]["detail"]
    assert rows["hostile2"]["reason"] == "crashed" and "earlier entry" in rows["hostile2"]["detail"]  # not reopened
    assert rows["missing"]["reason"] == "missing_file"


def test_scan_stops_a_check_that_hangs(tiny, root, monkeypatch):
    real = scan_module._probe

    def probe(path, image):
        if path.endswith("slow.mp4"):
            time.sleep(3600)
        return real(path, image)

    probe.cache_clear = real.cache_clear
    monkeypatch.setattr(scan_module, "_probe", probe)
    path = write(root, "hang.json", [GOOD(0), {**GOOD(1, "videos/slow.mp4"), "id": "slow"}, GOOD(2)])
    t0 = time.perf_counter()
    report = scan_dataset(dm(tiny, path).train_set, workers=2, timeout=2)
    assert time.perf_counter() - t0 < 30
    assert (report["ok"], report["bad"]) == (2, 1)
    row = report["bad_entries"][0]
    assert (row["id"], row["reason"], row["index"]) == ("slow", "crashed", 1) and "ran over 2 s" in row["detail"]


# ---------------------------------------------------------------- replacements and the share of bad entries


def third_bad(root):
    """60 entries, 18 of them bad (missing videos), spread over the file; the bad indices."""
    bad = set(range(1, 60, 10)) | set(range(4, 60, 10)) | set(range(7, 60, 10))
    entries = [{**GOOD(i, "videos/missing.mp4"), "id": f"bad{i}"} if i in bad else TEXT(i) for i in range(60)]
    return write(root, "third_bad.json", entries), sorted(bad)


def test_a_third_bad_finishes_the_epoch_for_ten_seeds_and_reports_each_once(tiny, root):
    path, bad = third_bad(root)
    assert len(bad) == 18
    for seed in range(10):
        d = dm(tiny, path, seed=seed)
        batches = list(d.train_dataloader())
        served = [m["id"] for b in batches for m in b["meta"]]
        assert len(served) == 60 and all(s.startswith("text") for s in served)
        skipped = [s for b in batches for s in b["skipped"]]
        assert sorted(s["index"] for s in skipped) == bad  # each bad entry once, however often it was drawn
        assert {(s["reason"], s["file"]) for s in skipped} == {("missing_file", str(path))}
        assert all(s["id"] == f"bad{s['index']}" for s in skipped)


def test_a_share_above_the_threshold_stops_with_the_count(tiny, root):
    path, _ = third_bad(root)
    with pytest.raises(DataError) as err:
        list(dm(tiny, path, max_bad_fraction=0.2).train_dataloader())
    msg = str(err.value)
    # 60 entries: the share is judged over all 60, so the 13th bad entry (> 0.2 * 60) stops the run
    assert msg.startswith("too many bad entries: 13 of the ") and "--data.max_bad_fraction=0.2" in msg
    assert "{'missing_file': 13}" in msg and "`lit_bvllm scan`" in msg and "--data.blocklist" in msg
    assert f"{path}: entry " in msg  # the last bad entry, named

    mostly_bad = write(root, "mostly_bad.json",
                       [{**GOOD(i, "videos/missing.mp4"), "id": f"bad{i}"} if i % 4 else TEXT(i) for i in range(20)])
    with pytest.raises(DataError, match=r"too many bad entries: 11 of the \d+ read .*--data.max_bad_fraction=0.5"):
        list(dm(tiny, mostly_bad).train_dataloader())  # 75% bad at the default


def test_max_bad_fraction_is_checked_and_max_retries_is_ignored(tiny, root, caplog):
    path, _ = third_bad(root)
    with pytest.raises(ValueError, match="--data.max_bad_fraction must be in"):
        VideoInstructDataModule(train=str(path), tokenizer=tiny["llm"], max_bad_fraction=0)
    with caplog.at_level("WARNING", logger="lit_bvllm.data"):
        # a saved config replays
        VideoInstructDataModule(train=str(path), tokenizer=tiny["llm"], visual_tokens=16, max_retries=3)
    assert "--data.max_retries=3 is ignored" in caplog.text


def test_a_symlink_inside_the_training_root_is_followed_and_a_way_out_is_refused(tmp_path):
    """What the annotation says is confined (a '..' past the data root, an absolute path elsewhere: path_escape,
    unless --data.allow_outside_root); a symlink the data owner placed inside the root is followed (a videos/
    folder on another disk: it was refused, and the scan suggested blocking 90% of such a set)."""
    from datamodules.errors import SampleError
    from datamodules.video_instruct import resolve_media

    outside = tmp_path / "other_disk"
    outside.mkdir()
    (outside / "v.mp4").write_bytes(b"x")
    root = tmp_path / "data"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "v.mp4").symlink_to(outside / "v.mp4")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    assert resolve_media(str(root), "videos/v.mp4", "video") == str(root / "videos" / "v.mp4")
    assert resolve_media(str(root), "linked/v.mp4", "video") == str(root / "linked" / "v.mp4")
    for way_out in ("../other_disk/v.mp4", str(outside / "v.mp4"), "videos/../../other_disk/v.mp4"):
        with pytest.raises(SampleError, match="path_escape.*leads outside the data root.*allow_outside_root"):
            resolve_media(str(root), way_out, "video")
        assert resolve_media(str(root), way_out, "video", allow_outside_root=True).endswith("v.mp4")