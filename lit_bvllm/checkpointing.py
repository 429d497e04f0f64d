"""Checkpoints that survive crashes, and carrying the visual weights from one stage to the next.

- :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file and renames it into place, so a crash
  while writing leaves the previous checkpoint intact (a rename is atomic on POSIX file systems).
- :func:`load_visual_weights` starts a run (finetuning) from every reducer and projector tensor of an earlier one
  (pretraining), and refuses to start if any is missing or mis-shaped: no silent re-initialisation.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.fabric.plugins import TorchCheckpointIO

VISUAL_PREFIXES = ("reducer.", "projector.")


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


def visual_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reducer and projector tensors of a Lightning checkpoint file or an exported folder."""
    path = Path(path)
    if path.is_dir():
        from safetensors.torch import load_file

        return load_file(str(path / "visual.safetensors"))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist (check --model.init_from)")
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(VISUAL_PREFIXES)}


def load_visual_weights(model: torch.nn.Module, path: str | os.PathLike) -> int:
    """Copy every ``reducer.*`` and ``projector.*`` tensor of ``path`` into ``model``; returns how many.

    Raises ``ValueError`` naming the tensors if one the model has is missing from the checkpoint, has another
    shape, or the checkpoint holds visual tensors the model does not (a different reducer configuration).
    """
    src = visual_state(path)
    own = {k: v for k, v in model.state_dict().items() if k.startswith(VISUAL_PREFIXES)}
    missing = sorted(set(own) - set(src))
    extra = sorted(set(src) - set(own))
    shapes = sorted(k for k in set(own) & set(src) if own[k].shape != src[k].shape)
    if missing or extra or shapes:
        raise ValueError(
            f"--model.init_from '{path}' does not match this model's reducer/projector: missing {missing[:8]}, "
            f"unexpected {extra[:8]}, shape mismatch {shapes[:8]}. Use the same reducer config as the run that "
            "wrote it (--config experiments/pretrain.yaml's reducer section)."
        )
    model.load_state_dict(src, strict=False)
    return len(src)
