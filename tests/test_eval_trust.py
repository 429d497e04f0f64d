"""Evaluation that cannot silently mislead: benchmark files in their releases' layouts, missing and unreadable
videos, whole circular groups, fallback letters, ranks without items, ``predict``'s records, empty categories."""

import json
import logging
import os
import shutil

import lightning as L
import pytest
import torch
from helpers import needle_data

from datamodules.benchmarks import MSVDQA, BenchmarkDataModule, EvalItem, Evaluator, MVBench, VNBench
from datamodules.benchmarks.base import check_fallback_letter
from datamodules.benchmarks.datamodule import PADDING, BenchmarkDataset, ShardSampler, limit_groups
from datamodules.benchmarks.metrics import ItemScores
from datamodules.benchmarks.vnbench import parse_vnbench, parse_vnbench_official
from lit_bvllm.training.callbacks import BenchmarkEvaluation, _flatten


@pytest.fixture
def model(eval_model):
    return eval_model


def _trainer(tmp_path, **kwargs):
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="run", version="v")
    return L.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False,
                     callbacks=[BenchmarkEvaluation()], **kwargs)


@pytest.fixture
def vnbench_release(synthetic, tmp_path):
    """The synthetic needle questions laid out as VideoNIAH ships VNBench: bare file names in ``VNBench_qa.json``,
    the videos in a folder of their own (``--video_dir`` of its example script), 2 videos x 4 types x 4 tries (the 3
    needle types and bg_every1)."""
    src = synthetic / "eval" / "vnbench"
    entries = json.loads((src / "VNBench_qa.json").read_text())
    keep = sorted({e["video"] for e in entries})[:2]
    entries = [{**e, "video": os.path.basename(e["video"])} for e in entries if e["video"] in keep]
    root = tmp_path / "VNBench"
    (root / "videos_all").mkdir(parents=True)
    for v in keep:
        os.link(src / v, root / "videos_all" / os.path.basename(v))
    (root / "VNBench_qa.json").write_text(json.dumps(entries))
    return root, entries


# ---------------------------------------------------------------------- point 2: videos not found


def test_videos_not_found_stop_the_run_before_the_model_loads(tiny, vnbench_release):
    root, _ = vnbench_release
    dm = BenchmarkDataModule(VNBench(str(root)), tiny["llm"], vision_tower=tiny["vision"], num_workers=0)
    with pytest.raises(FileNotFoundError) as err:
        dm.setup("test")  # the data module's setup runs before configure_model builds the model
    message = str(err.value)
    assert "2 of 2 vnbench videos are missing" in message
    assert f"'{root}'" in message and "--data.benchmark.video_root" in message  # where it looked, what to set
    # pointed at the release's video folder, every item finds its video
    dm = BenchmarkDataModule(VNBench(str(root), video_root="videos_all"), tiny["llm"], vision_tower=tiny["vision"],
                             num_workers=0)
    dm.setup("test")
    assert len(dm.items) == 32 and all(os.path.isfile(it.video) for it in dm.items)
    assert dm.test_set.refusals == {}  # the video folder is one of the benchmark's media folders


def test_a_share_of_missing_videos_under_the_limit_is_scored_wrong_and_counted(model, tiny, vnbench_release,
                                                                                tmp_path, caplog):
    root, entries = vnbench_release
    os.unlink(root / "videos_all" / entries[-1]["video"])  # 1 of 2 videos gone
    bench = VNBench(str(root), video_root="videos_all")
    with pytest.raises(FileNotFoundError, match="1 of 2 vnbench videos are missing"):
        BenchmarkDataModule(bench, tiny["llm"], vision_tower=tiny["vision"], num_workers=0).setup("test")
    dm = BenchmarkDataModule(bench, tiny["llm"], vision_tower=tiny["vision"], num_workers=0, batch_size=12,
                             mode="likelihood", max_unreadable_fraction=0.5)
    with caplog.at_level(logging.INFO):
        _trainer(tmp_path).test(model, datamodule=dm)
    result = json.loads((tmp_path / "run" / "v" / "vnbench_results.json").read_text())
    assert (result["videos"], result["unreadable_videos"], result["errors"]) == (2, 1, 16)
    assert "vnbench: 1 of 2 videos missing or unreadable" in caplog.text  # printed at the end of every run


def test_undecodable_videos_stop_the_run_before_scoring_and_keep_the_answers(model, tiny, vnbench_release, tmp_path):
    root, entries = vnbench_release
    for name in {e["video"] for e in entries}:  # present, but not video
        path = root / "videos_all" / name
        path.unlink()
        path.write_bytes(b"not a video at all" * 100)
    dm = BenchmarkDataModule(VNBench(str(root), video_root="videos_all"), tiny["llm"], vision_tower=tiny["vision"],
                             num_workers=0, batch_size=12, mode="likelihood")
    with pytest.raises(RuntimeError, match=r"2 of 2 vnbench videos are unreadable .*First error: item "):
        _trainer(tmp_path).test(model, datamodule=dm)
    run = tmp_path / "run" / "v"
    assert len((run / "vnbench_predictions.jsonl").read_text().splitlines()) == 32
    assert not (run / "vnbench_results.json").exists()  # no number that could be mistaken for a result


# ---------------------------------------------------------------------- point 3: whole circular groups


def _vn_items(groups=("a", "b"), tries=4):
    return [EvalItem(f"{g}_{k}", "v.mp4", "q", ["w", "x", "y", "z"], k, category="ret", group=g)
            for g in groups for k in range(tries)]


def _batch(indices, error=None):
    return {"index": torch.tensor(indices), "meta": [{"prompt": "p", "error": error} for _ in indices]}


def _aggregate(ev, indices, outputs):
    records, update = ev.score(_batch(indices), outputs)
    metric = ItemScores(len(ev.items))
    metric.update(**update)
    return ev.aggregate(metric.compute(), records), records


def test_an_incomplete_circular_group_does_not_count():
    items = _vn_items()
    ev = Evaluator(VNBench("root"), items)
    # group a: 2 of its 4 tries scored, both right; group b: all 4 right
    result, _ = _aggregate(ev, [0, 1, 4, 5, 6, 7], ["(A)", "(B)", "(A)", "(B)", "(C)", "(D)"])
    assert (result["complete_groups"], result["incomplete_groups"]) == (1, 1)
    assert result["circular_accuracy"] == 1.0 and result["circular_per_category"] == {"ret": 1.0}
    # only an incomplete group: no circular number at all (not 1.0 from 2 of 4 tries)
    result, _ = _aggregate(Evaluator(VNBench("root"), items[:2]), [0, 1], ["(A)", "(B)"])
    assert result["circular_accuracy"] is None and result["incomplete_groups"] == 1


def test_limit_keeps_whole_groups():
    items = _vn_items(("a", "b", "c"))
    assert [it.id for it in limit_groups(items, 2)] == ["a_0", "a_1", "a_2", "a_3"]
    assert [it.group for it in limit_groups(items, 5)] == ["a"] * 4 + ["b"] * 4
    assert limit_groups(items, None) == items and limit_groups(items, 100) == items
    # groups need not be contiguous in the file: a group's later tries come along
    shuffled = [items[0], items[4], items[1], items[2], items[3], items[5], items[6], items[7]]
    assert [it.id for it in limit_groups(shuffled, 1)] == ["a_0", "a_1", "a_2", "a_3"]


def test_the_data_module_limits_whole_groups(tiny, synthetic):
    dm = needle_data(tiny, synthetic, limit=2)
    assert len(dm.items) == 4 and len({it.group for it in dm.items}) == 1


# ---------------------------------------------------------------------- point 4: the fallback letter


def test_fallback_letter_is_checked_before_the_run():
    assert check_fallback_letter("c") == "C" and check_fallback_letter(None) is None
    for bad in ("CC", "1", "", "("):
        with pytest.raises(ValueError, match="--data.benchmark.fallback_letter must be one letter"):
            MVBench("root", fallback_letter=bad)
    bench = VNBench("root", fallback_letter="E")  # VNBench items have 4 options: E names none of them
    with pytest.raises(ValueError, match="fallback_letter 'E' names no option of any vnbench item"):
        bench.check_items(_vn_items())


def test_fallback_letter_past_an_items_options_counts_wrong_without_crashing():
    items = [EvalItem("two", "v.mp4", "q", ["yes", "no"], 0), EvalItem("four", "v.mp4", "q", list("wxyz"), 2)]
    ev = Evaluator(MVBench("root", fallback_letter="c"), items)
    records, _ = ev.score(_batch([0, 1]), ["hmm", "hmm"])  # crashed with ValueError: 'C' is not in list
    assert [r["pred"] for r in records] == [None, 2] and [r["letter"] for r in records] == ["C", "C"]
    assert [r["fallback"] for r in records] == [True, True] and [r["correct"] for r in records] == [False, True]


# ---------------------------------------------------------------------- point 8: a rank without items


def test_a_rank_without_items_runs_a_stand_in_that_nobody_scores(tiny, synthetic):
    assert list(ShardSampler(1, 0, 2)) == [0] and list(ShardSampler(1, 1, 2)) == [1]
    dm = needle_data(tiny, synthetic, limit=1)
    ds: BenchmarkDataset = dm.test_set
    stand_in = ds[len(ds)]
    assert stand_in["index"] == PADDING and torch.equal(stand_in["input_ids"], ds[0]["input_ids"])
    ev = Evaluator(VNBench("root"), _vn_items())
    records, update = ev.score(_batch([PADDING]), ["(A)"])
    assert records == [] and update["index"].numel() == 0


def test_two_processes_with_fewer_items_than_processes(tiny, synthetic, tmp_path):
    """``lit_bvllm test`` on 2 CPU processes (DDP, gloo) and 1 item: the run ends (it crashed, then hung), and the
    item is scored once."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lit_bvllm = os.path.join(os.path.dirname(sys.executable), "lit_bvllm")  # as users launch it
    cmd = [lit_bvllm, "test", "--config", "experiments/pretrain.yaml",
           "--config", "experiments/eval/base.yaml", "--config", "experiments/eval/msvd_qa.yaml",
           *tiny["flags"], "--model.max_new_tokens", "2",
           "--data.benchmark.root", str(synthetic / "eval" / "msvd"), "--data.limit", "1", "--data.num_workers", "0",
           "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.version", "two",
           "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "eval_msvd_qa" / "two"
    result = json.loads((run / "msvd_qa_results.json").read_text())
    assert (result["items"], result["evaluated"], result["duplicates"], result["missing"]) == (1, 1, 0, 0)
    assert len((run / "msvd_qa_predictions.jsonl").read_text().splitlines()) == 1


# ---------------------------------------------------------------------- point 9: predict's records


def test_predict_marks_items_whose_video_is_missing(model, tiny, synthetic, tmp_path):
    from lit_bvllm.training.callbacks import PredictionWriter

    src = synthetic / "eval" / "msvd"
    root = tmp_path / "msvd"
    shutil.copytree(src, root, copy_function=os.link)
    entries = json.loads((root / "test_qa.json").read_text())[:3]
    (root / "test_qa.json").write_text(json.dumps(entries))
    gone = MSVDQA(str(root)).read()[1].video
    os.unlink(gone)
    dm = BenchmarkDataModule(MSVDQA(str(root)), tiny["llm"], vision_tower=tiny["vision"], num_workers=0,
                             max_unreadable_fraction=1.0)
    logger = L.pytorch.loggers.CSVLogger(tmp_path, name="run", version="v")
    L.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, callbacks=[PredictionWriter()]).predict(
        model, datamodule=dm, return_predictions=False)
    records = [json.loads(line)
               for line in (tmp_path / "run" / "v" / "predictions.rank0.jsonl").read_text().splitlines()]
    same_video = [r for r in records if dm.items[[it.id for it in dm.items].index(r["id"])].video == gone]
    assert same_video and all("missing_file" in r["error"] for r in same_video)
    assert all(r["error"] is None for r in records if r not in same_video)
    assert all("output" in r and "answer" not in r for r in records)  # `answer` is the gold answer in test files


# ---------------------------------------------------------------------- point 10: smaller


def test_no_categories_no_per_category_and_no_tag_ending_in_a_slash():
    items = [EvalItem(f"q{i}", "v.mp4", "q", list("wxyz"), 0) for i in range(2)]  # category ""
    result, _ = _aggregate(Evaluator(MVBench("root"), items), [0, 1], ["A", "B"])
    assert "per_category" not in result
    assert not any(k.endswith("/") for k in _flatten({"per_domain": {"": 0.5, "news": 1.0}}))


def test_a_partial_mvbench_run_records_its_missing_tasks():
    items = [EvalItem(f"q{i}", "v.mp4", "q", list("wxyz"), 0, category="Action Sequence") for i in range(2)]
    result, _ = _aggregate(Evaluator(MVBench("root"), items), [0, 1], ["A", "B"])
    assert result["tasks_evaluated"] == 1 and len(result["tasks_missing"]) == 19
    assert "Action Sequence" not in result["tasks_missing"] and "Action Prediction" in result["tasks_missing"]


def test_vnbench_offers_the_official_parse_rule_and_records_it():
    options = ["red square", "blue circle", "green star", "white heart"]
    assert parse_vnbench("(B) A red square", options) == 1
    assert parse_vnbench_official("(B) A red square", options) == 0  # eval.py checks 'A' in the text first
    assert (parse_vnbench_official("Based on the video", options) == 1
            and parse_vnbench_official("none", options) is None)
    bench = VNBench("root", parse_rule=parse_vnbench_official)
    assert Evaluator(bench, _vn_items()).describe(4)["parse_rule"] == "vnbench_official"
