"""Data for lit_bvllm: video-instruction training data (and, later, the evaluation benchmarks)."""

from datamodules.skipped_samples import SkippedSamplesLogger
from datamodules.video_instruct import VideoInstructCollator, VideoInstructDataset
from datamodules.video_instruct_datamodule import VideoInstructDataModule

__all__ = ["SkippedSamplesLogger", "VideoInstructCollator", "VideoInstructDataModule", "VideoInstructDataset"]
