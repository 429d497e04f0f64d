"""Checkpoints: no code runs from one, a foreign or corrupt file is named with its flag, and a checkpoint that does
not hold what the configured model needs is refused instead of leaving tensors randomly initialised."""

import os
import pathlib

import pytest
import torch

from lit_bvllm.cli import main
from lit_bvllm.weights import read_checkpoint, visual_state


@pytest.fixture(autouse=True)
def repo_root(monkeypatch):
    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])


class Payload:
    """Unpickling this runs a shell command: what a hostile checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def hostile(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {"model.projector.proj.weight": Payload(marker)}, "hyper_parameters": {}}, path)
    return path, marker


def config(tiny, synthetic):
    return ["--config", "experiments/pretrain.yaml", "--config", "experiments/finetune.yaml", *tiny["flags"],
            "--data.train", str(synthetic / "finetune.json"), "--data.num_workers", "0"]


def test_a_hostile_checkpoint_runs_nothing(tmp_path):
    path, marker = hostile(tmp_path)
    with pytest.raises(ValueError, match=r"--model.init_from '.*hostile.ckpt'.*weights_only"):
        visual_state(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load would have run it
    assert marker.exists()


def test_export_and_resume_refuse_a_hostile_checkpoint(tiny, synthetic, tmp_path):
    path, marker = hostile(tmp_path)
    for command in (["export", "--out", str(tmp_path / "export")], ["fit"]):
        with pytest.raises(ValueError, match=r"--ckpt_path '.*hostile.ckpt'"):
            main([command[0], *config(tiny, synthetic), "--ckpt_path", str(path), *command[1:]])
    assert not marker.exists() and not (tmp_path / "export").exists()


def test_a_corrupt_or_missing_checkpoint_is_named_with_its_flag(tmp_path):
    bad = tmp_path / "half.ckpt"
    bad.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    with pytest.raises(ValueError, match=r"--model.weights '.*half.ckpt' is not a checkpoint"):
        read_checkpoint(bad, "--model.weights")
    with pytest.raises(FileNotFoundError, match=r"--ckpt_path"):
        read_checkpoint(tmp_path / "nope.ckpt", "--ckpt_path")


def test_export_refuses_a_checkpoint_without_the_models_tensors(tiny, synthetic, tmp_path):
    """A checkpoint that lacks the configured reducer's tensors fails the export, naming them (it used to write a
    randomly initialised reducer and print success)."""
    empty = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {"model.projector.proj.weight": torch.zeros(1)}}, empty)
    with pytest.raises(ValueError, match=r"empty.ckpt' does not hold what this model needs: missing \['model\."):
        main(["export", *config(tiny, synthetic), "--ckpt_path", str(empty), "--out", str(tmp_path / "export")])
    assert not (tmp_path / "export").exists()


def test_a_checkpoint_of_another_model_is_refused_with_the_differences(tiny, synthetic, tmp_path):
    """--ckpt_path used to replace the config's model settings silently (a Uniform checkpoint ran as Uniform under a
    B-VLLM config); now a structural difference stops the run and lists it."""
    other = tmp_path / "uniform.ckpt"
    spec = {"class_path": "lit_bvllm.reducers.uniform.Uniform", "init_args": {"num_frames": 8, "pool": 1, "budget": 96}}
    torch.save({"state_dict": {}, "hyper_parameters": {"reducer": spec, "lora_r": 128}}, other)
    with pytest.raises(ValueError, match=r"reducer: checkpoint .*Uniform.* config .*BVLLM"):
        main(["fit", *config(tiny, synthetic), "--ckpt_path", str(other)])


def test_a_missing_lora_adapter_never_asks_the_hub(tiny, monkeypatch):
    """peft looks a path it cannot find up on the model hub; the suite stops at the missing folder instead."""
    import functools

    from lit_bvllm.model import VideoLLM
    from lit_bvllm.reducers import Uniform

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    model = VideoLLM(tiny["llm"], tiny["vision"], functools.partial(Uniform, num_frames=2, budget=32))
    with pytest.raises(FileNotFoundError, match="--model.lora_adapter"):
        model.load_lora("someone/adapter-on-the-hub")


def test_a_resume_refuses_a_learning_rate_it_would_ignore(tiny, synthetic, tmp_path):
    """Resuming restores the optimizer's state, learning rates included: --model.lr 0.5 on a resume used to be
    accepted and silently replaced by the checkpoint's rate."""
    base = config(tiny, synthetic) + ["--trainer.logger.init_args.save_dir", str(tmp_path), "--model.init_from", "null",
                                      "--trainer.enable_progress_bar", "false"]
    main(["fit", *base, "--trainer.max_steps", "1"])
    ckpt = tmp_path / "finetune" / "tiny" / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=r"cannot change: lr: checkpoint 0.0001 vs config 0.5"):
        main(["fit", *base, "--trainer.max_steps", "2", "--ckpt_path", str(ckpt), "--model.lr", "0.5"])
    main(["fit", *base, "--trainer.max_steps", "2", "--ckpt_path", str(ckpt)])  # the run's own values: it continues
    assert torch.load(ckpt, weights_only=True)["global_step"] == 2


def test_evaluation_may_change_the_reducers_forward_knobs_but_not_its_structure(tiny, synthetic, tmp_path):
    """The sweeps of the paper's Fig. 3 change L*, R, θ, τ, γ on one trained model; the checkpoint check refused every
    such point. Evaluating now accepts a reducer's ``inference_args``; a structural argument still stops it, and a
    resumed fit accepts no change at all."""
    import yaml

    base = config(tiny, synthetic) + ["--trainer.logger.init_args.save_dir", str(tmp_path), "--model.init_from", "null",
                                      "--trainer.enable_progress_bar", "false"]
    main(["fit", *base, "--trainer.max_steps", "1"])
    ckpt = str(tmp_path / "finetune" / "tiny" / "checkpoints" / "last.ckpt")
    knobs = ["--model.reducer.init_args.num_frames", "8", "--model.reducer.init_args.budget", "64",
             "--model.reducer.init_args.tau", "0.5", "--model.reducer.init_args.selection", "soft"]
    main(["export", *config(tiny, synthetic), "--ckpt_path", ckpt, "--out", str(tmp_path / "export"), *knobs])
    saved = yaml.safe_load((tmp_path / "export" / "model.yaml").read_text())
    args = saved["model"]["reducer"]["init_args"]
    assert (args["num_frames"], args["budget"], args["tau"], args["selection"]) == (8, 64, 0.5, "soft")
    with pytest.raises(ValueError, match=r"reducer: checkpoint .*num_queries"):
        main(["export", *config(tiny, synthetic), "--ckpt_path", ckpt, "--out", str(tmp_path / "e2"),
              "--model.reducer.init_args.num_queries", "32"])
    with pytest.raises(ValueError, match=r"holds another model"):
        main(["fit", *base, "--trainer.max_steps", "2", "--ckpt_path", ckpt, "--model.reducer.init_args.tau", "0.5"])
    # a training-free reducer may stand in for a checkpoint's at evaluation, but not for one with trained weights
    with pytest.raises(ValueError, match=r"unexpected \['model.reducer\."):
        main(["export", *config(tiny, synthetic), "--ckpt_path", ckpt, "--out", str(tmp_path / "e3"),
              "--model.reducer", "VisionZip", "--model.reducer.init_args.dominant", "4",
              "--model.reducer.init_args.contextual", "2"])


def test_an_unset_linked_reducer_argument_matches_any_checkpoint_value():
    """A config that leaves the reducer's vocab_size unset (it follows the question tokenizer, or the Q-Former
    checkpoint) matches a checkpoint that wrote it (2048 in configs before the link); any other argument still
    has to agree, and the forward-pass ones only when evaluating."""
    from lit_bvllm.cli.commands import structure_differences

    saved = {"reducer": {"class_path": "lit_bvllm.reducers.bvllm.BVLLM",
                         "init_args": {"vocab_size": 2048, "budget": 96, "hidden_size": 64}}}
    config = {"reducer": {"class_path": "lit_bvllm.reducers.BVLLM",
                          "init_args": {"vocab_size": None, "budget": 96, "hidden_size": 64}}}
    assert structure_differences(saved, config, evaluating=False) == []
    config["reducer"]["init_args"]["vocab_size"] = 1024
    assert len(structure_differences(saved, config, evaluating=True)) == 1
    config["reducer"]["init_args"].update(vocab_size=None, budget=64)
    assert structure_differences(saved, config, evaluating=True) == []  # θ is a forward-pass knob
    assert len(structure_differences(saved, config, evaluating=False)) == 1


def test_a_training_free_reducer_may_replace_a_checkpoints_at_evaluation_only():
    """The training-free papers evaluate on the full model: a Uniform checkpoint evaluated with VisionZip, FastVID or
    MeanPool in its place; training with another reducer than the checkpoint's is still refused, and so is a trained
    reducer in place of another."""
    from lit_bvllm.cli.commands import structure_differences

    saved = {"reducer": {"class_path": "lit_bvllm.reducers.uniform.Uniform", "init_args": {"num_frames": 6}}}
    for name in ("VisionZip", "FastVID", "MeanPool"):
        config = {"reducer": {"class_path": f"lit_bvllm.reducers.{name}", "init_args": {"budget": 96}}}
        assert structure_differences(saved, config, evaluating=True) == []
        assert len(structure_differences(saved, config, evaluating=False)) == 1
    config = {"reducer": {"class_path": "lit_bvllm.reducers.TokenLearner", "init_args": {"num_tokens": 96}}}
    assert len(structure_differences(saved, config, evaluating=True)) == 1
