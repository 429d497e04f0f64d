"""Every YAML under experiments/ parses; reducer configs name real classes with valid constructor arguments."""

import importlib
import inspect
from pathlib import Path

import pytest
import yaml

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
YAMLS = sorted(EXPERIMENTS.rglob("*.yaml"))
REDUCERS = sorted((EXPERIMENTS / "reducers").glob("*.yaml"))
CHEAP = {"Uniform", "MeanPool", "Identity", "WeightedSampler", "TokenLearner", "GroupedTTM"}


def test_there_are_experiments():
    assert len(YAMLS) >= 10 and len(REDUCERS) >= 8


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
