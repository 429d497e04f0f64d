"""The sharding configs of experiments/strategies/ build their Trainer and strategy through the real parser with CUDA
faked (as Lightning's own tests fake it), and the FSDP wrap and checkpointing policies pick the model's layers."""

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
from transformers import InstructBlipQFormerModel

from lit_bvllm.reducers import BVLLM, GroupedTTM, Uniform
from lit_bvllm.training.lit_module import VideoLLMModule
from lit_bvllm.training.strategy import ShardedStrategy
from lit_bvllm.training.wrapping import ModelLayers, clean_name, layer_classes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def two_gpus(monkeypatch):
    """Two CUDA devices as far as Lightning can tell (no kernel runs)."""
    import lightning.fabric.accelerators.cuda as fabric_cuda
    import lightning.pytorch.accelerators.cuda as pytorch_cuda

    monkeypatch.setattr(fabric_cuda, "num_cuda_devices", lambda: 2)
    monkeypatch.setattr(pytorch_cuda, "num_cuda_devices", lambda: 2, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.chdir(REPO)


def build(tiny, synthetic, strategy: str, *more: str):
    from lit_bvllm.cli.commands import lightning_cli

    return lightning_cli(["--config", "experiments/pretrain.yaml", "--config", f"experiments/strategies/{strategy}",
                          *tiny["flags"],
                          "--data.train", str(synthetic / "pretrain.json"), *more], run=False)


def tiny_module(tiny, reducer=None) -> VideoLLMModule:
    reducer = reducer or functools.partial(BVLLM, num_frames=4, num_tokens=2, budget=8, num_queries=4, hidden_size=32,
                                           num_layers=2, num_heads=2, vocab_size=2048)
    m = VideoLLMModule(tiny["llm"], tiny["vision"], reducer)
    m.configure_model()
    return m


def expected_layers(m: VideoLLMModule) -> dict[str, int]:
    """Per class name, the layers the model has, counted from the configs: the LLM's and the tower's hidden
    layers, and the Q-Former layers of each of the reducer's Q-Formers."""
    llm, tower = m.model.llm.config, m.model.vision.tower.config
    counts = {type(m.model.llm.model.layers[0]).__name__: llm.num_hidden_layers,
              type(m.model.vision.tower.encoder.layers[0]).__name__: tower.num_hidden_layers}
    qformers = [q for q in m.model.reducer.modules() if isinstance(q, InstructBlipQFormerModel)]
    if qformers:
        counts["InstructBlipQFormerLayer"] = sum(q.config.num_hidden_layers for q in qformers)
    return counts


# ---------------------------------------------------------------------- the policies on the loaded model


@pytest.mark.parametrize("name", ["BVLLM", "Uniform", "GroupedTTM"])
def test_the_layers_are_read_from_the_loaded_model_and_counted(tiny, name):
    reducers = {"BVLLM": None, "Uniform": functools.partial(Uniform, num_frames=4, budget=64),
                "GroupedTTM": functools.partial(GroupedTTM, tokens_per_frame=4, memory_slots=2, num_tokens=8,
                                                num_layers=3, num_heads=2, max_frames=4)}
    m = tiny_module(tiny, reducers[name])
    expected = expected_layers(m)
    if name == "GroupedTTM":
        expected["ProcessorBlock"] = 3
    assert {c.__name__ for c in layer_classes(m)} == set(expected)
    llm = {"Qwen2DecoderLayer": expected["Qwen2DecoderLayer"]}
    for units, want in (("llm", llm), ("all", expected)):  # fsdp1.yaml's wrap policy, its checkpointing policy
        got = {}
        for module in ModelLayers(units)._run_policy(m, set(), {}):
            got[type(module).__name__] = got.get(type(module).__name__, 0) + 1
        assert got == want and all(v >= 1 for v in want.values())
    with pytest.raises(ValueError, match="units must be 'llm' or 'all'"):
        ModelLayers("tower")


def test_activation_checkpointing_wraps_the_same_layers_and_keeps_the_state_dict_names(tiny):
    from lightning.fabric.strategies.fsdp import _setup_activation_checkpointing

    m = tiny_module(tiny)
    expected, before = expected_layers(m), set(m.state_dict())
    _setup_activation_checkpointing(m, {"auto_wrap_policy": ModelLayers("all")})  # Lightning's call, fsdp1.yaml's
    wrappers = [w for w in m.modules() if isinstance(w, CheckpointWrapper)]
    assert len(wrappers) == sum(expected.values())
    assert set(m.state_dict()) == before  # the wrapper's segment is not in the state dict...
    names = {n for n, _ in m.named_parameters()}
    assert any("_checkpoint_wrapped_module" in n for n in names)  # ...but is in named_parameters
    assert {clean_name(n) for n in names} <= before


def test_the_trainable_only_filter_sees_through_the_checkpoint_wrapper(tiny):
    """LoRA tensors live inside the wrapped LLM layers: the filter must name them as the state dict does."""
    from lit_bvllm.training.wrapping import checkpoint_layers

    m = tiny_module(tiny)
    m.model.add_lora(2, 4, 0.0)
    before = m._trainable_names()
    checkpoint_layers(m.model)
    assert any("_checkpoint_wrapped_module" in n for n, p in m.named_parameters() if p.requires_grad and "lora_" in n)
    assert m._trainable_names() == before and before <= set(m.state_dict())
    assert any("lora_" in n for n in before)


# ---------------------------------------------------------------------- the configs with CUDA faked


def test_fsdp_yaml_builds_the_fsdp2_strategy_for_every_process(two_gpus, tiny, synthetic):
    cli = build(tiny, synthetic, "fsdp.yaml")
    strategy = cli.trainer.strategy
    assert type(strategy) is ShardedStrategy and strategy._save_distributed_checkpoint
    assert strategy._data_parallel_size == "auto" and strategy._tensor_parallel_size == 1
    assert cli.trainer.num_devices == 2 and type(cli.trainer.accelerator).__name__ == "CUDAAccelerator"
    assert cli.trainer.precision == "bf16-mixed" and cli.model.hparams.activation_checkpointing is True
    with pytest.raises(ValueError, match="tensor_parallel_size must be 1"):
        ShardedStrategy(tensor_parallel_size=2)


def test_fsdp1_yaml_builds_fsdp_with_the_model_layer_policies(two_gpus, tiny, synthetic):
    cli = build(tiny, synthetic, "fsdp1.yaml")
    strategy = cli.trainer.strategy
    assert type(strategy) is FSDPStrategy and strategy.kwargs["use_orig_params"] is True
    wrap, checkpointing = (strategy.kwargs["auto_wrap_policy"],
                           strategy._activation_checkpointing_kwargs["auto_wrap_policy"])
    assert isinstance(wrap, ModelLayers) and wrap.units == "llm"
    assert isinstance(checkpointing, ModelLayers) and checkpointing.units == "all"
    assert strategy._state_dict_type == "full" and cli.trainer.num_devices == 2
    assert cli.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_yamls_build_their_stage_and_leave_frozen_tensors_out(two_gpus, tiny, synthetic, stage):
    pytest.importorskip("deepspeed")
    cli = build(tiny, synthetic, f"deepspeed_stage_{stage}.yaml",
                "--trainer.strategy.init_args.offload_optimizer", "true")
    strategy = cli.trainer.strategy
    assert isinstance(strategy, DeepSpeedStrategy) and strategy.config["zero_optimization"]["stage"] == stage
    assert strategy.exclude_frozen_parameters is True
    assert strategy.config["zero_optimization"]["offload_optimizer"]["device"] == "cpu"  # the documented option
    assert cli.trainer.num_devices == 2 and cli.trainer.precision == "bf16-mixed"


def test_a_checkpoint_without_the_frozen_tensors_deepspeed_leaves_out_loads(tiny, tmp_path):
    """DeepSpeed's exclude_frozen_parameters keeps the parameters that require grad. The suite's filter keeps those
    and every reducer/projector tensor; the only frozen reducer tensors of a finetune are the Q-Formers' unused text
    feed-forward, which a checkpoint may lack: such a checkpoint resumes (check_state) and starts a next stage
    (init_from), and one that lacks a trained tensor is still refused."""
    from lit_bvllm.weights import load_visual_weights, unused_names

    m = tiny_module(tiny)
    m.model.add_lora(2, 4, 0.0)
    m.trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, max_steps=0)
    checkpoint = {"state_dict": m.state_dict(), "loops": {}}
    m.on_save_checkpoint(checkpoint)
    deepspeed = {k: v for k, v in checkpoint["state_dict"].items() if k in m._trainable_names()}
    left_out = set(checkpoint["state_dict"]) - set(deepspeed)
    assert left_out and left_out == {f"model.{n}" for n in unused_names(m.model)}  # the text FFN of the last layers
    assert all(".encoder.layer.1.intermediate." in k or ".encoder.layer.1.output." in k for k in left_out)
    m.check_state(deepspeed, "deepspeed")
    torch.save({"state_dict": deepspeed}, tmp_path / "ds.ckpt")
    assert load_visual_weights(tiny_module(tiny).model, tmp_path / "ds.ckpt") == len(
        [k for k in deepspeed if k.startswith(("model.reducer.", "model.projector."))])
    trained = next(k for k in deepspeed if k.startswith("model.reducer."))
    with pytest.raises(ValueError, match="missing"):
        m.check_state({k: v for k, v in deepspeed.items() if k != trained}, "deepspeed")
    torch.save({"state_dict": {k: v for k, v in deepspeed.items() if k != trained}}, tmp_path / "less.ckpt")
    with pytest.raises(ValueError, match="missing"):
        load_visual_weights(tiny_module(tiny).model, tmp_path / "less.ckpt")
