"""Checkpoints that survive crashes: :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file and
renames it into place, so a crash while writing leaves the previous checkpoint intact (a rename is atomic on POSIX
file systems). Carrying the visual weights from one stage to the next: :func:`lit_bvllm.weights.load_visual_weights`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.fabric.plugins import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``<path>.tmp``, flush to disk, then ``os.replace`` onto ``<path>``."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
