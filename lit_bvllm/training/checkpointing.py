"""Checkpoints that survive crashes: :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file and
renames it into place, so a crash while writing leaves the previous checkpoint intact (a rename is atomic on POSIX
file systems). Carrying the visual weights from one stage to the next: :func:`lit_bvllm.weights.load_visual_weights`.
"""

from __future__ import annotations

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from datamodules.io import atomic_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` through the suite's one atomic writer (:func:`datamodules.io.atomic_file`)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        with atomic_file(path) as f:
            torch.save(checkpoint, f)
