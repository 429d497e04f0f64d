"""What a reducer selected, drawn: the figure on planted selections, the show-selection path on a synthetic needle
video, and the TensorBoard callback in a test run."""

import functools
import json

import lightning as L
import numpy as np
import pytest
import torch

from lit_bvllm.analysis.selection import KEPT, kept_slots, save_figure, selection_figure, show_selection

PNG = b"\x89PNG\r\n\x1a\n"


def _planted():
    frames = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    info = {"kept_frames": torch.tensor([2, 5, -1]),
            "selection": torch.tensor([[0, 0, 0.9, 0.1, 0, 0, 0, 0], [0, 0, 0, 0, 0.2, 0.6, 0.2, 0], [0.0] * 8]),
            "group_sizes": torch.tensor([1, 2, 0]),
            "spatial_attention": torch.rand(3, 2, 4)}
    return frames, np.arange(8.0), info


def test_kept_slots_read_weights_groups_and_attention():
    _, _, info = _planted()
    slots = kept_slots(info)
    assert [s["frame"] for s in slots] == [2, 5] and [s["group"] for s in slots] == [1, 2]
    assert [round(s["weight"], 2) for s in slots] == [0.9, 0.6]
    assert slots[0]["attention"].shape == (4,)
    # a reducer with frame indices only (Uniform): weight 1, group 1, no attention
    assert kept_slots({"kept_frames": torch.tensor([0, 3])}) == [
        {"slot": 0, "frame": 0, "weight": 1.0, "group": 1, "attention": None},
        {"slot": 1, "frame": 3, "weight": 1.0, "group": 1, "attention": None}]


def test_the_figure_outlines_the_kept_frames_and_marks_the_needle(tmp_path):
    frames, times, info = _planted()
    fig = selection_figure(frames, times, info, "What appears?", "(B) a red star", needle_times=[[4.5, 5.5]],
                           columns=4)
    strip = fig.axes[:8]
    outlined = [i for i, ax in enumerate(strip)
                if any(getattr(p, "get_edgecolor", None) and tuple(p.get_edgecolor()[:3]) == _rgb(KEPT)
                       for p in ax.patches)]
    assert outlined == [2, 5]
    assert [i for i, ax in enumerate(strip) if " N" in ax.get_title()] == [5]  # the frame at 5 s shows the needle
    assert "w0.60 g2" in strip[5].get_title() and len(fig.axes) == 8 + 2  # strip + one panel per kept frame
    assert len(fig.axes[8].images) == 2  # the frame and its attention heatmap
    path = save_figure(fig, tmp_path / "f" / "sel.png")
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 2000
    fig = selection_figure(frames, times, info, "What appears?", "(B) a red star", needle_times=[[4.5, 5.5]],
                           columns=4, options=["a blue cross", "a red star"], correct=1)
    title = fig._suptitle.get_text()
    assert "(A) a blue cross   (B) a red star [right]" in title and "model: (B) a red star" in title
    assert "w: the slot's selection weight" in title and "g: selections merged into it" in title  # the legend
    assert min(ax.title.get_fontsize() for ax in fig.axes[:8]) >= 8  # the timestamps are readable (were 6 pt)


def _rgb(hex_colour):
    from matplotlib.colors import to_rgb

    return to_rgb(hex_colour)


@pytest.fixture(scope="module")
def bvllm_model(tiny):
    from lit_bvllm.reducers import BVLLM
    from lit_bvllm.training.lit_module import VideoLLMModule

    torch.manual_seed(0)
    m = VideoLLMModule(tiny["llm"], tiny["vision"],
                       functools.partial(BVLLM, num_frames=4, num_tokens=4, budget=16, num_queries=4, hidden_size=32,
                                         num_layers=1, num_heads=2, vocab_size=2048), max_new_tokens=3)
    m.configure_model()
    return m.eval()


def test_show_selection_draws_a_needle_video(bvllm_model, synthetic, tmp_path):
    root = synthetic / "eval" / "vnbench"
    entry = json.loads((root / "VNBench_qa.json").read_text())[0]
    out = show_selection(bvllm_model.model, str(root / entry["video"]), entry["question"], tmp_path / "sel.png",
                         options=entry["options"], needle_times=entry.get("needle_times"))
    assert isinstance(out["answer"], str) and 1 <= len(out["kept_times"]) <= 4  # L* = 4, duplicates merged
    assert (tmp_path / "sel.png").read_bytes()[:8] == PNG
    with pytest.raises(FileNotFoundError, match="--video"):
        show_selection(bvllm_model.model, str(tmp_path / "nothing.mp4"), "q", tmp_path / "x.png")


def test_the_callback_logs_selection_figures_to_tensorboard(bvllm_model, tiny, synthetic, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from datamodules.benchmarks import BenchmarkDataModule, VNBench
    from lit_bvllm.training.callbacks import BenchmarkEvaluation, SelectionFigures

    dm = BenchmarkDataModule(VNBench(str(synthetic / "eval" / "vnbench")), tiny["llm"], vision_tower=tiny["vision"],
                             num_workers=0, batch_size=2, limit=5, mode="likelihood")  # 2 questions' 4 tries:
    logger = L.pytorch.loggers.TensorBoardLogger(tmp_path, name="run", version="v")    # 2 requests, 2 samples
    L.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False,
              callbacks=[BenchmarkEvaluation(), SelectionFigures(num_samples=2)]).test(bvllm_model, datamodule=dm)
    events = EventAccumulator(str(tmp_path / "run" / "v"), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["selection/test/0", "selection/test/1"]
    image = events.Images("selection/test/0")[0]
    assert image.encoded_image_string[:8] == PNG and image.width > 200
    assert bvllm_model.model.reducer.record_attention is False  # switched on for the first batch only


def test_the_show_selection_command_reads_the_run_config(tiny, synthetic, tmp_path, monkeypatch, capsys):
    import pathlib

    from lit_bvllm.cli.commands import lightning_cli

    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])
    root = synthetic / "eval" / "vnbench"
    entry = json.loads((root / "VNBench_qa.json").read_text())[0]
    lightning_cli(["show-selection", "--config", "experiments/pretrain.yaml", *tiny["flags"],
                   "--data.train", str(synthetic / "finetune.json"),
                   "--video", str(root / entry["video"]), "--question", entry["question"],
                   "--options", json.dumps(entry["options"]), "--out", str(tmp_path / "sel.png")])
    printed = json.loads(capsys.readouterr().out)
    assert printed["figure"] == str(tmp_path / "sel.png") and (tmp_path / "sel.png").read_bytes()[:8] == PNG
    assert printed["kept_times"] and all(0 <= t <= 200 for t in printed["kept_times"])


def test_show_selection_hands_the_needle_times_to_an_oracle_pick(tiny, synthetic, tmp_path):
    """The oracle control needs the evidence in the batch: show-selection used to stop with "no evidence"."""
    from lit_bvllm.reducers import Uniform
    from lit_bvllm.training.lit_module import VideoLLMModule

    m = VideoLLMModule(tiny["llm"], tiny["vision"], functools.partial(Uniform, num_frames=3, budget=48, pick="oracle"),
                       max_new_tokens=2)
    m.configure_model()
    root = synthetic / "eval" / "vnbench"
    entry = json.loads((root / "VNBench_qa.json").read_text())[0]
    out = show_selection(m.eval().model, str(root / entry["video"]), entry["question"], tmp_path / "o.png",
                         needle_times=entry["needle_times"])
    assert any(a <= t <= b for t in out["kept_times"] for a, b in entry["needle_times"])  # a needle frame is kept


def test_frames_are_shown_as_they_were_whatever_form_they_come_in():
    import numpy as np
    import torch

    from lit_bvllm.analysis.selection import for_display

    dark = np.zeros((2, 8, 8, 3), np.uint8)
    dark[0, 0, 0] = 1  # an almost black clip: its bytes must not be stretched to white
    shown = for_display(dark)
    assert shown.shape == (2, 8, 8, 3) and shown.max() == pytest.approx(1 / 255)
    resized = torch.from_numpy(dark).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W) uint8, as batches carry them
    assert np.array_equal(for_display(resized), shown)
    normalised = torch.linspace(-2, 2, 2 * 3 * 8 * 8).view(2, 3, 8, 8)  # tower input: stretched to [0, 1]
    out = for_display(normalised)
    assert out.shape == (2, 8, 8, 3) and out.min() == 0.0 and out.max() == 1.0


@pytest.fixture(scope="module")
def val_data(tmp_path_factory):
    """A small synthetic set with held-out conversations on their own videos (``finetune_val.json``)."""
    from lit_bvllm.world import make_synthetic

    data = tmp_path_factory.mktemp("val_data")
    make_synthetic(data, seed=0, num_videos=2, num_eval_videos=1, max_duration=8, num_val_videos=2)
    return data


def test_training_logs_a_validation_loss_and_selection_figures_every_n_steps(tiny, val_data, tmp_path, monkeypatch):
    """TensorBoard said little about training: no validation loss and no selection figures while it trains. Now
    make-synthetic writes held-out conversations on their own videos (--num-val-videos), finetune.yaml validates
    every val_check_interval steps, and each validation logs val/loss and the selection figures at its step."""
    import pathlib

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lit_bvllm.cli.commands import lightning_cli
    from lit_bvllm.world import make_synthetic

    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])
    data = val_data
    val = json.loads((data / "finetune_val.json").read_text())
    train = json.loads((data / "finetune.json").read_text())
    assert {e["video"] for e in val if "video" in e} == {"videos/val_0000.mp4", "videos/val_0001.mp4"}
    assert not {e.get("video") for e in train} & {e.get("video") for e in val} - {None}  # held out: own videos
    make_synthetic(tmp_path / "none", seed=0, num_videos=2, num_eval_videos=1, max_duration=8)
    assert (tmp_path / "none" / "finetune.json").read_bytes() == (data / "finetune.json").read_bytes()  # unchanged
    assert not (tmp_path / "none" / "finetune_val.json").exists()
    cli = lightning_cli(["fit", "--config", "experiments/pretrain.yaml", "--config", "experiments/finetune.yaml",
                         *tiny["flags"], "--model.init_from", "null", "--data.train", str(data / "finetune.json"),
                         "--data.val", str(data / "finetune_val.json"), "--data.num_workers", "0",
                         "--data.batch_size", "2", "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
                         "--trainer.num_sanity_val_steps", "0", "--trainer.enable_progress_bar", "false",
                         "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    assert cli.trainer.val_check_interval == 2 and cli.trainer.check_val_every_n_epoch is None  # finetune.yaml's
    events = EventAccumulator(cli.trainer.log_dir, size_guidance={"images": 0, "scalars": 0}).Reload()
    assert len(events.Scalars("val/loss")) == 2  # one per validation (Lightning's step for it: 1 and 3)
    figures = [t for t in events.Tags()["images"] if t.startswith("selection/val/")]
    assert sorted(figures) == ["selection/val/0", "selection/val/1"]
    assert all([e.step for e in events.Images(t)] == [2, 4] for t in figures)  # at the global step, every 2 steps


def test_a_validation_set_does_not_change_the_training_run(tiny, val_data, tmp_path, monkeypatch):
    """A DataLoader draws its workers' seed from the global RNG when its iterator starts: validating (the sanity
    check, then every val_check_interval steps) moved the Gumbel noise and dropout of the steps after it, so the
    demo trained another model once it validated. The validation loader now has a generator of its own."""
    import pathlib

    from lit_bvllm.cli.commands import lightning_cli
    from lit_bvllm.weights import read_checkpoint

    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[1])
    data = val_data
    base = ["fit", "--config", "experiments/pretrain.yaml", "--config", "experiments/finetune.yaml", *tiny["flags"],
            "--model.init_from", "null", "--data.train", str(data / "finetune.json"), "--data.num_workers", "0",
            "--data.batch_size", "2", "--trainer.max_steps", "4", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    states = []
    for name, extra in [("plain", []), ("validated", ["--data.val", str(data / "finetune_val.json"),
                                                      "--trainer.val_check_interval", "2"])]:
        cli = lightning_cli([*base, "--trainer.logger.init_args.version", name, *extra])
        states.append(read_checkpoint(str(pathlib.Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"),
                                      "--ckpt_path")["state_dict"])
    plain, validated = states
    assert plain.keys() == validated.keys() and len(plain) > 10
    assert all(torch.equal(plain[k], validated[k]) for k in plain)  # the same training run, bit for bit
