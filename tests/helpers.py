"""Helpers the test files share (a test file imports this module, never another test file): the tiny reducer sizes,
the fit command line and data module the model tests build, and the 2-process launch the distributed tests use."""

import functools
import importlib
import inspect
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import torch

from datamodules import VideoInstructDataModule
from lit_bvllm import reducers
from lit_bvllm.reducers import BVLLM
from lit_bvllm.reducers.base import Reducer
from lit_bvllm.training.lit_module import VideoLLMModule

REPO = Path(__file__).resolve().parents[1]
LIT_BVLLM = os.path.join(os.path.dirname(sys.executable), "lit_bvllm")
ENTRIES = 6  # training samples (videos and images): an even count, so the sampler pads none: each seen once per epoch


def launch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "tests"),
                                                                                os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([LIT_BVLLM, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def common(tiny) -> list[str]:
    return ["--config", "experiments/pretrain.yaml", *tiny["flags"],
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--data.num_workers", "0"]


def fit(tiny, synthetic, tmp: Path, version: str, strategy: list[str], epochs: int = 2, ckpt: Path | None = None,
        devices: int = 2):
    """Pretraining on 2 processes, batch 2 per process (3 samples and 2 optimizer steps per epoch each); the ranks'
    records (tests/ddp_probe.py). ``strategy`` comes after the common flags, so it may set the accelerator."""
    entries = json.loads((synthetic / "pretrain.json").read_text())
    assert len(entries) >= ENTRIES
    train = synthetic / f"pretrain_first{ENTRIES}.json"  # beside the media it names
    train.write_text(json.dumps(entries[:ENTRIES]))
    ranks = tmp / f"ranks_{version}_{epochs}"
    launch(["fit", *common(tiny), *strategy, "--data.train", str(train), "--data.batch_size", "2",
            "--trainer.devices", str(devices), "--trainer.max_epochs", str(epochs), "--trainer.max_steps", "-1",
            "--trainer.logger.init_args.save_dir", str(tmp), "--trainer.logger.init_args.version", version,
            "--trainer.callbacks+=ddp_probe.RankRecorder", f"--trainer.callbacks.dirpath={ranks}",
            *(["--ckpt_path", str(ckpt)] if ckpt else [])], tmp)
    return [json.loads((ranks / f"rank{r}.json").read_text()) for r in range(devices)], ranks / "tensors"


def reducer_classes() -> list[type[Reducer]]:
    """Every Reducer subclass defined in a module of the ``lit_bvllm.reducers`` package: a new file is picked up."""
    found = {}
    for info in pkgutil.iter_modules(reducers.__path__):
        module = importlib.import_module(f"lit_bvllm.reducers.{info.name}")
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, Reducer) and obj is not Reducer
                    and obj.__module__ == module.__name__):
                found[obj.__qualname__] = obj
    return [found[k] for k in sorted(found)]


QF = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "vocab_size": 2048}
REDUCERS = {
    "BVLLM": {"num_frames": 4, "num_tokens": 4, "budget": 16, "num_queries": 4, **QF},
    "Uniform": {"num_frames": 1, "budget": 16},
    "LLaMAVID": {"budget": 16, "num_queries": 4, **QF},
    "MeanPool": {"num_patches": 16, "budget": 24},
    "TokenLearner": {"num_tokens": 8},
    "GroupedTTM": {"tokens_per_frame": 16, "num_tokens": 8, "memory_slots": 2, "num_layers": 1, "num_heads": 2,
                   "max_frames": 4},
    "WeightedSampler": {"tokens_per_frame": 4, "max_frames": 4},
    "Identity": {"budget": 32, "truncate": True, "num_patches": 16},
}


def small_args(cls: type[Reducer], num_patches: int = 16) -> dict:
    """Tiny init args of a reducer for the tiny backbones: :data:`REDUCERS`' where it has them, else the args its
    ``example`` builds it with (a question vocabulary as large as the tiny LLM's where it has one)."""
    if cls.__name__ in REDUCERS:
        return dict(REDUCERS[cls.__name__])
    seen = {}
    init = cls.__init__

    def recording(self, *args, **kwargs):
        seen.update(inspect.signature(init).bind(self, *args, **kwargs).arguments)
        init(self, *args, **kwargs)

    cls.__init__ = recording
    try:
        cls.example(64, num_patches)
    finally:
        cls.__init__ = init
    args = {k: v for k, v in seen.items() if k not in ("self", "in_dim")}
    if "vocab_size" in args:
        args["vocab_size"] = QF["vocab_size"]
    return args


def cli_args(tiny, synthetic, tmp_path, reducer="BVLLM", steps=2, extra=()):
    args = ["fit", "--config", "experiments/pretrain.yaml",
            *tiny["flags"],
            f"--model.reducer={_class_path(reducer)}",
            "--data.train", str(synthetic / "finetune.json"), "--data.template", "chat", "--data.num_frames", "6",
            "--data.num_workers", "0", "--data.batch_size", "2",
            "--trainer.max_steps", str(steps), "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    for k, v in small_args(_reducer(reducer)).items():
        args += [f"--model.reducer.{k}", str(v).lower() if isinstance(v, bool) else str(v)]
    return args + list(extra)


def _reducer(name: str) -> type[Reducer]:
    return next(c for c in reducer_classes() if c.__name__ == name)


def _class_path(name: str) -> str:
    cls = _reducer(name)
    return f"{cls.__module__}.{cls.__qualname__}"


def small_module(tiny, lora_r=0, reducer=BVLLM, **kw):
    """A VideoLLMModule as Lightning builds it (configure_model is called by the trainer)."""
    torch.manual_seed(0)
    red = functools.partial(reducer, **REDUCERS[reducer.__name__])
    return VideoLLMModule(tiny["llm"], tiny["vision"], red, lora_r=lora_r, lora_alpha=16, **kw)


def data(tiny, synthetic, **kw):
    d = VideoInstructDataModule(train=str(synthetic / "finetune.json"), tokenizer=tiny["llm"],
                                vision_tower=tiny["vision"],
                                num_workers=0, batch_size=2, visual_tokens=16, max_length=256, frame_mode="uniform",
                                num_frames=6, **kw)
    d.setup("fit")
    return d


def needle_data(tiny, synthetic, **kw):
    """The synthetic needle set (VNBench format) as the benchmark data module reads it for the tiny backbones, set up
    for testing (no workers; ``kw``: its other arguments, e.g. ``mode``, ``limit``, ``batch_size``)."""
    from datamodules.benchmarks import BenchmarkDataModule, VNBench

    dm = BenchmarkDataModule(VNBench(str(synthetic / "eval" / "vnbench")), tiny["llm"], vision_tower=tiny["vision"],
                             **{"num_workers": 0, **kw})
    dm.setup("test")
    return dm
