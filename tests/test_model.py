"""VideoLLM / VideoLLMModule end to end on the tiny backbones: fit with every reducer, stage hand-over, LoRA
placement, resume, export/reload, generation, atomic checkpoints."""

import functools
import json
import subprocess
import sys

import lightning as L
import pytest
import torch
import yaml
from helpers import REDUCERS, cli_args, data, needle_data, reducer_classes, small_module
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_bvllm.cli.commands import lightning_cli
from lit_bvllm.reducers import BVLLM
from lit_bvllm.training.checkpointing import AtomicCheckpointIO
from lit_bvllm.training.lit_module import VideoLLMModule


@pytest.fixture(autouse=True)
def repo_root(monkeypatch):
    import pathlib

    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])


def test_a_config_without_a_checkpoint_callback_gets_the_suites(tiny, synthetic, tmp_path):
    cli = lightning_cli(cli_args(tiny, synthetic, tmp_path)[1:] + ["--trainer.callbacks", "[]"], run=False)
    ckpts = [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert len(ckpts) == 1 and ckpts[0]._every_n_train_steps == 500 and ckpts[0].save_last
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_a_resume_in_the_same_directory_keeps_the_first_runs_config(tiny, synthetic, tmp_path):
    lightning_cli(cli_args(tiny, synthetic, tmp_path, steps=1))
    run = tmp_path / "pretrain" / "tiny"
    with pytest.warns(UserWarning, match="kept as config.1.yaml"):
        lightning_cli(cli_args(tiny, synthetic, tmp_path, steps=2,
                               extra=["--ckpt_path", str(run / "checkpoints" / "last.ckpt")]))
    assert "max_steps: 1" in (run / "config.1.yaml").read_text()
    assert "max_steps: 2" in (run / "config.yaml").read_text()


def test_a_linked_data_setting_cannot_be_set_apart(tiny, synthetic, tmp_path):
    """--data.tokenizer used to be accepted and silently replaced by --model.llm."""
    for flag in ("--data.tokenizer", "--data.vision_tower", "--data.video_token"):
        with pytest.raises(ValueError, match=f"{flag} is set from --model"):
            lightning_cli(cli_args(tiny, synthetic, tmp_path)[1:] + [flag, "/elsewhere"], run=False)


def test_the_reserved_visual_tokens_follow_the_reducers_budget(tiny, synthetic, tmp_path):
    """--data.visual_tokens follows the reducer's budget θ, derived from its init args as the config is parsed (both
    once written 768 by hand, in two files); one set below θ is refused before anything loads, naming both flags."""
    base = cli_args(tiny, synthetic, tmp_path)[1:]  # BVLLM at θ = 16
    cli = lightning_cli(base, run=False)
    assert cli.datamodule.hparams.visual_tokens == 16 == cli.config.data.init_args.visual_tokens  # config.yaml has it
    assert cli.model.model is None
    cli = lightning_cli(base + ["--model.reducer.init_args.budget", "12"], run=False)
    assert cli.datamodule.hparams.visual_tokens == 12
    learner = cli_args(tiny, synthetic, tmp_path, reducer="TokenLearner")[1:]  # θ is its num_tokens, 8
    assert lightning_cli(learner, run=False).datamodule.hparams.visual_tokens == 8
    assert lightning_cli(base + ["--data.visual_tokens", "128"], run=False).datamodule.hparams.visual_tokens == 128
    with pytest.raises(ValueError, match=r"--data\.visual_tokens 8 reserves .* θ = 16 \(BVLLM's init args under "
                                         r"--model\.reducer\.init_args\)"):
        lightning_cli(base + ["--data.visual_tokens", "8"], run=False)


def test_the_placeholder_is_one_setting(tiny, synthetic, tmp_path):
    """--model.video_token reaches the data module (it used to keep its own "<video>", and the model spliced at a
    token no sample held: every visual token dropped, no error)."""
    cli = lightning_cli(cli_args(tiny, synthetic, tmp_path)[1:] + ["--model.video_token", "<vid>"], run=False)
    cli.model.configure_model()
    m, dm = cli.model.model, cli.datamodule
    assert dm.hparams.video_token == "<vid>" and m.tokenizer.convert_ids_to_tokens(m.placeholder_id) == "<vid>"
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert ((b["input_ids"] == m.placeholder_id).sum(1) == 1).all()
    _, mask, _, info = m.embed(b)
    assert torch.equal(mask.sum(1), b["attention_mask"].sum(1) - 1 + info["num_tokens"])  # every visual token placed
    assert (info["num_tokens"] > 0).all()


def test_a_runs_saved_config_replays(tiny, synthetic, tmp_path):
    """The run's config.yaml is a complete, serialisable config: `lit_bvllm fit --config runs/<run>/config.yaml`
    runs again, and checkpoints are still written atomically (before, the default plugin instance was written as
    "Unable to serialize instance <AtomicCheckpointIO ...>" and the replay failed to parse)."""
    first = lightning_cli(cli_args(tiny, synthetic, tmp_path / "a", steps=1))
    assert isinstance(first.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    saved = tmp_path / "a" / "pretrain" / "tiny" / "config.yaml"
    assert "Unable to serialize" not in saved.read_text()
    assert "every_n_train_steps: 500" in saved.read_text()  # the checkpoint interval is part of the config
    assert sum(isinstance(c, ModelCheckpoint) for c in first.trainer.callbacks) == 1
    from lit_bvllm.cli.commands import SUITE_CALLBACKS

    config = yaml.safe_load(saved.read_text())
    listed = [c["class_path"] for c in config["trainer"]["callbacks"]]
    assert set(SUITE_CALLBACKS) <= set(listed)  # every callback of the run is in its config (7 were added in code)
    again = lightning_cli(["fit", "--config", str(saved), "--trainer.logger.init_args.save_dir", str(tmp_path / "b")])
    assert again.trainer.global_step == 1
    kinds = [type(c).__name__ for c in again.trainer.callbacks]
    assert len(kinds) == len(set(kinds)) and len(listed) == len(set(listed))  # the replay adds none twice
    assert isinstance(again.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert (tmp_path / "b" / "pretrain" / "tiny" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("reducer", [c.__name__ for c in reducer_classes()])  # every reducer of the package
def test_two_step_fit_with_each_reducer(reducer, tiny, synthetic, tmp_path):
    cli = lightning_cli(cli_args(tiny, synthetic, tmp_path, reducer))
    assert cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    run = tmp_path / "pretrain" / "tiny"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    snapshot = (run / "config.yaml").read_text()
    assert f"lit_bvllm.reducers.{reducer}" in snapshot and "seed_everything: 0" in snapshot
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["derived/params_trainable"] > 0 and summary["derived/params_frozen"] > 0
    assert summary["derived/visual_tokens_before"] > 0
    assert 0 < summary["derived/visual_tokens_after"] <= cli.model.model.reducer.budget


def test_pretrain_to_finetune_carries_every_visual_tensor(tiny, synthetic, tmp_path):
    lightning_cli(cli_args(tiny, synthetic, tmp_path))  # the pretrain run that writes the checkpoint
    ckpt = tmp_path / "pretrain" / "tiny" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=False)["state_dict"]
    fin = lightning_cli(cli_args(tiny, synthetic, tmp_path, steps=1, extra=[
        "--config", "experiments/finetune.yaml", "--model.init_from", str(ckpt), "--model.lora_r", "8",
        "--model.lora_alpha", "16", "--trainer.max_steps", "0", "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--data.train", str(synthetic / "finetune.json")]))
    visual = {k: v for k, v in fin.model.state_dict().items() if k.startswith(("model.reducer.", "model.projector."))}
    assert visual and set(visual) == {k for k in saved if k.startswith(("model.reducer.", "model.projector."))}
    for k, v in visual.items():
        assert torch.equal(v, saved[k]), k
    # a different reducer configuration is refused, not silently re-initialised
    other = lightning_cli(cli_args(tiny, synthetic, tmp_path, steps=0, extra=[
        "--model.init_from", str(ckpt), "--model.reducer.num_tokens", "2", "--model.reducer.num_frames", "2",
        "--model.reducer.num_queries", "2"])[1:],
        run=False)
    with pytest.raises(ValueError, match="does not match"):
        other.model.configure_model()
    # evaluation does not read init_from: the weights of a test run come from --ckpt_path or --model.weights
    other.model.trainer = other.trainer
    other.trainer.state.fn = "test"
    other.model.configure_model()
    assert other.model.model is not None


def small_model(tiny, lora_r=0, reducer=BVLLM, **kw):
    """The plain VideoLLM of :func:`small_module`."""
    module = small_module(tiny, lora_r, reducer, **kw)
    module.configure_model()
    return module.model


def test_the_module_builds_its_model_in_configure_model(tiny):
    module = small_module(tiny)
    assert module.model is None  # nothing heavy in __init__: FSDP / DeepSpeed build the model in configure_model
    module.configure_model()
    model = module.model
    module.configure_model()  # called again (fit, then test): the same model
    assert module.model is model and isinstance(model.llm, torch.nn.Module)
    assert module.hparams.reducer["class_path"] == "lit_bvllm.reducers.bvllm.BVLLM"


def test_lora_sits_on_the_llm_linear_layers_only(tiny):
    m = small_model(tiny, lora_r=4)
    lora = [n for n, _ in m.named_modules() if n.endswith("lora_A")]
    assert lora and all(n.startswith("llm.") for n in lora)
    layers = m.llm.base_model.model.config.num_hidden_layers
    assert len(lora) == layers * 7  # q, k, v, o, gate, up, down in every Qwen2 layer; never lm_head
    assert not any("lm_head" in n for n in lora)
    trainable_llm = [n for n, p in m.llm.named_parameters() if p.requires_grad]
    assert trainable_llm and all("lora_" in n for n in trainable_llm)
    assert not any(p.requires_grad for p in m.vision.parameters())


class SeenIds(L.Callback):
    def __init__(self):
        self.ids = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ids.append([m["id"] for m in batch["meta"]])


def trainer(root, steps, seen, ckpt_every=2):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lit_bvllm.training.callbacks import RNGState

    return L.Trainer(default_root_dir=root, max_steps=steps, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, use_distributed_sampler=False, plugins=[AtomicCheckpointIO()],
                     callbacks=[seen, RNGState(), ModelCheckpoint(dirpath=root, save_last=True,
                                                                  every_n_train_steps=ckpt_every)])


@pytest.mark.parametrize("reducer", ["Uniform", "BVLLM"])
def test_resume_continues_step_optimizer_schedule_and_data_position(tiny, synthetic, tmp_path, reducer):
    from lit_bvllm import reducers

    small = functools.partial(small_module, tiny, reducer=getattr(reducers, reducer), lr=1e-2)
    straight = SeenIds()
    m1 = small()
    trainer(tmp_path / "a", 6, straight).fit(m1, datamodule=data(tiny, synthetic))
    first = SeenIds()
    crashing = trainer(tmp_path / "b", 6, first)
    crashing.callbacks.append(Crash(at_step=3))  # killed after step 3; the last checkpoint is from step 2
    with pytest.raises(RuntimeError, match="killed"):
        crashing.fit(small(), datamodule=data(tiny, synthetic))
    assert torch.load(tmp_path / "b" / "last.ckpt", weights_only=False)["global_step"] == 2
    resumed_seen = SeenIds()
    m2 = small()
    t = trainer(tmp_path / "b", 6, resumed_seen)
    t.fit(m2, datamodule=data(tiny, synthetic), ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert t.global_step == 6
    assert first.ids == straight.ids[:3], (first.ids, straight.ids)
    assert resumed_seen.ids == straight.ids[2:6], (resumed_seen.ids, straight.ids)  # from the checkpoint on
    for (k, a), (_, b) in zip(m1.model.projector.state_dict().items(), m2.model.projector.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)  # same optimizer, schedule and RNG state -> same weights


def test_resuming_twice_keeps_the_data_position(tiny, synthetic, tmp_path):
    from lit_bvllm import reducers

    small = functools.partial(small_module, tiny, reducer=reducers.Uniform, lr=1e-2)
    straight = SeenIds()
    trainer(tmp_path / "a", 8, straight).fit(small(), datamodule=data(tiny, synthetic))
    runs = []
    for crash_at in (3, 5, None):  # killed at 3 (checkpoint 2), resumed and killed at 5 (checkpoint 4), resumed
        seen = SeenIds()
        t = trainer(tmp_path / "b", 8, seen)
        if crash_at is not None:
            t.callbacks.append(Crash(at_step=crash_at))
        last = tmp_path / "b" / "last.ckpt"
        try:
            t.fit(small(), datamodule=data(tiny, synthetic), ckpt_path=str(last) if last.exists() else None)
        except RuntimeError:
            pass
        runs.append(seen.ids)
    assert runs == [straight.ids[:3], straight.ids[2:5], straight.ids[4:8]]


def test_extending_a_finished_run_continues_its_data(tiny, synthetic, tmp_path):
    """A run that ends at max_steps in the middle of an epoch, extended with more steps from its last.ckpt, sees what
    one longer run sees (the end-of-run checkpoint used to record the next epoch, and the rest of this one was never
    seen)."""
    from lit_bvllm import reducers

    small = functools.partial(small_module, tiny, reducer=reducers.Uniform, lr=1e-2)
    dm = data(tiny, synthetic)
    per_epoch = len(dm.train_dataloader())
    assert per_epoch > 3  # the short run stops mid-epoch
    straight = SeenIds()
    trainer(tmp_path / "a", per_epoch + 3, straight, ckpt_every=1000).fit(small(), datamodule=data(tiny, synthetic))
    first, then = SeenIds(), SeenIds()
    trainer(tmp_path / "b", 3, first, ckpt_every=1000).fit(small(), datamodule=data(tiny, synthetic))
    assert torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)["global_step"] == 3
    t = trainer(tmp_path / "b", per_epoch + 3, then, ckpt_every=1000)
    t.fit(small(), datamodule=data(tiny, synthetic), ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert t.global_step == per_epoch + 3
    assert first.ids + then.ids == straight.ids


class Crash(L.Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("killed")


def test_atomic_checkpoint_survives_a_crash_while_writing(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def crash(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no half-written temporary left beside it


NO_LIGHTNING = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_fabric"):
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, Block())
import torch
from lit_bvllm.export import load_exported
io = torch.load("{io}", weights_only=True)
got = load_exported("{export}")(io["batch"], with_labels=False)[0].logits
torch.testing.assert_close(got, io["want"], atol=1e-4, rtol=1e-4)
assert not [m for m in sys.modules if m.startswith("lightning")]
print("same logits, no lightning")
"""


@pytest.mark.parametrize("merge", [False, True])
def test_export_reloads_without_lightning_with_identical_logits(tiny, synthetic, tmp_path, merge):
    from lit_bvllm.export import export, load_exported

    m = small_model(tiny, lora_r=4)
    with torch.no_grad():  # make LoRA non-trivial
        for n, p in m.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    m.eval()
    batch = next(iter(data(tiny, synthetic).train_dataloader()))
    with torch.no_grad():
        want = m(batch, with_labels=False)[0].logits
    export(m, tmp_path / "export", merge_lora=merge)
    cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert (cfg["adapter"] is None) == merge
    reloaded = load_exported(tmp_path / "export")
    assert type(reloaded) is type(m)  # export loads the same module
    with torch.no_grad():
        got = reloaded(batch, with_labels=False)[0].logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    if not merge:  # once is enough: a fresh interpreter where importing Lightning fails reloads and runs the export
        torch.save({"batch": {k: v for k, v in batch.items() if torch.is_tensor(v)}, "want": want}, tmp_path / "io.pt")
        code = NO_LIGHTNING.format(export=tmp_path / "export", io=tmp_path / "io.pt")
        out = subprocess.run([sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.strip().endswith("same logits, no lightning"), out.stderr[-2000:]
    # the export's model.yaml evaluates through the CLI: same logits, results written
    cli = lightning_cli(["test", "--config", "experiments/eval/base.yaml", "--config", "experiments/eval/vnbench.yaml",
                         "--config", str(tmp_path / "export" / "model.yaml"),
                         "--data.benchmark.root", str(synthetic / "eval" / "vnbench"), "--data.limit", "2",
                         "--data.num_workers", "0",
                         "--trainer.logger.init_args.save_dir", str(tmp_path),
                         "--trainer.enable_progress_bar", "false"])
    with torch.no_grad():
        got = cli.model.model.eval()(batch, with_labels=False)[0].logits
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # --data.limit 2 keeps whole circular groups: the 4 tries of the first question
    # and the run folder is named after the export evaluated (its --model.weights folder)
    assert json.loads((tmp_path / "eval_vnbench" / "export" / "vnbench_results.json").read_text())["evaluated"] == 4


def test_generation_is_greedy_batched_and_deterministic(tiny, synthetic):
    m = small_model(tiny).eval()
    d = data(tiny, synthetic)
    d.collator.padding_side = "left"
    samples = [d.train_set[i] for i in range(3)]
    batch = d.collator(samples)
    a, b = m.generate(batch, 6), m.generate(batch, 6)
    assert a == b and len(a) == 3
    single = [m.generate(d.collator([s]), 6)[0] for s in samples]
    assert single == a  # left padding: batching does not change the answers


def test_an_export_names_its_qformer_folder_by_an_absolute_path(tiny, tmp_path, monkeypatch):
    """The reducer's Q-Former folder (read to build the Q-Former from its config) is written as an absolute path, as
    the tower's and the LLM's are, so an export loads from any working directory."""
    import shutil

    from lit_bvllm.export import export, load_exported

    shutil.copytree(tiny["qformer"], tmp_path / "qf")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    red = functools.partial(BVLLM, **{**REDUCERS["BVLLM"], "qformer": "qf"})
    module = VideoLLMModule(tiny["llm"], tiny["vision"], red)
    module.configure_model()
    export(module.model, tmp_path / "export")
    cfg = json.loads((tmp_path / "export" / "config.json").read_text())
    assert cfg["reducer"]["init_args"]["qformer"] == str((tmp_path / "qf").resolve())
    monkeypatch.chdir(tmp_path / "export")  # "qf" means nothing here
    assert isinstance(load_exported(tmp_path / "export").reducer, BVLLM)


@pytest.mark.parametrize("eval_noise", [False, True])
def test_two_pass_evaluation_equals_one_pass_and_encodes_only_the_picked_patches(tiny, synthetic, eval_noise):
    """B-VLLM's hard selection reads patches of its picked frames only, but one pass kept every frame's patches
    (7.9 of an hour's 14 GiB with CLIP-L/336). At evaluation the model now encodes [CLS] for every frame, then the
    patches of the picked frames: the same visual tokens, and far fewer frames' patches held."""
    import functools

    from lit_bvllm.reducers import BVLLM
    from lit_bvllm.training.lit_module import VideoLLMModule

    torch.manual_seed(0)
    m = VideoLLMModule(tiny["llm"], tiny["vision"],
                       functools.partial(BVLLM, num_frames=4, num_tokens=4, budget=16, num_queries=4, hidden_size=32,
                                         num_layers=1, num_heads=2, vocab_size=2048, eval_noise=eval_noise))
    m.configure_model()
    model = m.model.eval()
    dm = needle_data(tiny, synthetic, batch_size=3, mode="likelihood", limit=12)
    batch = next(iter(dm.test_dataloader()))
    batch["frame_mask"][1, 5:] = False  # a shorter video beside longer ones
    held = []
    real = model.vision.forward
    model.vision.forward = lambda *a, **k: held.append(real(*a, **k)) or held[-1]
    with torch.no_grad():
        model.two_pass = False
        want, want_mask, want_info = model.visual_tokens(batch)
        assert len(held) == 1 and held[0]["frames"].shape[2] > 0  # one pass, every frame's patches
        held.clear()
        model.two_pass = True
        got, got_mask, got_info = model.visual_tokens(batch)
    model.vision.forward = real
    assert torch.equal(got_mask, want_mask) and torch.equal(got_info["kept_frames"], want_info["kept_frames"])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    first, second = held
    assert first["frames"].shape[2] == 0  # [CLS] only
    picked = int(second["frame_mask"].sum())
    assert 0 < picked <= 4 * 3 < int(first["frame_mask"].sum())  # at most L* frames a sample get their patches
    assert got_info["patches_encoded"].tolist() == second["frame_mask"].sum(1).tolist()
    assert torch.equal(want_info["patches_encoded"], want_info["frames_encoded"])  # one pass: every frame's
    m.model.train()
    assert not m.model.reducer.selects_from_cls  # training reads every frame (straight-through selection)
