"""``SkippedSamplesLogger``: counts the bad entries training skipped, each once; logs ``data/skipped``; writes a
report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import lightning as L
import torch

from datamodules.io import write_json


class SkippedSamplesLogger(L.Callback):
    """Reads ``batch["skipped"]`` (filled by :class:`~datamodules.video_instruct.VideoInstructDataset`).

    A bad entry is counted once, however often it is met (by several DataLoader workers, as its own sample and as
    a replacement, in every epoch): entries are keyed by ``(file, index)``. Logs the running count as
    ``data/skipped`` (summed over ranks, so an entry two ranks met counts twice there) and writes
    ``skipped_samples.json`` at each epoch end: the exact count over all ranks, counts per reason, and the first
    ``max_ids`` bad entries (reason, file, index, id).

    Args:
        max_ids: bad entries listed in the report.
    """

    def __init__(self, max_ids: int = 1000):
        self.max_ids = max_ids
        self.seen: dict[tuple[str, int], dict] = {}  # (file, index) -> its row, every bad entry met on this rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        skipped = batch.get("skipped", []) if isinstance(batch, dict) else []
        for s in skipped:
            self.seen.setdefault((s["file"], int(s["index"])), dict(s))
        count = torch.tensor(float(len(self.seen)))
        pl_module.log("data/skipped", count, reduce_fx="sum", sync_dist=True, on_step=True, on_epoch=False)

    def report(self, trainer) -> dict:
        """Every rank's bad entries, merged (a collective: every rank calls it)."""
        rows = list(self.seen.values())
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        merged = {(r["file"], int(r["index"])): r for r in rows}
        entries = sorted(merged.values(), key=lambda r: (r["file"], r["index"]))
        per_reason = dict(sorted(Counter(r["reason"] for r in entries).items()))
        return {"skipped": len(entries), "per_reason": per_reason, "entries": entries[: self.max_ids]}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        report = self.report(trainer)
        log_dir = trainer.log_dir  # a broadcast from rank 0: every rank asks (asked by rank 0 alone, it met the next
        # collective of the others, DDP's buffer broadcast, and fed them the pickled path as position ids)
        if trainer.is_global_zero and log_dir is not None:
            write_json(Path(log_dir) / "skipped_samples.json", report)

    def state_dict(self) -> dict:
        return {"entries": list(self.seen.values())}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seen = {(r["file"], int(r["index"])): r for r in state_dict.get("entries", [])}
