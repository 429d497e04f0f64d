"""Every YAML under experiments/ parses; reducer configs name real classes with valid constructor arguments."""

import importlib
import inspect
import re
from pathlib import Path

import pytest
import yaml

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
YAMLS = sorted(EXPERIMENTS.rglob("*.yaml"))
REDUCERS = sorted((EXPERIMENTS / "reducers").glob("*.yaml"))
CHEAP = {"Uniform", "MeanPool", "Identity", "WeightedSampler", "TokenLearner", "GroupedTTM"}


def test_every_reducer_and_every_benchmark_has_its_config():
    """A reducer of the package without a config under experiments/reducers/, or a benchmark of datamodules without
    one under experiments/eval/, is named (it was a count of files, which a missing config did not change)."""
    from helpers import reducer_classes

    import datamodules.benchmarks as benchmarks
    from datamodules.benchmarks.base import Benchmark, MultipleChoiceBenchmark, OpenEndedBenchmark

    def named(folder: str) -> set[str]:
        found = set()
        for path in (EXPERIMENTS / folder).glob("*.yaml"):
            found |= set(re.findall(r"class_path: ([\w.]+)", path.read_text()))
        return {c.rsplit(".", 1)[1] for c in found}

    assert {c.__name__ for c in reducer_classes()} - named("reducers") == set()
    kinds = {getattr(benchmarks, n) for n in dir(benchmarks) if not n.startswith("_")}
    shipped = {k.__name__ for k in kinds if isinstance(k, type) and issubclass(k, Benchmark)
               and k not in (Benchmark, MultipleChoiceBenchmark, OpenEndedBenchmark)}
    assert len(shipped) >= 9 and shipped - named("eval") == set()


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_yaml_parses(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)


def _reducer_spec(paths):
    spec = {"init_args": {}}
    for p in paths:  # later configs override earlier ones, as --config composes
        r = yaml.safe_load(p.read_text())["model"]["reducer"]
        spec["class_path"] = r.get("class_path", spec.get("class_path"))
        spec["init_args"].update(r.get("init_args", {}))
    return spec


@pytest.mark.parametrize("path", REDUCERS, ids=lambda p: p.stem)
def test_reducer_config_binds_to_its_class(path):
    paths = [EXPERIMENTS / "reducers" / "bvllm.yaml", path] if path.stem.startswith("bvllm_") else [path]
    spec = _reducer_spec(paths)
    module, name = spec["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    inspect.signature(cls).bind(in_dim=64, **spec["init_args"])  # raises TypeError on an unknown or missing argument
    if name in CHEAP:
        reducer = cls(in_dim=16, **spec["init_args"])
        assert reducer.budget >= 1 and reducer.out_dim == 16


COMPOSED = [
    ["pretrain.yaml"],
    ["pretrain.yaml", "finetune.yaml"],
    *[["pretrain.yaml", "finetune.yaml", "eval/base.yaml", f"eval/{p.name}"]
      for p in sorted((EXPERIMENTS / "eval").glob("*.yaml")) if p.name != "base.yaml"],
    ["pretrain.yaml", "backbones/qwen2_7b_clip336.yaml", "reducers/bvllm.yaml",
     "reducers/bvllm_no_temporal_merge.yaml"],
    *[["pretrain.yaml", f"strategies/{p.name}"] for p in sorted((EXPERIMENTS / "strategies").glob("*.yaml"))],
    *[["pretrain.yaml", f"reducers/{p.name}"] for p in REDUCERS if not p.stem.startswith("bvllm_")],
]


@pytest.mark.parametrize("configs", COMPOSED, ids=lambda c: "+".join(Path(x).stem for x in c))
def test_composed_configs_parse_with_the_cli(configs, capsys, monkeypatch):
    """Every composition the README and the configs' comments show parses with the real `lit_bvllm fit` parser."""
    from lit_bvllm.cli import main

    monkeypatch.chdir(EXPERIMENTS.parent)
    command = "test" if any(c.startswith("eval/") for c in configs) else "fit"
    args = [command] + [a for c in configs for a in ("--config", f"experiments/{c}")] + ["--print_config"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["reducer"]["class_path"].startswith("lit_bvllm.reducers.")
    assert printed["model"]["llm"] and printed["data"]["class_path"].startswith("datamodules.")


def test_finetuning_gives_the_selection_more_frames_than_it_keeps():
    """B-VLLM finetunes on 32 frames and keeps L* = 16: selection must choose. The demo's clips last at most 32 s
    (the Makefile's --max-duration), 20 s on average; at pretrain.yaml's 1 fps they gave 14.8 frames a sample,
    fewer than L*, and the selection learnt nothing it could use on the needle videos. finetune.yaml's rate gives
    the average clip >= 2 L* frames, and the evaluation configs go back to 1 fps."""
    import re

    pre, ft, base = (yaml.safe_load((EXPERIMENTS / f).read_text())
                     for f in ("pretrain.yaml", "finetune.yaml", "eval/base.yaml"))
    data = {**pre["data"]["init_args"], **ft["data"]["init_args"]}
    lstar = pre["model"]["reducer"]["init_args"]["num_frames"]
    from lit_bvllm.world.generate import make_synthetic

    longest = float(re.search(r"--max-duration (\d+)", (EXPERIMENTS.parent / "Makefile").read_text()).group(1))
    mean = (inspect.signature(make_synthetic).parameters["min_duration"].default + longest) / 2  # durations are uniform
    assert data["frame_mode"] == "fps" and data["fps"] * mean >= 2 * lstar and data["max_frames"] >= 2 * lstar
    assert base["data"]["init_args"]["fps"] == 1.0 and base["data"]["init_args"]["max_frames"] >= 128


def test_every_flag_the_readme_gives_is_one_the_parser_takes():
    """Each `--model.X` / `--data.X` the README names is an argument of the module or of a data module, and the data
    settings the parser links from the model (--data.tokenizer, ...) appear only where the README says they are
    refused (it told users to pass --data.tokenizer, which the CLI refuses)."""
    import inspect

    from datamodules import VideoInstructDataModule
    from datamodules.benchmarks import BenchmarkDataModule
    from lit_bvllm.cli.commands import LINKS
    from lit_bvllm.training.lit_module import VideoLLMModule

    readme = (EXPERIMENTS.parent / "README.md").read_text()
    params = {"model": set(inspect.signature(VideoLLMModule).parameters),
              "data": set(inspect.signature(VideoInstructDataModule).parameters)
              | set(inspect.signature(BenchmarkDataModule).parameters) | {"help"}}
    named = set(re.findall(r"--(model|data)\.(?:init_args\.)?(\w+)", readme))
    assert len(named) > 20
    unknown = sorted(f"--{group}.{name}" for group, name in named if name not in params[group])
    assert unknown == []
    linked = set(LINKS.values())
    for line in readme.splitlines():
        for name in re.findall(r"--data\.(\w+)", line):
            assert name not in linked or "refused" in line, line


def _printed(configs: list[str], capsys) -> dict:
    from lit_bvllm.cli import main

    with pytest.raises(SystemExit) as done:
        main(["fit", *[a for c in configs for a in ("--config", str(EXPERIMENTS / c))], "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("reducer", ["bvllm.yaml", "uniform.yaml", "llamavid.yaml"])
def test_the_paper_recipes_hold_the_papers_values(reducer, capsys):
    """experiments/recipes/: the two stages as the B-VLLM paper's released scripts run them (bvllm_official.md §2.3),
    for B-VLLM and for the baselines at the same recipe (the reducer file swapped)."""
    backbone = "backbones/qwen2_7b_instructblip.yaml"
    order = [backbone, f"reducers/{reducer}"]  # a reducer without a Q-Former goes after the backbone file
    one = _printed(["pretrain.yaml", *order, "recipes/paper_stage1.yaml"], capsys)
    two = _printed(["pretrain.yaml", "finetune.yaml", *order, "recipes/paper_stage2.yaml"], capsys)
    for cfg, lr, frames, batch in ((one, 1e-3, 16, 128), (two, 1e-4, 32, 64)):
        t, m, d = cfg["trainer"], cfg["model"], cfg["data"]["init_args"]
        assert t["max_epochs"] == 1 and t["max_steps"] == -1 and t["precision"] == "bf16-mixed"
        assert d["batch_size"] * t["accumulate_grad_batches"] * t["devices"] * t["num_nodes"] == batch
        assert (m["lr"], m["schedule"], m["warmup_ratio"], m["weight_decay"]) == (lr, "cosine", 0.03, 0.0)
        assert (d["frame_mode"], d["num_frames"], d["max_length"]) == ("uniform", frames, 8192)
        assert m["gradient_checkpointing"] is True and m["llm"].endswith("Qwen2-7B-Instruct")
        assert m["reducer"]["class_path"].endswith({"bvllm.yaml": "BVLLM", "uniform.yaml": "Uniform",
                                                    "llamavid.yaml": "LLaMAVID"}[reducer])
        assert any(c["class_path"].endswith("ModelCheckpoint") for c in t["callbacks"])
    assert one["model"]["lora_r"] == 0 and one["model"]["freeze"] == ["reducer.spatial_qformer"]
    assert one["data"]["init_args"]["template"] == "plain"
    m = two["model"]
    assert (m["lora_r"], m["lora_alpha"], m["lora_dropout"], m["lr_llm"]) == (128, 256, 0.05, 1e-4)
    assert m["freeze"] is None and m["init_from"] == "runs/pretrain/paper_stage1/checkpoints/last.ckpt"
    assert two["data"]["init_args"]["template"] == "chat"
