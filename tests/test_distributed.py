"""Data parallel on 2 CPU processes (DDP over gloo), through the console script as users launch it: ``fit`` then
``test``, against one process on the same data and checkpoint."""

import functools
import hashlib
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import ENTRIES, common, fit, launch
from torch.distributed.checkpoint import FileSystemReader


@pytest.fixture(scope="module")
def ddp_fit(tiny, synthetic, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    ranks, _ = fit(tiny, synthetic, tmp, "ddp", ["--trainer.strategy", "ddp"])
    return tmp, ranks


FSDP = ["--config", "experiments/strategies/fsdp.yaml", "--trainer.accelerator", "cpu",
        "--trainer.precision", "32-true"]


@pytest.fixture(scope="module")
def fsdp_fit(tiny, synthetic, tmp_path_factory):
    """The same run sharded with experiments/strategies/fsdp.yaml (FSDP2, activation checkpointing, sharded
    checkpoints), then resumed from its sharded checkpoint for a third epoch."""
    tmp = tmp_path_factory.mktemp("fsdp")
    two = fit(tiny, synthetic, tmp, "fsdp", FSDP)
    ckpt = tmp / "pretrain" / "fsdp" / "checkpoints" / "last.ckpt"
    stored = sorted(k.split(".", 1)[1] for k in FileSystemReader(ckpt).read_metadata().state_dict_metadata
                    if k.startswith("state_dict."))
    three = fit(tiny, synthetic, tmp, "fsdp", FSDP, epochs=3, ckpt=ckpt)
    return tmp, two, stored, three


@pytest.fixture(scope="module")
def fsdp_resumes_from_files(ddp_fit, fsdp_fit, tiny, synthetic):
    """Sharded runs resumed from single files: the consolidated FSDP checkpoint (optimizer keyed by name) and the
    DDP one (optimizer keyed by position)."""
    tmp = fsdp_fit[0]
    ckpt = tmp / "pretrain" / "fsdp" / "checkpoints" / "last.ckpt"
    out = launch(["consolidate", "--ckpt_path", str(ckpt)], tmp)
    consolidated = Path(str(ckpt) + ".consolidated")
    four = fit(tiny, synthetic, tmp, "from_file", FSDP, epochs=4, ckpt=consolidated)
    ddp_ckpt = ddp_fit[0] / "pretrain" / "ddp" / "checkpoints" / "last.ckpt"
    from_ddp = fit(tiny, synthetic, tmp, "from_ddp", FSDP, epochs=3, ckpt=ddp_ckpt)
    return out, consolidated, four, from_ddp


def test_each_sample_is_seen_once_per_epoch_across_the_two_processes(ddp_fit):
    _, ranks = ddp_fit
    assert [r["world"] for r in ranks] == [2, 2]
    for epoch in ("0", "1"):
        seen = [tuple(s) for r in ranks for s in r["samples"][epoch]]
        assert len(seen) == ENTRIES and sorted(i for _, i in seen) == list(range(ENTRIES))  # each once
        assert not set(map(tuple, ranks[0]["samples"][epoch])) & set(map(tuple, ranks[1]["samples"][epoch]))
    assert ranks[0]["samples"]["0"] != ranks[0]["samples"]["1"]  # reshuffled per epoch


def test_both_processes_end_with_the_same_weights_and_the_checkpoint_holds_them(ddp_fit):
    tmp, ranks = ddp_fit
    assert ranks[0]["tensors"] == ranks[1]["tensors"] and len(ranks[0]["tensors"]) > 0
    ckpt = torch.load(tmp / "pretrain" / "ddp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 * 2  # 2 epochs x 2 batches (3 samples per process, batch 2)
    state = ckpt["state_dict"]
    assert sorted(state) == sorted(ranks[0]["tensors"])  # the trainable-only filter under DDP: what rank 0 held
    assert all(hashlib.sha256(state[k].float().numpy().tobytes()).hexdigest() == v
               for k, v in ranks[0]["tensors"].items())
    assert not any(k.startswith(("model.llm.", "model.vision.")) for k in state)  # frozen backbones stay out


def test_two_process_test_scores_what_one_process_scores(ddp_fit, tiny, synthetic):
    tmp, _ = ddp_fit
    ckpt = tmp / "pretrain" / "ddp" / "checkpoints" / "last.ckpt"
    results = {}
    for devices in ("1", "2"):
        launch(["test", *common(tiny), "--config", "experiments/eval/base.yaml", "--config",
                "experiments/eval/vnbench.yaml", "--data.benchmark.root", str(synthetic / "eval" / "vnbench"),
                "--data.limit", "8", "--data.mode", "likelihood", "--ckpt_path", str(ckpt),
                "--trainer.devices", devices, "--trainer.strategy", "ddp" if devices == "2" else "auto",
                "--trainer.logger.init_args.save_dir", str(tmp), "--trainer.logger.init_args.version", f"d{devices}"],
               tmp)
        run = tmp / "eval_vnbench" / f"d{devices}"
        result = json.loads((run / "vnbench_results.json").read_text())
        records = {(r := json.loads(line))["id"]: r
                   for line in (run / "vnbench_predictions.jsonl").read_text().splitlines()}
        results[devices] = result, records
    (one, one_records), (two, two_records) = results["1"], results["2"]
    assert (two["evaluated"], two["duplicates"], two["missing"]) == (one["evaluated"], 0, 0) == (8, 0, 0)
    assert sorted(two_records) == sorted(one_records)
    assert {i: r["pred"] for i, r in two_records.items()} == {i: r["pred"] for i, r in one_records.items()}
    for i, r in two_records.items():  # option scores: batches differ in padding, numbers agree to float error
        assert r["scores"] == pytest.approx(one_records[i]["scores"], abs=1e-4)
    for key in ("accuracy", "circular_accuracy", "circular_per_category", "selection", "visual_tokens"):
        assert key in one and flat(two[key]) == pytest.approx(flat(one[key])), key


def flat(value, prefix: str = "") -> dict:
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for name, x in value.items() for k, v in flat(x, f"{prefix}/{name}").items()}


# ---------------------------------------------------------------------- FSDP2 (experiments/strategies/fsdp.yaml)


def test_fsdp_checkpoints_are_sharded_and_hold_what_ddp_checkpoints_hold(ddp_fit, fsdp_fit):
    ddp_tmp, _ = ddp_fit
    tmp, _, stored, _ = fsdp_fit
    ddp = torch.load(ddp_tmp / "pretrain" / "ddp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert stored == sorted(ddp["state_dict"])  # the trainable-only filter under the sharded state-dict format
    files = sorted(p.name for p in (tmp / "pretrain" / "fsdp" / "checkpoints" / "last.ckpt").iterdir())
    assert files == [".metadata", "__0_0.distcp", "__1_0.distcp", "meta.pt"]  # one shard file per rank
    assert not (tmp / "pretrain" / "fsdp" / "checkpoints" / "last.ckpt.tmp").exists()


def test_fsdp_trains_the_same_weights_as_ddp(ddp_fit, fsdp_fit):
    """Same data, seed and steps: sharding changes where the tensors live, not what training computes."""
    ddp_tmp, ddp_ranks = ddp_fit
    ranks, tensors = fsdp_fit[1]
    assert ranks[0]["tensors"] == ranks[1]["tensors"]  # both ranks gather the same whole tensors
    ddp_tensors = ddp_tmp / "ranks_ddp_2" / "tensors"
    names = sorted(ranks[0]["tensors"])
    assert names == sorted(ddp_ranks[0]["tensors"])
    for name in names:
        a, b = torch.load(tensors / f"{name}.pt"), torch.load(ddp_tensors / f"{name}.pt")
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), name
    assert [r["samples"] for r in ranks] == [r["samples"] for r in ddp_ranks]


def test_fsdp_resumes_from_its_sharded_checkpoint_and_consolidates_for_one_process(fsdp_fit, fsdp_resumes_from_files,
                                                                                    tiny, synthetic):
    tmp, (two, _), stored, (three, tensors) = fsdp_fit
    assert [r["start"] for r in three] == [two[0]["tensors"]] * 2  # it starts from what the first run ended with
    assert three[0]["tensors"] != two[0]["tensors"] and three[0]["tensors"] == three[1]["tensors"]
    assert list(three[0]["samples"]) == ["2"]  # the resumed run trained epoch 2 only
    out, consolidated, _, _ = fsdp_resumes_from_files
    whole = torch.load(consolidated, map_location="cpu", weights_only=True)
    assert whole["global_step"] == 3 * 2 and sorted(whole["state_dict"]) == stored
    assert all(torch.equal(whole["state_dict"][k], torch.load(tensors / f"{k}.pt")) for k in stored)
    assert len(whole["optimizer_states"]) == 1 and "consolidated" in out.stdout
    launch(["test", *common(tiny), "--config", "experiments/eval/base.yaml", "--config",
            "experiments/eval/vnbench.yaml", "--data.benchmark.root", str(synthetic / "eval" / "vnbench"),
            "--data.limit", "4", "--data.mode", "likelihood", "--ckpt_path", str(consolidated),
            "--trainer.devices", "1", "--trainer.logger.init_args.save_dir", str(tmp),
            "--trainer.logger.init_args.version", "consolidated"], tmp)
    result = json.loads((tmp / "eval_vnbench" / "consolidated" / "vnbench_results.json").read_text())
    assert (result["evaluated"], result["errors"]) == (4, 0)


def test_a_sharded_run_resumes_from_single_files_with_every_tensor(fsdp_fit, fsdp_resumes_from_files, ddp_fit):
    """The stock loader matched names through the activation-checkpoint wrapper and, loading non-strictly, left every
    wrapped layer's tensors as initialised: resumed runs must start from the file's tensors, all of them."""
    _, _, _, (three, _) = fsdp_fit
    _, _, (four, _), (from_ddp, _) = fsdp_resumes_from_files
    assert [r["start"] for r in four] == [three[0]["tensors"]] * 2  # the consolidated file: optimizer by name
    assert list(four[0]["samples"]) == ["3"]
    assert [r["start"] for r in from_ddp] == [ddp_fit[1][0]["tensors"]] * 2  # DDP's file: optimizer by position
    assert list(from_ddp[0]["samples"]) == ["2"]


def test_evaluation_under_a_sharding_strategy_is_refused_with_the_way_out(tiny):
    from types import SimpleNamespace

    from lit_bvllm.reducers import Uniform
    from lit_bvllm.training.lit_module import VideoLLMModule
    from lit_bvllm.training.strategy import ShardedStrategy

    m = VideoLLMModule(tiny["llm"], tiny["vision"], functools.partial(Uniform, num_frames=4, budget=64))
    m._trainer = SimpleNamespace(strategy=ShardedStrategy())
    for command in ("test", "predict"):
        with pytest.raises(RuntimeError, match="lit_bvllm consolidate --ckpt_path DIR"):
            m._refuse_sharded_evaluation(command)
    m._trainer = SimpleNamespace(strategy=L.pytorch.strategies.DDPStrategy())
    m._refuse_sharded_evaluation("test")  # DDP evaluates
