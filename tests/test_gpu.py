"""Every strategy config on real GPUs (marker ``gpu``; skipped without CUDA): the tiny model pretrains in bf16 for
an epoch, saves, and resumes from that checkpoint with the tensors it saved, through the console script as users
launch it. On one GPU each strategy runs on 1 process (still sharded through its own code path); on two or more,
on 2. The CPU versions of these checks (DDP and FSDP2 on 2 processes) run in every CI run:
``tests/test_distributed.py``."""

import pytest
import torch
from helpers import ENTRIES, fit

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

STRATEGIES = {
    "ddp": ["--config", "experiments/strategies/ddp.yaml"],
    "fsdp": ["--config", "experiments/strategies/fsdp.yaml"],
    "fsdp1": ["--config", "experiments/strategies/fsdp1.yaml"],
    "deepspeed_stage_2": ["--config", "experiments/strategies/deepspeed_stage_2.yaml"],
    "deepspeed_stage_3": ["--config", "experiments/strategies/deepspeed_stage_3.yaml"],
}


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_strategy_trains_in_bf16_and_resumes_from_its_checkpoint(name, tiny, synthetic, tmp_path):
    devices = min(2, torch.cuda.device_count())
    strategy = [*STRATEGIES[name], "--trainer.accelerator", "gpu", "--trainer.devices", str(devices),
                "--trainer.precision", "bf16-mixed"]
    one, _ = fit(tiny, synthetic, tmp_path, name, strategy, epochs=1, devices=devices)
    ckpt = tmp_path / "pretrain" / name / "checkpoints" / "last.ckpt"
    assert ckpt.exists(), f"{name}: no checkpoint at {ckpt}"
    two, _ = fit(tiny, synthetic, tmp_path, name, strategy, epochs=2, ckpt=ckpt, devices=devices)
    seen = sorted(i for r in two for _, i in r["samples"]["1"])
    assert seen == list(range(ENTRIES))  # the resumed epoch: each sample once across the processes
    if name != "deepspeed_stage_3":  # ZeRO-3 partitions the parameters: a rank's state_dict is not the whole tensor
        assert two[0]["start"] == one[0]["tensors"], f"{name}: the resumed run did not start from the checkpoint"
        assert two[0]["tensors"] != one[0]["tensors"]  # and it trained on
        assert all(r["tensors"] == two[0]["tensors"] for r in two)  # every rank ends with the same tensors
