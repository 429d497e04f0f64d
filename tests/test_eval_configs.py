"""The eval configs hold only their differences from experiments/eval/base.yaml, and a benchmark takes only the
options it has: a flag another benchmark has is an error, not silently ignored."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO / "experiments" / "eval"
BENCHMARKS = sorted(p for p in EVAL.glob("*.yaml") if p.name != "base.yaml")
# the synthetic needle sets (VNBench, scored by option likelihood): the demo's and the needle study's, one per length
NEEDLE_SETS = {"needle": {}, "needle_16s": {}, "needle_64s": {}, "needle_128s": {}, "needle_256s": {"max_frames": 256}}


def test_base_holds_what_every_benchmark_shares():
    base = yaml.safe_load((EVAL / "base.yaml").read_text())
    assert base["data"]["class_path"] == "datamodules.benchmarks.BenchmarkDataModule"
    assert base["data"]["init_args"] == {"mode": "generate", "frame_mode": "fps", "fps": 1.0, "max_frames": 128,
                                         "batch_size": 4, "num_workers": "auto"}
    assert base["trainer"]["logger"]["init_args"] == {"save_dir": "runs", "version": None}
    assert len(BENCHMARKS) == 9 + len(NEEDLE_SETS)


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda p: p.stem)
def test_a_benchmark_config_is_a_diff(path):
    import importlib

    cfg = yaml.safe_load(path.read_text())
    assert set(cfg) == {"trainer", "data"}
    assert cfg["trainer"] == {"logger": {"init_args": {"name": f"eval_{path.stem}"}}}
    assert set(cfg["data"]) == {"init_args"}  # the data module's class_path comes from base.yaml
    args = dict(cfg["data"]["init_args"])
    benchmark = args.pop("benchmark")
    needle = path.stem in NEEDLE_SETS  # a needle set deviates by its scoring (and the 256 s set by its frame cap)
    assert args == ({"mode": "likelihood", **NEEDLE_SETS[path.stem]} if needle else {})
    module, name = benchmark["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert cls.name == ("vnbench" if needle else path.stem)  # `make demo` reads vnbench_results.json
    assert benchmark["init_args"]["root"].startswith("artifacts/synthetic/eval/")
    cls(**benchmark["init_args"])  # every option is one the benchmark has
    assert "--config experiments/eval/base.yaml --config experiments/eval/" in path.read_text()  # usage comment


def _cli(tiny, name: str, *flags: str):
    """The data module of ``pretrain + finetune + eval/base + eval/<name>`` with ``flags``, as `lit_bvllm test`
    builds it."""
    from lit_bvllm.cli.commands import lightning_cli

    configs = ["pretrain.yaml", "finetune.yaml", "eval/base.yaml", f"eval/{name}.yaml"]
    args = [a for c in configs for a in ("--config", str(REPO / "experiments" / c))]
    args += [*tiny["flags"], "--model.init_from", "null",
             "--trainer.logger", "false", *flags]
    return lightning_cli(args, run=False).datamodule


def test_benchmark_flags_reach_the_benchmark_and_data_flags_the_data_module(tiny):
    from datamodules.benchmarks import MSVDQA, NExTQA, VideoMME
    from datamodules.benchmarks.judge import Judge
    from datamodules.benchmarks.vnbench import parse_vnbench

    dm = _cli(tiny, "videomme", "--data.benchmark.subtitles", "true", "--data.benchmark.root", "/data/Video-MME",
              "--data.blind", "true", "--data.limit", "5")
    assert isinstance(dm.benchmark, VideoMME) and dm.benchmark.subtitles and dm.benchmark.root == "/data/Video-MME"
    assert dm.hparams.blind and dm.hparams.limit == 5 and dm.hparams.tokenizer == tiny["llm"]  # linked from the model
    assert dm.hparams.vision_tower == tiny["vision"] and dm.hparams.video_token == "<video>"
    dm = _cli(tiny, "nextqa", "--data.benchmark.parse_rule", "datamodules.benchmarks.vnbench.parse_vnbench",
              "--data.benchmark.fallback_letter", "C")
    assert isinstance(dm.benchmark, NExTQA) and dm.benchmark.parse_rule is parse_vnbench
    assert dm.benchmark.protocol("generate")["parse_rule"] == "vnbench" and dm.benchmark.fallback_letter == "C"
    dm = _cli(tiny, "msvd_qa", "--data.benchmark.judge.url", "http://localhost:8000/v1",
              "--data.benchmark.judge.model", "qwen", "--data.benchmark.short_answer", "true")
    assert isinstance(dm.benchmark, MSVDQA) and dm.benchmark.short_answer
    assert dm.benchmark.judge == Judge("http://localhost:8000/v1", "qwen")


@pytest.mark.parametrize("name, flag", [("mvbench", "subtitles"), ("vnbench", "short_answer"),
                                        ("msvd_qa", "fallback_letter"), ("egoschema", "annotation_file")])
def test_an_option_the_benchmark_lacks_is_an_error(tiny, name, flag, capsys):
    with pytest.raises(SystemExit):
        _cli(tiny, name, f"--data.benchmark.{flag}", "true")
    assert f"'{flag}' is not accepted" in capsys.readouterr().err
