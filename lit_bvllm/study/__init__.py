"""The needle study (``lit_bvllm study``): :mod:`~lit_bvllm.study.runner` runs its sweeps and writes the report from
:mod:`~lit_bvllm.study.records` through :mod:`~lit_bvllm.study.tables` and :mod:`~lit_bvllm.study.figures`."""

from lit_bvllm.study.runner import study

__all__ = ["study"]
