"""VideoInstructDataModule end to end: batches from the synthetic set, mixtures, workers, bad data, scan."""

import json
import shutil

import lightning as L
import numpy as np
import pytest
import torch

from datamodules import SkippedSamplesLogger, VideoInstructDataModule
from datamodules.conversation import IGNORE_INDEX
from datamodules.errors import DataError

GOOD = lambda i, path="videos/good.mp4": {  # noqa: E731
    "id": f"good{i}", "video": path,
    "conversations": [{"from": "human", "value": "<video>\nWhat is shown?"}, {"from": "gpt", "value": f"Shapes {i}."}],
}


def dm(tiny, train, **kw):
    args = dict(tokenizer=tiny["llm"], vision_tower=tiny["vision"], num_workers=0, batch_size=4, max_length=256,
                visual_tokens=32, max_frames=16)
    args.update(kw)
    d = VideoInstructDataModule(train=train, **args)
    d.setup("fit")
    return d


def test_a_data_module_built_by_hand_names_its_visual_token_reservation(tiny, synthetic):
    """lit_bvllm sets --data.visual_tokens from the reducer's budget; built by hand, the data module has no reducer to
    follow and must be told (a default reserved 256 whatever the reducer emitted)."""
    with pytest.raises(ValueError, match="visual_tokens must be the reducer's budget"):
        VideoInstructDataModule(train=str(synthetic / "finetune.json"), tokenizer=tiny["llm"])


def test_batch_layout_on_the_synthetic_finetune_set(tiny, synthetic):
    d = dm(tiny, str(synthetic / "finetune.json"), batch_size=6)
    batch = next(iter(d.train_dataloader()))
    B, T = batch["frame_mask"].shape
    assert batch["frames"].shape == (B, T, 3, 32, 32) and B == 6
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    vid = d.tokenizer.convert_tokens_to_ids("<video>")
    for b, meta in enumerate(batch["meta"]):
        n = int(batch["frame_mask"][b].sum())
        assert batch["frame_mask"][b, :n].all() and not batch["frame_mask"][b, n:].any()  # frames first, then padding
        assert (batch["frames"][b, n:] == 0).all()
        assert int((batch["input_ids"][b] == vid).sum()) == (meta["media"] is not None)
        if meta["media"] == "video":
            assert n == min(16, round(meta["duration"]))  # 1 fps, capped at max_frames
            assert (np.diff(batch["frame_times"][b, :n].numpy()) > 0).all()
        elif meta["media"] == "image":
            assert n == 1
        else:
            assert n == 0
        pad = batch["attention_mask"][b] == 0
        assert ((batch["labels"][b][pad] == IGNORE_INDEX).all()
                and (batch["input_ids"][b][pad] == d.tokenizer.pad_token_id).all())
        q = batch["question_ids"][b][batch["question_mask"][b].bool()]
        assert d.tokenizer.decode(q) == meta["question"]
        assert "<video>" not in meta["question"] and "<image>" not in meta["question"]


def test_supervised_spans_are_the_gpt_turns(tiny, synthetic):
    entries = json.loads((synthetic / "finetune.json").read_text())
    d = dm(tiny, str(synthetic / "finetune.json"), max_length=2048)
    for i in range(0, len(d.train_set), 3):
        s = d.train_set[i]
        entry = entries[s["meta"]["index"]]
        labels = s["labels"].tolist()
        got, cur = [], []
        for lab in labels + [IGNORE_INDEX]:
            if lab != IGNORE_INDEX:
                cur.append(lab)
            elif cur:
                got.append(d.tokenizer.decode(cur))
                cur = []
        want = [t["value"] + "<|im_end|>\n" for t in entry["conversations"] if t["from"] == "gpt"]
        assert got == want


def test_both_schemas_give_identical_samples(tiny, synthetic):
    a = dm(tiny, str(synthetic / "finetune.json")).train_set
    b = dm(tiny, str(synthetic / "finetune_llamavid.json")).train_set
    for i in range(len(a)):
        sa, sb = a[i], b[i]
        assert torch.equal(sa["input_ids"], sb["input_ids"]) and torch.equal(sa["labels"], sb["labels"])
        assert torch.equal(sa["frames"], sb["frames"])


def test_uniform_mode_and_plain_template(tiny, synthetic):
    d = dm(tiny, str(synthetic / "pretrain.json"), frame_mode="uniform", num_frames=5, template="plain", batch_size=3)
    batch = next(iter(d.train_dataloader()))
    for b, meta in enumerate(batch["meta"]):
        assert int(batch["frame_mask"][b].sum()) == (5 if meta["media"] == "video" else 1)
        text = d.tokenizer.decode(batch["input_ids"][b][batch["attention_mask"][b].bool()])
        assert text.startswith("<video>\n") and text.endswith("<|im_end|>")


def test_mixture_through_the_datamodule(tiny, synthetic, tmp_path):
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"datasets:\n  - path: {synthetic}/finetune.json\n    weight: 2\n"
                   f"  - path: {synthetic}/pretrain.json\n    weight: 0.5\n")
    n_ft = len(json.loads((synthetic / "finetune.json").read_text()))
    n_pt = len(json.loads((synthetic / "pretrain.json").read_text()))
    d = dm(tiny, str(mix))
    assert len(d.train_set) == 2 * n_ft + round(0.5 * n_pt)
    sources = [d.train_set[i]["meta"]["source"] for i in range(len(d.train_set) - 3, len(d.train_set))]
    assert all(s.endswith("pretrain.json") for s in sources)


def test_two_workers_give_the_same_batches(tiny, synthetic):
    a = dm(tiny, str(synthetic / "finetune.json"), num_workers=0)
    b = dm(tiny, str(synthetic / "finetune.json"), num_workers=2)
    ba, bb = list(a.train_dataloader()), list(b.train_dataloader())
    assert [m["id"] for x in ba for m in x["meta"]] == [m["id"] for x in bb for m in x["meta"]]
    assert len({m["id"] for x in ba for m in x["meta"]}) == len(a.train_set)  # one pass sees every entry once
    assert all(torch.equal(x["frames"], y["frames"]) and torch.equal(x["input_ids"], y["input_ids"])
               for x, y in zip(ba, bb))


# ---------------------------------------------------------------- bad data

BAD_CASES = {
    "missing_file": lambda root: GOOD(0, "videos/missing.mp4"),
    "decode_error": lambda root: GOOD(0, "videos/garbage.mp4"),
    "decode_error_truncated": lambda root: GOOD(0, "videos/truncated.mp4"),
    "empty_video": lambda root: GOOD(0, "videos/empty.mp4"),
    "missing_tag": lambda root: {**GOOD(0), "conversations": [{"from": "human", "value": "What?"},
                                                              {"from": "gpt", "value": "x"}]},
    "extra_tag": lambda root: {**GOOD(0), "conversations": [{"from": "human", "value": "<video>\nWhat?"},
                                                            {"from": "gpt", "value": "x"},
                                                            {"from": "human", "value": "<video> again?"},
                                                            {"from": "gpt", "value": "y"}]},
    "bad_conversation": lambda root: {**GOOD(0), "conversations": [{"from": "human", "value": "<video>\nWhat?"}]},
    "path_escape": lambda root: GOOD(0, "../outside.mp4"),
    "too_long": lambda root: {**GOOD(0), "conversations": [{"from": "human", "value": "<video>\n" + "why " * 400},
                                                           {"from": "gpt", "value": "x"}]},
}


@pytest.fixture(scope="module")
def bad_root(synthetic, tmp_path_factory):
    """``root/data`` is the data root (annotations + videos/); ``root/outside.mp4`` is a real video outside it."""
    root = tmp_path_factory.mktemp("bad")
    videos = root / "data" / "videos"
    videos.mkdir(parents=True)
    good = synthetic / "videos" / "vid_0000.mp4"
    shutil.copy(good, videos / "good.mp4")
    shutil.copy(good, root / "outside.mp4")
    data = good.read_bytes()
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (videos / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    (videos / "empty.mp4").write_bytes(b"")
    return root


def write(root, name, entries):
    path = root / "data" / name
    path.write_text(json.dumps(entries))
    return path


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_entry_is_skipped_and_counted_in_training(tiny, bad_root, case):
    entry = {**BAD_CASES[case](bad_root), "id": f"bad_{case}"}
    path = write(bad_root, f"{case}.json", [GOOD(1), entry, GOOD(2)])
    ds = dm(tiny, str(path)).train_set
    sample = ds[1]  # the bad one: replaced by a good entry
    assert sample["meta"]["id"] in ("good1", "good2")
    reason = case.replace("_truncated", "")
    assert sample["skipped"] == [{"reason": reason, "file": str(path), "index": 1, "id": f"bad_{case}"}]
    assert ds[0]["skipped"] == []


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_entry_is_a_clear_error_in_strict_mode(tiny, bad_root, case):
    entry = {**BAD_CASES[case](bad_root), "id": f"bad_{case}"}
    path = write(bad_root, f"{case}.json", [GOOD(1), entry])
    ds = dm(tiny, str(path), strict=True).train_set
    with pytest.raises(DataError) as err:
        ds[1]
    msg = str(err.value)
    assert f"{path}: entry 1, id 'bad_{case}'" in msg and "in field '" in msg and "--data.strict=false" in msg


def test_all_bad_data_stops_with_the_count(tiny, bad_root):
    path = write(bad_root, "all_bad.json", [GOOD(i, "videos/missing.mp4") for i in range(5)])
    ds = dm(tiny, str(path)).train_set
    with pytest.raises(DataError,
                       match=r"too many bad entries: 3 of the 3 read .*\{'missing_file': 3\}.*lit_bvllm scan"):
        ds[0]  # more than --data.max_bad_fraction=0.5 of the 5 entries


def test_scan_report_is_a_blocklist(tiny, bad_root, tmp_path):
    from datamodules.scan import scan_dataset, write_report

    entries = ([GOOD(0)] + [{**make(bad_root), "id": f"bad_{case}"} for case, make in sorted(BAD_CASES.items())]
               + [GOOD(1)])
    path = write(bad_root, "mixed.json", entries)
    ds = dm(tiny, str(path)).train_set
    report = scan_dataset(ds, workers=2)
    assert report["entries"] == len(entries) and report["bad"] == len(BAD_CASES)
    assert report["counts"] == {"bad_conversation": 1, "decode_error": 2, "empty_video": 1, "extra_tag": 1,
                                "missing_file": 1, "missing_tag": 1, "path_escape": 1, "too_long": 1}
    assert [b["index"] for b in report["bad_entries"]] == list(range(1, len(entries) - 1))
    out = write_report(report, tmp_path / "report.json")
    clean = dm(tiny, str(path), blocklist=str(out), strict=True).train_set
    assert len(clean) == 2 and {clean[i]["meta"]["id"] for i in range(2)} == {"good0", "good1"}


class _Consumer(L.LightningModule):
    """Smallest module that trains on a batch: a scalar through the mean frame."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def training_step(self, batch, batch_idx):
        return (self.w * batch["frames"].float().mean()) ** 2 + self.w ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_training_logs_data_skipped_and_writes_per_reason_counts(tiny, bad_root, tmp_path):
    entries = [GOOD(i) if i % 3 else {**GOOD(i, "videos/garbage.mp4"), "id": f"bad{i}"} for i in range(9)]
    path = write(bad_root, "train.json", entries)
    data = VideoInstructDataModule(train=str(path), tokenizer=tiny["llm"], vision_tower=tiny["vision"], num_workers=0,
                                   batch_size=3, max_length=128, visual_tokens=16, max_frames=4)
    trainer = L.Trainer(default_root_dir=tmp_path, max_epochs=1, callbacks=[SkippedSamplesLogger()],
                        logger=L.pytorch.loggers.CSVLogger(tmp_path), enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(_Consumer(), datamodule=data)
    assert trainer.callback_metrics["data/skipped"].item() == 3
    report = json.loads((tmp_path / "lightning_logs" / "version_0" / "skipped_samples.json").read_text())
    assert report["skipped"] == 3 and report["per_reason"] == {"decode_error": 3}
    assert sorted(e["id"] for e in report["entries"]) == ["bad0", "bad3", "bad6"]


def test_question_tokenizer_without_chat_template(tiny, synthetic, tmp_path):
    """A Q-Former's own tokenizer (BERT-style, no chat template, no placeholder) tokenizes the question."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w.strip("?.,").lower() for e in json.loads((synthetic / "finetune.json").read_text())
                    for w in e["conversations"][0]["value"].replace("<video>", " ").replace("<image>", " ").split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + words)}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    from tokenizers.processors import TemplateProcessing

    raw.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]",
                            unk_token="[UNK]").save_pretrained(tmp_path / "bert")
    d = dm(tiny, str(synthetic / "finetune.json"), question_tokenizer=str(tmp_path / "bert"), max_question_length=8)
    batch = next(iter(d.train_dataloader()))
    q = batch["question_ids"]
    assert q.shape[1] <= 8 and (q[:, 0] == 2).all()  # [CLS] first: BERT-style ids, not the LLM's
    assert batch["question_mask"].sum(1).min() >= 3
    assert (q[batch["question_mask"] == 0] == 0).all()  # padded with the question tokenizer's [PAD]


def test_the_main_process_leaves_its_workers_their_cores(monkeypatch):
    """torch's threads and the decoding workers must not fight over the same cores (1.38x slower steps on 2 cores):
    the main process keeps the cores its workers leave, unless the user chose OMP_NUM_THREADS."""
    import os

    from datamodules import loading

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(loading.THREADS_CHOSEN)
    loading.record_thread_choice()  # as lit_bvllm starts: nothing chosen
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # then Lightning's launcher sets cores // processes: not a choice
    # (cores on the node, cores this process may use, processes on the node, --data.num_workers) -> threads (None: kept)
    for total, cores, processes, requested, expected in [(2, 2, 1, "auto", 1), (2, 2, 1, 0, None),
                                                         (64, 64, 1, "auto", 56),
                                                         (16, 16, 8, "auto", 1), (96, 12, 8, "auto", 4),
                                                         (8, 8, 1, 2, 6), (8, 8, 1, 9, 1)]:
        monkeypatch.setattr(os, "cpu_count", lambda n=total: n)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        monkeypatch.setattr(torch, "get_num_threads", lambda n=cores: n)
        trainer = type("Trainer", (), {"num_devices": processes})()
        calls.clear()
        loading.share_cores(requested, trainer)
        assert calls == ([] if expected is None else [expected]), (total, cores, processes, requested, calls)
    monkeypatch.delenv(loading.THREADS_CHOSEN)
    loading.record_thread_choice()  # OMP_NUM_THREADS already set when lit_bvllm starts: the user's (or torchrun's)
    calls.clear()
    loading.share_cores("auto", None)
    assert loading.worker_count("auto") == 7 and calls == []  # the last machine above: 8 cores


def test_loader_factories_leave_the_threads_alone_and_setup_under_a_trainer_sets_them(tiny, synthetic, monkeypatch):
    """The thread policy is applied where the trainer starts (the data module's setup under a trainer), not by every
    ``*_dataloader()`` call; a data module set up without a trainer (scan, preview, a script) changes nothing."""
    import os

    from datamodules import loading

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setenv(loading.THREADS_CHOSEN, "0")  # nothing chosen: the policy acts
    d = dm(tiny, str(synthetic / "finetune.json"), num_workers=1)  # set up without a trainer
    for _ in range(2):
        d.train_dataloader()
    assert calls == []
    d.trainer = type("Trainer", (), {"num_devices": 1, "global_rank": 0, "world_size": 1})()
    d.setup("fit")
    assert calls == [1]  # 2 cores, 1 worker: this process keeps 1
    d.train_dataloader()
    assert calls == [1]


def test_the_default_worker_count_follows_the_machine(monkeypatch):
    import os

    from datamodules.loading import worker_count

    # (cores on the node, cores this process may use, training processes on the node) -> workers
    for total, cores, processes, expected in [(2, 2, 1, 1), (1, 1, 1, 0), (16, 16, 8, 1), (64, 64, 1, 8),
                                              (96, 96, 4, 8), (32, 32, 4, 7),
                                              (96, 12, 8, 8), (96, 4, 8, 3)]:  # srun binds 12 (4) cores to each
        monkeypatch.setattr(os, "cpu_count", lambda n=total: n)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)))
        assert worker_count("auto", processes) == expected, (total, cores, processes)
    assert worker_count(3, 8) == 3  # a count is taken as it is
    for bad in (-1, "many", 1.5, True):
        with pytest.raises(ValueError, match="--data.num_workers must be a count >= 0 or 'auto'"):
            worker_count(bad)
