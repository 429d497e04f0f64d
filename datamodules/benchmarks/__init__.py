"""Zero-shot evaluation benchmarks: one module per benchmark, and one data module that takes any of them.

A benchmark (``mvbench.py``, ``videomme.py``, ``egoschema.py``, ``perception_test.py``, ``nextqa.py``,
``vnbench.py``, ``msvd_qa.py``, ``msrvtt_qa.py``, ``activitynet_qa.py``) holds its options, reader, reference
prompt, parse rule, aggregation and submission file, on the shared parts of ``base.py``; the config picks it by
``class_path`` under :class:`BenchmarkDataModule`'s ``benchmark``. Adding one is a module and a YAML (see
``base.py``).

The names below load on first use (PEP 562), as in :mod:`datamodules`: a benchmark's reader and scoring import
without Lightning.
"""

import importlib

_EXPORTS = {
    "ActivityNetQA": "datamodules.benchmarks.activitynet_qa",
    "Benchmark": "datamodules.benchmarks.base",
    "BenchmarkDataModule": "datamodules.benchmarks.datamodule",
    "EgoSchema": "datamodules.benchmarks.egoschema",
    "EvalItem": "datamodules.benchmarks.items",
    "Evaluator": "datamodules.benchmarks.evaluator",
    "MSRVTTQA": "datamodules.benchmarks.msrvtt_qa",
    "MSVDQA": "datamodules.benchmarks.msvd_qa",
    "MVBench": "datamodules.benchmarks.mvbench",
    "MultipleChoiceBenchmark": "datamodules.benchmarks.base",
    "NExTQA": "datamodules.benchmarks.nextqa",
    "OpenEndedBenchmark": "datamodules.benchmarks.base",
    "PerceptionTest": "datamodules.benchmarks.perception_test",
    "VNBench": "datamodules.benchmarks.vnbench",
    "VideoMME": "datamodules.benchmarks.videomme",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datamodules.benchmarks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
