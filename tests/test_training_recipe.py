"""Stage recipes: parameters frozen per stage, and the Gumbel temperature annealed during training."""

import functools
from types import SimpleNamespace

import pytest
import torch

from lit_bvllm.model import VideoLLM
from lit_bvllm.reducers import BVLLM, Uniform
from lit_bvllm.training.callbacks import TemperatureSchedule

QF = {"num_frames": 4, "num_tokens": 4, "budget": 16, "num_queries": 4, "hidden_size": 32, "num_layers": 2,
      "num_heads": 2, "vocab_size": 2048}
SELECTION = ["reducer.temporal_qformer", "reducer.temporal_proj"]


def test_temperature_anneals_from_start_to_the_reducers_tau():
    cb = TemperatureSchedule(start=1.0, anneal_ratio=0.5)
    module = SimpleNamespace(model=SimpleNamespace(reducer=SimpleNamespace(tau=0.1)), log=lambda *a, **k: None)
    cb.on_fit_start(None, module)
    taus = [cb.tau(step, 100) for step in range(0, 101, 10)]
    assert taus[0] == 1.0 and taus[5] == pytest.approx(0.1) and taus[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(taus[:6], taus[1:6]))  # strictly down while annealing
    assert taus[1] == pytest.approx(0.1 ** 0.2)  # exponential: a fifth of the way, a fifth of the decades
    batch = {"input_ids": torch.zeros(2, 3)}
    for step in (0, 30, 70):  # a function of the global step alone: a resumed run anneals as an uninterrupted one
        cb.on_train_batch_start(SimpleNamespace(global_step=step, estimated_stepping_batches=100), module, batch, 0)
        assert module.model.reducer.tau == pytest.approx(cb.tau(step, 100))
    cb.on_fit_end(None, module)
    assert module.model.reducer.tau == 0.1  # evaluation reads the configured τ
    with pytest.raises(ValueError, match="anneal_ratio"):
        TemperatureSchedule(anneal_ratio=0)


def test_a_reducer_without_tau_is_left_alone():
    cb = TemperatureSchedule()
    module = SimpleNamespace(model=SimpleNamespace(reducer=SimpleNamespace()))
    cb.on_fit_start(None, module)
    cb.on_train_batch_start(SimpleNamespace(global_step=3, estimated_stepping_batches=10), module, {}, 0)
    assert not hasattr(module.model.reducer, "tau")


def test_freeze_keeps_the_named_modules_frozen(tiny):
    m = VideoLLM(tiny["llm"], tiny["vision"], functools.partial(BVLLM, **QF))
    m.freeze(SELECTION)
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    selection = {n for n, _ in m.named_parameters() if n.startswith(tuple(SELECTION))}
    assert selection and selection <= frozen
    assert any(p.requires_grad for n, p in m.named_parameters() if n.startswith("reducer.spatial_qformer"))
    assert all(p.requires_grad for p in m.projector.parameters())
    with pytest.raises(ValueError, match="must start with 'reducer.' or 'projector.'"):
        m.freeze(["llm.model"])
    with pytest.warns(UserWarning, match="Uniform.*no parameters under 'reducer.temporal_qformer'"):
        VideoLLM(tiny["llm"], tiny["vision"], functools.partial(Uniform, num_frames=2, budget=32)).freeze(SELECTION)


def test_frozen_modules_stay_put_through_a_fit_and_are_saved(tiny, synthetic, tmp_path, monkeypatch):
    import pathlib

    from lit_bvllm.cli.commands import lightning_cli

    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])
    args = ["--config", "experiments/pretrain.yaml", *tiny["flags"], "--data.train", str(synthetic / "pretrain.json"),
            "--data.num_workers", "0",
            "--data.batch_size", "2", "--trainer.max_steps", "3", "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--model.freeze", "[reducer.temporal_qformer,reducer.temporal_proj]"]
    for k, v in QF.items():
        args += [f"--model.reducer.{k}", str(v)]
    cli = lightning_cli(args, run=False)
    cli.model.configure_model()  # built before the fit, to compare with (the trainer's call then keeps it)
    model = cli.model.model
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(("reducer.", "projector."))}
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    after = dict(model.named_parameters())
    for n, p in before.items():
        moved = not torch.equal(p, after[n])
        if n.startswith(tuple(SELECTION)):
            assert not moved, n
    assert any(not torch.equal(p, after[n]) for n, p in before.items() if n.startswith("projector."))
    state = torch.load(tmp_path / "pretrain" / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(state[f"model.{n}"], before[n]) for n in before if n.startswith(tuple(SELECTION)))
    # the schedule of pretrain.yaml hands the configured τ back
    assert cli.model.model.reducer.tau == QF.get("tau", 0.1)
