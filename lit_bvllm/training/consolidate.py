"""``lit_bvllm consolidate``: one checkpoint file from a sharded (FSDP2) checkpoint folder."""

from __future__ import annotations

from pathlib import Path

import torch

from datamodules.io import atomic_file


def consolidate(ckpt_path: str, out: str | None = None) -> str:
    """Gather a sharded checkpoint (a ``ShardedStrategy`` folder) into one file that loads like any other checkpoint
    (``--ckpt_path``, ``lit_bvllm export``, ``torch.load(..., weights_only=True)``), on one process, without the
    model. Lightning's ``consolidate_checkpoint`` utility reads FSDP1's layout (``model``), not this one
    (``state_dict``).

    Args:
        ckpt_path: the sharded checkpoint folder (``runs/<name>/<version>/checkpoints/last.ckpt``).
        out: the file to write (default: ``<ckpt_path>.consolidated``).
    Returns:
        the written file's path.
    """
    import re

    from lightning.fabric.utilities.load import _load_distributed_checkpoint

    path = Path(ckpt_path)
    if not (path.is_dir() and (path / ".metadata").is_file()):
        raise ValueError(f"--ckpt_path '{path}' is not a sharded checkpoint folder (no .metadata in it): a single-file "
                         "checkpoint needs no consolidation")
    checkpoint = _load_distributed_checkpoint(path)
    optimizers = sorted((k for k in checkpoint if re.fullmatch(r"optimizer_\d+", k)),
                        key=lambda k: int(k.split("_")[1]))
    if optimizers:
        checkpoint["optimizer_states"] = [checkpoint.pop(k) for k in optimizers]
    target = Path(out) if out else path.with_name(path.name + ".consolidated")
    with atomic_file(target) as f:
        torch.save(checkpoint, f)
    print(f"{len(checkpoint.get('state_dict', {}))} tensors of {path} -> {target}")
    return str(target)
