"""``SkippedSamplesLogger``: counts the bad entries training skipped, logs ``data/skipped``, writes a report."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from datamodules.errors import REASONS
from datamodules.io import write_json


class SkippedSamplesLogger(L.Callback):
    """Reads ``batch["skipped"]`` (filled by :class:`~datamodules.video_instruct.VideoInstructDataset`).

    Logs the running total as ``data/skipped`` (summed over ranks) and writes ``skipped_samples.json`` — counts per
    reason and the first ``max_ids`` bad entries seen on rank 0 — into the run directory at each epoch end.

    Args:
        max_ids: bad entries listed in the report.
    """

    def __init__(self, max_ids: int = 1000):
        self.max_ids = max_ids
        self.counts = torch.zeros(len(REASONS), dtype=torch.long)
        self.entries: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        skipped = batch.get("skipped", []) if isinstance(batch, dict) else []
        for s in skipped:
            self.counts[REASONS.index(s["reason"])] += 1
            if len(self.entries) < self.max_ids:
                self.entries.append(s)
        pl_module.log("data/skipped", self.counts.sum().float(), reduce_fx="sum", sync_dist=True, on_step=True, on_epoch=False)

    def report(self, trainer) -> dict:
        counts = trainer.strategy.reduce(self.counts.clone().to(trainer.strategy.root_device), reduce_op="sum")
        per_reason = {r: int(c) for r, c in zip(REASONS, counts.cpu()) if c > 0}
        return {"skipped": sum(per_reason.values()), "per_reason": per_reason, "entries_rank0": self.entries}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        report = self.report(trainer)
        if trainer.is_global_zero and trainer.log_dir is not None:
            write_json(Path(trainer.log_dir) / "skipped_samples.json", report)

    def state_dict(self) -> dict:
        return {"counts": self.counts.tolist(), "entries": self.entries}

    def load_state_dict(self, state_dict: dict) -> None:
        self.counts = torch.tensor(state_dict["counts"], dtype=torch.long)
        self.entries = list(state_dict["entries"])
