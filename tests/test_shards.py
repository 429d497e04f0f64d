"""Frame shards (issue 27): ``lit_bvllm shard`` writes what the on-the-fly loader would give, leaves bad entries out
(listed as a blocklist), resumes an interrupted write; ``--data.streaming`` gives the same samples and batches,
resumes mid-epoch exactly, weighs a mixture, and refuses shards made with other settings."""

import json
import os
import shutil
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch
from bad_media import write_spaced_mkv
from helpers import REPO

from datamodules import VideoInstructDataModule
from datamodules.shards import MANIFEST, REPORT, FrameShards, read_manifest, write_shards
from datamodules.video_instruct import load_blocklist

JPEG_FRAME_TOLERANCE = 4.0
JPEG_MEAN_TOLERANCE = 2.0
"""JPEG (quality 90, 4:4:4) against the loader's uint8 frames, in levels of 255: the mean absolute difference of
any one frame at most JPEG_FRAME_TOLERANCE, of all frames at most JPEG_MEAN_TOLERANCE. The tiny tower's frames are
small (the error per pixel grows as frames shrink: measured 0.88 mean / 2.7 worst frame at 64 px, 0.45 / 1.1 at
224 px, 0.38 / 0.8 at 336 px on the demo's videos; benchmarks/RESULTS.md); raw shards are exact."""


def settings(tiny, **kw):
    return {**dict(tokenizer=tiny["llm"], vision_tower=tiny["vision"], transform="plain", num_workers=0,
                   batch_size=3, max_length=96, visual_tokens=16, max_frames=4, seed=0), **kw}


def dm(tiny, train, **kw):
    data = VideoInstructDataModule(train=str(train), **settings(tiny, **kw))
    data.setup("fit")
    return data


@pytest.fixture(scope="module")
def root(synthetic, tmp_path_factory):
    """12 good entries (10 videos, a text-only one, an image), a missing video and a hostile header between them."""
    data = tmp_path_factory.mktemp("shards") / "data"
    shutil.copytree(synthetic / "videos", data / "videos")
    shutil.copytree(synthetic / "images", data / "images")
    write_spaced_mkv(data / "videos" / "hostile.mp4", gap_s=1e10)
    good = json.loads((synthetic / "pretrain.json").read_text())
    videos = [e for e in good if "video" in e]
    videos = [{**videos[k % len(videos)], "id": f"v{k}"} for k in range(10)]  # the fixture has 4 videos
    image = next(e for e in good if "image" in e)
    text = {"id": "text", "conversations": [{"from": "human", "value": "Name a colour."},
                                            {"from": "gpt", "value": "Orange."}]}
    entries = [*videos[:4], {**videos[4], "id": "missing", "video": "videos/missing.mp4"}, *videos[4:7],
               {**videos[7], "id": "hostile", "video": "videos/hostile.mp4"}, text, image, *videos[7:]]
    (data / "train.json").write_text(json.dumps(entries))
    return data


@pytest.fixture(scope="module")
def shards(tiny, root, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    data = dm(tiny, root / "train.json")
    return {fmt: (out / fmt, write_shards(data, str(out / fmt), workers=2, frames=fmt, chunk_bytes="256KB"))
            for fmt in ("jpeg", "raw")}


def items(folder, manifest, split="train"):
    part = manifest["splits"][split][0]
    ds = FrameShards(str(folder / part["dir"]), manifest["frame_size"], manifest["frames"], shuffle=False)
    return [ds[i] for i in range(len(ds))]


def close(a: torch.Tensor, b: torch.Tensor, exact: bool) -> list[float]:
    """Per-frame mean absolute differences of ``a`` and ``b``, checked against the tolerance."""
    assert a.shape == b.shape and a.dtype == b.dtype == torch.uint8
    d = (a.int() - b.int()).abs().float()
    if exact:
        assert d.numel() == 0 or d.max().item() == 0
    per_frame = d.mean(dim=(1, 2, 3)).tolist() if d.numel() else []
    assert all(e <= JPEG_FRAME_TOLERANCE for e in per_frame), per_frame
    return per_frame


@pytest.mark.parametrize("fmt", ["jpeg", "raw"])
def test_a_shard_holds_what_the_loader_gives_for_every_good_entry(tiny, root, shards, fmt):
    folder, manifest = shards[fmt]
    fresh = dm(tiny, root / "train.json").train_set
    got, errors = items(folder, manifest), []
    assert manifest["written"] == len(got) == 12 and manifest["splits"]["train"][0]["entries"] == 14
    assert sorted(s["meta"]["index"] for s in got) == [i for i in range(14) if i not in (4, 8)]
    for s in got:
        want = fresh.load_entry(0, s["meta"]["index"])
        errors += close(s["frames"], want["frames"], exact=fmt == "raw")
        for key in ("frame_times", "input_ids", "labels", "question_ids"):
            assert torch.equal(s[key], want[key]), key
        assert s["meta"] == json.loads(json.dumps(want["meta"])) and s["skipped"] == []
    assert {len(s["frames"]) for s in got} >= {0, 1, 4}  # text-only, image and video entries
    assert np.mean(errors) <= JPEG_MEAN_TOLERANCE and (fmt == "jpeg") == (max(errors) > 0)


def test_bad_entries_are_left_out_and_listed_as_a_blocklist(root, shards):
    folder, manifest = shards["jpeg"]
    report = json.loads((folder / REPORT).read_text())
    rows = {b["id"]: (b["reason"], b["index"]) for b in report["bad_entries"]}
    assert rows == {"missing": ("missing_file", 4), "hostile": ("bad_container", 8)}
    assert manifest["counts"] == {"bad_container": 1, "missing_file": 1} and manifest["bad"] == 2
    assert load_blocklist(folder / REPORT) == {(str((root / "train.json").resolve()), 4),
                                               (str((root / "train.json").resolve()), 8)}


def test_streaming_gives_the_on_the_fly_batches(tiny, root, shards):
    """The streaming loader's batches hold the same fields, shapes and dtypes, and the same samples as the on-the-fly
    loader's collated from the same entries."""
    folder, _ = shards["raw"]
    streamed = dm(tiny, root / "train.json", streaming=str(folder))
    fresh = dm(tiny, root / "train.json")
    batches = list(streamed.train_dataloader())
    assert len(batches) == 4 and sum(len(b["meta"]) for b in batches) == 12
    seen = [m["index"] for b in batches for m in b["meta"]]
    assert sorted(seen) == [i for i in range(14) if i not in (4, 8)]
    for batch in batches:
        want = fresh.collator([fresh.train_set.load_entry(0, m["index"]) for m in batch["meta"]])
        assert batch.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(batch[key], value), key
        assert batch["skipped"] == []


def test_shards_made_with_other_settings_or_sources_are_refused(tiny, root, shards, tmp_path):
    folder, _ = shards["jpeg"]
    with pytest.raises(ValueError, match=r"--data.fps: shards 1.0, this run 2.0.*lit_bvllm shard"):
        dm(tiny, root / "train.json", streaming=str(folder), fps=2.0)
    with pytest.raises(ValueError, match=r"--data.blocklist: shards None, this run '"):  # it shaped what was written
        dm(tiny, root / "train.json", streaming=str(folder), blocklist=str(folder / REPORT))
    other = root / "other.json"
    other.write_text((root / "train.json").read_text())
    with pytest.raises(ValueError, match="holds the train set"):
        dm(tiny, other, streaming=str(folder))
    with pytest.raises(FileNotFoundError, match=f"holds no {MANIFEST}.*lit_bvllm shard"):
        read_manifest(str(tmp_path))
    with pytest.raises(FileExistsError, match="--overwrite true"):
        write_shards(dm(tiny, root / "train.json", max_frames=3), str(folder))


def test_an_entry_that_fails_to_decode_is_listed_and_never_served(tiny, root, tmp_path, monkeypatch):
    """A decode failure past the header check (a corrupt stream) is a report row and a tombstone item: one item per
    entry (what a resumed litdata write needs), never served; the loader puts the sample before it in its place."""
    from datamodules.errors import SampleError
    from datamodules.video_instruct import VideoInstructDataset

    real = VideoInstructDataset.load_entry

    def load_entry(self, source, index):  # inherited by the forked writers
        if index == 2:
            raise SampleError("decode_error", "video", "corrupt stream")
        return real(self, source, index)

    monkeypatch.setattr(VideoInstructDataset, "load_entry", load_entry)
    manifest = write_shards(dm(tiny, root / "train.json"), str(tmp_path / "s"), workers=2)
    part = manifest["splits"]["train"][0]
    assert (part["items"], part["samples"], manifest["counts"]) == (
        12, 11, {"bad_container": 1, "decode_error": 1, "missing_file": 1})
    report = json.loads((tmp_path / "s" / REPORT).read_text())
    assert [(b["index"], b["reason"], b["detail"]) for b in report["bad_entries"] if b["index"] == 2] == [
        (2, "decode_error", "corrupt stream")]
    monkeypatch.undo()
    good = [i for i in range(14) if i not in (2, 4, 8)]
    for batch_size in (3, 1):  # the tombstone's place taken by the sample before it: no batch comes out smaller
        data = dm(tiny, root / "train.json", streaming=str(tmp_path / "s"), batch_size=batch_size)
        batches = list(data.train_dataloader())
        served = [m["index"] for b in batches for m in b["meta"]]
        assert len(served) == 12 and sorted(set(served)) == good  # 11 samples, one of them twice
        assert all(len(b["meta"]) == batch_size for b in batches)
        assert all(b["frames"].shape[0] == batch_size for b in batches)


KILLED_WRITE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_shards import dm
from datamodules import shards
pack = shards.pack

def dying(sample, *a, **k):  # a shard job killed mid-way (a cluster's time limit): every process at once
    if os.environ.get("KILL_AT") == str(sample["meta"]["index"]):
        os.killpg(0, signal.SIGKILL)
    return pack(sample, *a, **k)

shards.pack = dying
shards.write_shards(dm({tiny!r}, {train!r}), {out!r}, workers=2, chunk_bytes="8KB")
"""


def test_an_interrupted_write_finishes_when_run_again(tiny, root, shards, tmp_path):
    out = tmp_path / "resumed"
    script = KILLED_WRITE.format(tests=str(REPO / "tests"), tiny={"llm": tiny["llm"], "vision": tiny["vision"]},
                                 train=str(root / "train.json"), out=str(out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", script], env={**env, "KILL_AT": "12"}, cwd=REPO,
                            start_new_session=True, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / MANIFEST).exists() and any((out / "train").rglob("chunk-*.bin"))  # part written
    with pytest.raises(FileNotFoundError, match="did not finish; run the same command again"):
        read_manifest(str(out))
    again = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, start_new_session=True,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    manifest = read_manifest(str(out))
    got, want = items(out, manifest), items(*shards["jpeg"])
    assert sorted(s["meta"]["index"] for s in got) == sorted(s["meta"]["index"] for s in want)  # each once
    by_index = {s["meta"]["index"]: s for s in want}
    for s in got:
        assert torch.equal(s["frames"], by_index[s["meta"]["index"]]["frames"])


class Recorder(L.LightningModule):
    """Trains a scalar on the frames; records the entry index of every training sample."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.seen: list[int] = []

    def training_step(self, batch, batch_idx):
        self.seen += [m["index"] for m in batch["meta"]]
        return (self.w * batch["frames"].float().mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def trainer(tmp, **kw):
    return L.Trainer(default_root_dir=tmp, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     **kw)


def test_a_resumed_run_sees_exactly_the_samples_the_interrupted_one_had_left(tiny, root, shards, tmp_path):
    folder, _ = shards["jpeg"]
    data = lambda: dm(tiny, root / "train.json", streaming=str(folder), num_workers=2, batch_size=2)  # noqa: E731
    whole = Recorder()
    trainer(tmp_path / "whole", max_epochs=2, enable_checkpointing=False).fit(whole, datamodule=data())
    assert len(whole.seen) == 24 and sorted(whole.seen[:12]) == sorted(whole.seen[12:])  # each once per epoch
    assert whole.seen[:12] != whole.seen[12:]  # reshuffled

    first = Recorder()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=9, save_top_k=-1)
    trainer(tmp_path / "first", max_steps=9, callbacks=[ckpt]).fit(first, datamodule=data())
    rest = Recorder()
    path = next((tmp_path / "ckpt").glob("*.ckpt"))
    trainer(tmp_path / "rest", max_epochs=2, enable_checkpointing=False).fit(rest, datamodule=data(),
                                                                             ckpt_path=str(path))
    assert first.seen == whole.seen[:18]  # into the second epoch
    assert rest.seen == whole.seen[18:]


def test_a_weighted_mixture_draws_each_source_by_its_weight(tiny, root, tmp_path):
    entries = json.loads((root / "train.json").read_text())
    good = [e for e in entries if e.get("id") not in ("missing", "hostile")]
    (root / "a.json").write_text(json.dumps(good))
    (root / "b.json").write_text(json.dumps(good[:8]))
    mix = root / "mix.yaml"
    mix.write_text(f"datasets:\n  - path: {root / 'a.json'}\n    weight: 1.0\n"
                   f"  - path: {root / 'b.json'}\n    weight: 0.5\n")
    write_shards(dm(tiny, mix), str(tmp_path / "mix"), workers=1)
    manifest = read_manifest(str(tmp_path / "mix"))
    assert [(d["samples"], d["weight"]) for d in manifest["splits"]["train"]] == [(12, 1.0), (8, 0.5)]
    counts = []
    for seed in range(8):
        batches = list(dm(tiny, mix, streaming=str(tmp_path / "mix"), seed=seed).train_dataloader())
        seen = [(os.path.basename(m["source"]), m["index"]) for b in batches for m in b["meta"]]
        a = [i for s, i in seen if s == "a.json"]
        b = [i for s, i in seen if s == "b.json"]
        assert len(set(b)) == len(b) and len(set(a)) == len(a)  # without repeats
        counts.append((len(a), len(b)))
    # each draw picks a 3x as often as b (12 x 1.0 against 8 x 0.5), and the epoch ends when one runs out: b gives
    # about 4 of its 8 (weights ignored, by size alone, it would give all 8 beside a's 12)
    a, b = np.mean([a for a, _ in counts]), np.mean([b for _, b in counts])
    assert a > 2 * b and b < 6, counts


def test_two_ranks_stream_disjoint_samples_that_cover_the_set(tiny, synthetic, tmp_path):
    """DDP on 2 CPU processes (gloo) through the console script: `shard`, then `fit --data.streaming`; each epoch
    the ranks' samples are disjoint and together every entry once (8 entries: 2 whole batches of 2 per rank, so
    litdata's drop_last, which evens the ranks out, drops none)."""
    from helpers import common, launch

    entries = json.loads((synthetic / "pretrain.json").read_text())
    entries = [{**entries[k % len(entries)], "id": f"e{k}"} for k in range(8)]  # the fixture's set has 6
    train = synthetic / "pretrain_first8.json"  # beside the media it names
    train.write_text(json.dumps(entries))
    out, ranks = tmp_path / "shards", tmp_path / "ranks"
    data = ["--data.train", str(train)]
    printed = launch(["shard", *common(tiny), *data, "--out", str(out), "--workers", "2"], tmp_path).stdout
    assert "wrote 8 samples (train 8)" in printed and "--data.streaming" in printed
    launch(["fit", *common(tiny), *data, "--data.streaming", str(out), "--data.batch_size", "2",
            "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_epochs", "2",
            "--trainer.max_steps", "-1", "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.logger.init_args.version", "stream", "--trainer.callbacks+=ddp_probe.RankRecorder",
            f"--trainer.callbacks.dirpath={ranks}"], tmp_path)
    recorded = [json.loads((ranks / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in recorded] == [2, 2]
    for epoch in ("0", "1"):
        per_rank = [[tuple(s) for s in r["samples"][epoch]] for r in recorded]
        assert [len(p) for p in per_rank] == [4, 4]
        assert not set(per_rank[0]) & set(per_rank[1])
        assert sorted(i for p in per_rank for _, i in p) == list(range(8))
