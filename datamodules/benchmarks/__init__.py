"""Zero-shot evaluation benchmarks: one module per benchmark, and one data module that takes any of them.

A benchmark (``mvbench.py``, ``videomme.py``, ``egoschema.py``, ``perception_test.py``, ``nextqa.py``,
``vnbench.py``, ``msvd_qa.py``, ``msrvtt_qa.py``, ``activitynet_qa.py``) holds its options, reader, reference
prompt, parse rule, aggregation and submission file, on the shared parts of ``base.py``; the config picks it by
``class_path`` under :class:`BenchmarkDataModule`'s ``benchmark``. Adding one is a module and a YAML (see
``base.py``).

The names below load on first use (PEP 562), as in :mod:`datamodules`: a benchmark's reader and scoring import
without Lightning.
"""

from datamodules.lazy import lazy_exports

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

__all__, __getattr__, __dir__ = lazy_exports("datamodules.benchmarks", _EXPORTS)
