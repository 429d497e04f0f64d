"""Zero-shot evaluation benchmarks: readers of each official annotation format and one data module per benchmark."""

from datamodules.benchmarks.datamodule import (
    ActivityNetQADataModule,
    BenchmarkDataModule,
    EgoSchemaDataModule,
    MSRVTTQADataModule,
    MSVDQADataModule,
    MVBenchDataModule,
    NExTQADataModule,
    PerceptionTestDataModule,
    VideoMMEDataModule,
    VNBenchDataModule,
)
from datamodules.benchmarks.items import EvalItem

__all__ = [
    "ActivityNetQADataModule", "BenchmarkDataModule", "EgoSchemaDataModule", "EvalItem", "MSRVTTQADataModule",
    "MSVDQADataModule", "MVBenchDataModule", "NExTQADataModule", "PerceptionTestDataModule", "VNBenchDataModule",
    "VideoMMEDataModule",
]
