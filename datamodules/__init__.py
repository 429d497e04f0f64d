"""Data for lit_bvllm: video-instruction training data and the evaluation benchmarks.

The Lightning-facing names below load on first use (PEP 562), so the plain parts (``datamodules.conversation``,
``datamodules.video``, the readers) import without Lightning: an exported model reloads where it is not installed.
"""

import importlib

_EXPORTS = {
    "SkippedSamplesLogger": "datamodules.skipped_samples",
    "VideoInstructCollator": "datamodules.video_instruct",
    "VideoInstructDataset": "datamodules.video_instruct",
    "VideoInstructDataModule": "datamodules.video_instruct_datamodule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'datamodules' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
