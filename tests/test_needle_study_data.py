"""The needle study's data and controls (issue 13): held-out needle sets of exact lengths, the frames' evidence in
eval batches, and the Uniform reducer's random and oracle frame picks."""

import functools
import json
import pathlib

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from reducer_contract import D, check_contract

from datamodules.benchmarks import BenchmarkDataModule, VNBench
from datamodules.benchmarks.selection import shown
from datamodules.video import FrameSampling, read_video
from lit_bvllm.reducers import Uniform
from lit_bvllm.reducers.base import Reducer, pack
from lit_bvllm.reducers.sampling import select_uniform_frames
from lit_bvllm.reducers.uniform import gather_frames, oracle_frames, random_frames, spatial_pool
from lit_bvllm.training.callbacks import BenchmarkEvaluation
from lit_bvllm.training.lit_module import VideoLLMModule
from lit_bvllm.world import make_synthetic
from lit_bvllm.world.needles import needle_records
from lit_bvllm.world.scenes import sample_video

REPO = pathlib.Path(__file__).resolve().parents[1]
LENGTHS = [16, 64, 128, 256]
DRAW = {"min_fps": 2, "max_fps": 2, "width": 64, "height": 48}  # small and quick; the demo's sets use its own flags


@pytest.fixture(scope="module")
def needles(tmp_path_factory):
    """2 videos per length, alone in their folder (``needles_only``)."""
    root = tmp_path_factory.mktemp("needles")
    summary = make_synthetic(root, seed=0, needle_lengths=LENGTHS, needle_videos=2, needles_only=True, **DRAW)
    return root, summary


def load(path: pathlib.Path):
    return json.loads(path.read_text())


# ------------------------------------------------------------------ the sets


def test_each_set_has_videos_of_exactly_its_length(needles):
    root, summary = needles
    assert sorted(p.name for p in root.iterdir()) == ["eval"]  # nothing but the needle sets
    assert sorted(p.name for p in (root / "eval").iterdir()) == sorted(f"needle_{n}s" for n in LENGTHS)
    for n in LENGTHS:
        folder = root / "eval" / f"needle_{n}s"
        assert summary["needle_sets"][f"eval/needle_{n}s"]["videos"] == 2
        assert summary["needle_sets"][f"eval/needle_{n}s"]["items"] == 2 * 4 * 4  # 3 needle types + bg_every1
        assert sorted(p.name for p in (folder / "videos").iterdir()) == [f"needle{n}s_0000.mp4", f"needle{n}s_0001.mp4"]
        for record in load(folder / "metadata.json")["videos"]:
            assert record["duration"] == n and record["num_frames"] == n * record["fps"]
            frames, times, duration = read_video(str(root / record["path"]), FrameSampling("fps", 1.0))
            assert duration == pytest.approx(n) and len(frames) == n  # n frames at 1 fps, one per second
            assert times.tolist() == pytest.approx([t + 0.5 for t in range(n)])


def test_questions_tries_and_needle_times_are_well_formed(needles):
    root, _ = needles
    for n in LENGTHS:
        folder = root / "eval" / f"needle_{n}s"
        records = {r["id"]: r for r in load(folder / "metadata.json")["videos"]}
        entries = load(folder / "VNBench_qa.json")
        assert len(entries) == len(records) * 4 * 4
        for r in records.values():
            events = [[e["start"], e["end"]] for e in r["needles"]]
            assert 2 <= len(events) <= 4 and len({(e["shape"], e["colour"]) for e in r["needles"]}) >= 2
            assert all(1 <= a < b <= n - 1 and b - a in (1, 2) for a, b in events)  # short, 1 s clear of both ends
            assert all(b + 1 <= c for (_, b), (c, _) in zip(events, events[1:]))  # in order, >= 1 s apart
        groups = {}
        for e in entries:
            groups.setdefault(e["question_id"].rsplit("_", 1)[0], []).append(e)
            events = [[x["start"], x["end"]] for x in records[pathlib.Path(e["video"]).stem]["needles"]]
            assert e["gt"] in e["options"] and len(set(e["options"])) == 4
            if e["type"] == "bg_every1":  # every frame answers it (tests/test_every_frame_task.py)
                assert e["needle_times"] == [[0, n]]
                continue
            assert e["needle_times"] and all(span in events for span in e["needle_times"])
            if e["type"] == "ord_insert1":
                assert e["needle_times"] == events
        assert len(groups) == len(records) * 4
        for tries in groups.values():
            assert [e["try"] for e in tries] == [0, 1, 2, 3]
            first = tries[0]["options"]
            assert all(e["options"] == first[k:] + first[:k] for k, e in enumerate(tries))  # rotated left by k
        items = VNBench(str(folder)).read()  # the study's reader takes it as it is
        assert len(items) == len(entries) and all(it.extra["needle_times"] for it in items)


def test_the_sets_share_no_video_with_training_or_the_eval_set(needles, synthetic):
    """Their own random streams: a needle video is drawn by no stream of the rest of make-synthetic, and no file
    of the training or eval videos is one of them."""
    root, _ = needles
    for n in LENGTHS:
        for i, record in enumerate(needle_records(0, n, 2, (2, 2), 64, 48)):
            for stream in range(8):  # generate.py's TRAIN_VIDEOS .. BENCHMARKS, same seed and index
                other = sample_video(np.random.default_rng([0, stream, i]), record["id"], record["path"], "eval",
                                     (n, n), (2, 2), 64, 48, min_needles=2)
                assert other != record
    theirs = {p.read_bytes() for p in synthetic.rglob("*.mp4")}
    assert not any(p.read_bytes() in theirs for p in root.rglob("*.mp4"))


def test_the_same_seed_writes_the_same_files_and_another_does_not(needles, tmp_path):
    root, _ = needles
    make_synthetic(tmp_path / "again", seed=0, needle_lengths=[16], needle_videos=2, needles_only=True, **DRAW)
    make_synthetic(tmp_path / "other", seed=1, needle_lengths=[16], needle_videos=2, needles_only=True, **DRAW)
    for name in ["VNBench_qa.json", "metadata.json"]:
        ours = (root / "eval/needle_16s" / name).read_bytes()
        assert (tmp_path / "again/eval/needle_16s" / name).read_bytes() == ours
        assert (tmp_path / "other/eval/needle_16s" / name).read_bytes() != ours
    video = "eval/needle_16s/videos/needle16s_0001.mp4"
    assert np.array_equal(read_video(str(tmp_path / "again" / video))[0],
                          read_video(str(root / video))[0])
    # a set depends on (seed, length, index) only: more videos or other lengths never change one already drawn
    assert needle_records(0, 16, 1, (2, 2), 64, 48) == needle_records(0, 16, 5, (2, 2), 64, 48)[:1]


def test_needle_flags_are_checked_and_absent_by_default(tmp_path):
    for flags, message in [({"needle_lengths": [4]}, "--needle-lengths must be whole seconds >= 8"),
                           ({"needle_lengths": [16, 16]}, "repeats"),
                           ({"needle_lengths": [16], "needle_videos": 0}, "--needle-videos"),
                           ({"needles_only": True}, "give --needle-lengths")]:
        with pytest.raises(ValueError, match=message):
            make_synthetic(tmp_path, **flags)
    assert not any(tmp_path.iterdir())
    summary = make_synthetic(tmp_path, num_videos=1, num_eval_videos=1, max_duration=8)
    assert "needle_sets" not in summary and not list((tmp_path / "eval").glob("needle_*"))


def test_the_study_configs_point_at_the_sets():
    for n in LENGTHS:
        cfg = yaml.safe_load((REPO / "experiments/eval" / f"needle_{n}s.yaml").read_text())
        assert cfg["trainer"]["logger"]["init_args"]["name"] == f"eval_needle_{n}s"
        assert cfg["data"]["init_args"]["benchmark"]["init_args"]["root"] == f"artifacts/synthetic/eval/needle_{n}s"
        assert cfg["data"]["init_args"]["mode"] == "likelihood"
        assert cfg["data"]["init_args"].get("max_frames", 128) >= n  # every second sampled (base.yaml: 128)


# ------------------------------------------------------------------ evidence in eval batches


def datamodule(tiny, folder, **kwargs) -> BenchmarkDataModule:
    dm = BenchmarkDataModule(VNBench(str(folder)), tiny["llm"], vision_tower=tiny["vision"], num_workers=0,
                             batch_size=3, mode="likelihood", **kwargs)
    dm.setup("test")
    return dm


def test_frame_evidence_marks_exactly_the_frames_inside_the_spans(tiny, needles):
    root, _ = needles
    long, short = datamodule(tiny, root / "eval/needle_64s"), datamodule(tiny, root / "eval/needle_16s")
    for dm in (long, short):
        for i, item in enumerate(dm.items[:12]):
            sample = dm.test_set[i]
            inside = {t for a, b in item.extra["needle_times"] for t in range(int(a), int(b))}  # frame t shows t + 0.5
            assert sample["frame_evidence"].nonzero().flatten().tolist() == sorted(inside)
            times = sample["frame_times"].tolist()
            assert sample["frame_evidence"].tolist() == [any(shown([t], item.extra["needle_times"])) for t in times]
    a, b = long.test_set[0], short.test_set[0]
    batch = long.collator([a, b])  # right-padded frames: the evidence of the short video is False past its frames
    assert batch["frame_evidence"].shape == batch["frame_mask"].shape == (2, 64)
    assert torch.equal(batch["frame_evidence"][0], a["frame_evidence"])
    assert torch.equal(batch["frame_evidence"][1, :16], b["frame_evidence"])
    assert not batch["frame_evidence"][1, 16:].any()
    assert "frame_evidence" not in long.collator([a, {k: v for k, v in b.items() if k != "frame_evidence"}])
    blind = datamodule(tiny, root / "eval/needle_16s", blind=True)
    assert blind.collator([blind.test_set[0]])["frame_evidence"].shape == (1, 0)


# ------------------------------------------------------------------ the picks, alone


def frame_mask_with_gaps(lengths: list[int], T: int) -> torch.Tensor:
    """Rows with ``lengths`` real frames each, spread over T slots with padding between them (not a prefix)."""
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, torch.linspace(0, T - 1, n).round().long()] = True
    return mask


def real_positions(idx: torch.Tensor, valid: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """Per row, the chosen frames as positions among the row's real frames."""
    rank = mask.long().cumsum(1) - 1
    return [torch.gather(rank[b], 0, idx[b][valid[b]]).tolist() for b in range(len(mask))]


def test_oracle_keeps_every_needle_frame_and_fills_to_num_frames():
    mask = frame_mask_with_gaps([64, 64, 40, 5, 64], 80)
    evidence = torch.zeros_like(mask)
    real = [row.nonzero().flatten() for row in mask]
    evidence[0, real[0][[10, 11, 40]]] = True  # 3 needle frames: kept, 5 more spread over the other 61
    evidence[1, real[1][:20]] = True  # 20 needle frames, more than 8: 8 uniformly spaced among them
    evidence[2, real[2][[39]]] = True
    evidence[3, real[3][[2]]] = True  # fewer real frames than 8: all 5
    idx, valid = oracle_frames(mask, evidence, 8)  # row 4: no evidence, uniform
    kept = [set(idx[b][valid[b]].tolist()) for b in range(len(mask))]
    assert valid.sum(1).tolist() == [8, 8, 8, 5, 8]
    for b in range(len(mask)):
        assert set(evidence[b].nonzero().flatten().tolist()) <= kept[b] or b == 1
        assert kept[b] <= set(real[b].tolist())
        assert idx[b][valid[b]].tolist() == sorted(kept[b])  # time order
    assert real_positions(idx, valid, mask)[1] == [1, 3, 6, 8, 11, 13, 16, 18]  # uniform among the 20
    others = [p for p in real_positions(idx, valid, mask)[0] if p not in (10, 11, 40)]
    assert others == [6, 20, 32, 45, 57]  # midpoints of 5 equal segments of the 61 frames without a needle
    u_idx, u_valid = select_uniform_frames(mask, 8)
    assert torch.equal(idx[4], u_idx[4]) and torch.equal(valid[4], u_valid[4])


def test_random_is_repeatable_differs_by_seed_and_hits_at_the_rate_of_chance():
    mask = frame_mask_with_gaps([64, 64, 30, 5], 90)
    first = real_positions(*random_frames(mask, 8, seed=0), mask)
    again = real_positions(*random_frames(mask[[2, 0, 1, 3]], 8, seed=0), mask[[2, 0, 1, 3]])
    alone = torch.ones(1, 30, dtype=torch.bool)  # row 2's video alone, without padding
    assert [again[1], again[2], again[0], again[3]] == first  # another batch order, the same frames
    assert real_positions(*random_frames(alone, 8, seed=0), alone)[0] == first[2]  # no padding, the same frames
    assert first[0] == first[1]  # keyed on the frame count: videos of one length share the draw
    assert first[3] == [0, 1, 2, 3, 4]  # fewer real frames than 8: every one
    for row in first[:3]:
        assert len(row) == 8 and row == sorted(set(row))  # distinct, in time order
    assert real_positions(*random_frames(mask, 8, seed=1), mask)[0] != first[0]
    assert first[0] != real_positions(*select_uniform_frames(mask, 8), mask)[0]
    # one needle frame planted at a random position of each of 1024 videos of 64..127 frames: random keeps it about
    # 8 / T of the time (as uniform does), the oracle always
    lengths = [n for n in range(64, 128) for _ in range(16)]
    mask = frame_mask_with_gaps(lengths, 127)
    g = torch.Generator().manual_seed(0)
    needle = torch.tensor([int(torch.randint(n, (1,), generator=g)) for n in lengths])  # position among real frames
    evidence = (mask.long().cumsum(1) - 1 == needle[:, None]) & mask

    def hit_rate(idx, valid) -> float:
        return torch.gather(evidence, 1, idx).logical_and(valid).any(1).float().mean().item()

    chance = float(np.mean([8 / n for n in lengths]))  # 0.087
    assert hit_rate(*random_frames(mask, 8, seed=0)) == pytest.approx(chance, abs=0.03)
    assert hit_rate(*select_uniform_frames(mask, 8)) == pytest.approx(chance, abs=0.03)
    assert hit_rate(*oracle_frames(mask, evidence, 8)) == 1.0
    draws = {tuple(real_positions(*random_frames(mask[b : b + 1], 8, seed=0), mask[b : b + 1])[0])
             for b in range(0, len(lengths), 16)}
    assert len(draws) == 64  # each length its own draw


def test_uniform_pick_is_the_uniform_reducer_as_it_was():
    """``pick="uniform"`` (the default) is the code path of before the controls: the same frames, bit for bit the
    same tokens; it encodes only its frames and needs no evidence."""
    g = torch.Generator().manual_seed(0)
    frames, cls = torch.randn(3, 11, 16, 8, generator=g), torch.randn(3, 11, 8, generator=g)
    mask = frame_mask_with_gaps([11, 7, 2], 11)
    reducer = Uniform(8, num_frames=4, pool=2, budget=16)
    out = reducer(frames, cls, mask)
    idx, valid = select_uniform_frames(mask, 4)  # the previous forward, line for line
    picked = spatial_pool(gather_frames(frames, idx), 2)  # (3, 4, 4, 8)
    tokens, token_mask = pack(picked.reshape(3, 16, 8), valid[:, :, None].expand(3, 4, 4).reshape(3, 16))
    assert torch.equal(out.tokens, tokens) and torch.equal(out.token_mask, token_mask)
    assert out.info["frame_indices"][0].tolist() == [1, 4, 6, 9]
    assert reducer.frames_to_encode(mask).sum(1).tolist() == [4, 4, 2] and not reducer.needs_evidence
    for pick in ("random", "oracle"):
        other = Uniform(8, num_frames=4, pool=2, budget=16, pick=pick)
        assert torch.equal(other.frames_to_encode(mask), mask)  # every real frame: the pick needs to see them
        assert other.needs_evidence == (pick == "oracle")
    assert Reducer.needs_evidence is False
    with pytest.raises(ValueError, match=r"--model.reducer.init_args.pick uniform \(or random\)"):
        Uniform(8, num_frames=4, pool=2, budget=16, pick="oracle")(frames, cls, mask)
    with pytest.raises(ValueError, match="pick must be one of uniform, random, oracle"):
        Uniform(8, pick="best")
    check_contract(lambda: Uniform(D, num_frames=4, pool=2, budget=16, pick="random"), text_conditioned=False)


# ------------------------------------------------------------------ through the model and the evaluator


def evaluate(tiny, folder, tmp_path, **reducer) -> tuple[dict, list[dict]]:
    m = VideoLLMModule(tiny["llm"], tiny["vision"], functools.partial(Uniform, num_frames=4, budget=64, **reducer))
    m.configure_model()
    name = f"{folder.name}_{reducer.get('pick', 'uniform')}_{reducer.get('seed', 0)}"
    trainer = L.Trainer(accelerator="cpu", logger=L.pytorch.loggers.CSVLogger(tmp_path, name=name, version="v"),
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[BenchmarkEvaluation()])
    trainer.test(m.eval(), datamodule=datamodule(tiny, folder))
    run = tmp_path / name / "v"
    records = [json.loads(line) for line in (run / "vnbench_predictions.jsonl").read_text().splitlines()]
    return json.loads((run / "vnbench_results.json").read_text()), records


def test_every_pick_reports_its_selection_hit_rate(tiny, needles, tmp_path):
    root, _ = needles
    folder = root / "eval/needle_64s"
    results = {pick: evaluate(tiny, folder, tmp_path, pick=pick) for pick in ("uniform", "random", "oracle")}
    for result, records in results.values():
        assert result["selection"]["questions"] == 6 and result["selection"]["frames_kept"] == 4
        assert all(r["selection"]["frames_given"] == 64 for r in records)
    oracle = results["oracle"][0]["selection"]
    assert oracle["hit_rate"] == 1.0 and all(v["hit_rate"] == 1.0 for v in oracle["per_category"].values())
    # uniform is its own control: the same 4 frames as the uniform pick the hit rate is compared with
    assert all(r["selection"]["hit"] == r["selection"]["uniform_hit"] for r in results["uniform"][1])
    random_times = [r["selection"]["kept_times"] for r in results["random"][1]]
    assert random_times != [r["selection"]["kept_times"] for r in results["uniform"][1]]
    again = evaluate(tiny, folder, tmp_path / "again", pick="random")[1]
    assert [r["selection"]["kept_times"] for r in again] == random_times  # two passes, the same frames
    other = evaluate(tiny, folder, tmp_path, pick="random", seed=1)[1]
    assert [r["selection"]["kept_times"] for r in other] != random_times


def test_a_uniform_checkpoint_is_evaluated_with_the_oracle_pick(tiny, synthetic, needles, tmp_path, monkeypatch):
    """The checkpoint check lets a Uniform checkpoint be evaluated with another ``pick`` (``inference_args``); the
    oracle then keeps a needle frame for every question."""
    from lit_bvllm.cli import main

    monkeypatch.chdir(REPO)
    root, _ = needles
    spec = json.dumps({"class_path": "lit_bvllm.reducers.Uniform", "init_args": {"num_frames": 4, "budget": 64}})
    model = ["--config", "experiments/pretrain.yaml", "--config", "experiments/finetune.yaml", *tiny["flags"],
             "--model.reducer", spec, "--model.init_from", "null"]
    quiet = ["--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    main(["fit", *model, *quiet, "--data.train", str(synthetic / "finetune.json"), "--data.num_workers", "0",
          "--trainer.max_steps", "1"])
    ckpt = tmp_path / "finetune" / "tiny" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)["hyper_parameters"]["reducer"]["init_args"]
    assert saved["pick"] == "uniform"  # trained with the uniform pick: the check compares it with the config's
    main(["test", *model, "--config", "experiments/eval/base.yaml", "--config", "experiments/eval/needle_16s.yaml",
          *quiet, "--trainer.logger.init_args.version", "oracle", "--data.num_workers", "0",
          "--data.benchmark.root", str(root / "eval/needle_16s"), "--ckpt_path", str(ckpt),
          "--model.reducer.init_args.pick", "oracle"])
    run = tmp_path / "eval_needle_16s" / "oracle"
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["reducer"]["init_args"]["pick"] == "oracle"
    selection = load(run / "vnbench_results.json")["selection"]
    assert selection["hit_rate"] == 1.0 and selection["frames_kept"] == 4


def test_the_random_pick_follows_the_runs_seed_unless_given_one():
    """needle_controls.yaml evaluates the random control at seeds 0, 1, 2; with a fixed default seed every study seed
    drew the same frames (a standard deviation of 0 over seeds that measured nothing)."""
    import torch

    from lit_bvllm.reducers import Uniform

    torch.manual_seed(1)
    assert Uniform(8, num_frames=2, budget=8, pick="random").seed == 1
    torch.manual_seed(2)
    assert Uniform(8, num_frames=2, budget=8, pick="random").seed == 2
    assert Uniform(8, num_frames=2, budget=8, pick="random", seed=7).seed == 7
