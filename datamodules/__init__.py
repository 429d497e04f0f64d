"""Data for lit_bvllm: video-instruction training data and the evaluation benchmarks.

The Lightning-facing names below load on first use (PEP 562), so the plain parts (``datamodules.conversation``,
``datamodules.video``, the readers) import without Lightning: an exported model reloads where it is not installed.
"""

from datamodules.lazy import lazy_exports

_EXPORTS = {
    "SkippedSamplesLogger": "datamodules.skipped_samples",
    "VideoInstructCollator": "datamodules.video_instruct",
    "VideoInstructDataset": "datamodules.video_instruct",
    "VideoInstructDataModule": "datamodules.video_instruct_datamodule",
}

__all__, __getattr__, __dir__ = lazy_exports("datamodules", _EXPORTS)
