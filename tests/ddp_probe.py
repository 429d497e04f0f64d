"""A callback the multi-process tests hand to the real ``lit_bvllm`` console script (``--trainer.callbacks+=
ddp_probe.RankRecorder``, with ``tests/`` on ``PYTHONPATH``): each rank writes what it trained on and what it ended
with to ``<dirpath>/rank<r>.json``."""

import hashlib
import json
import os

import lightning as L
import torch
from torch.distributed.tensor import DTensor


class RankRecorder(L.Callback):
    """Per rank: the (source file, entry index) of every training sample per epoch, and a digest of every tensor the
    checkpoint keeps (trainable and reducer/projector) at the start of training (after a resume: what the checkpoint
    gave) and at the end of fit; rank 0 also saves the final tensors whole (``tensors/<name>.pt``)."""

    def __init__(self, dirpath: str):
        self.dirpath = dirpath
        self.samples: dict[int, list[list]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        seen = self.samples.setdefault(trainer.current_epoch, [])
        seen += [[os.path.basename(m["source"]), m["index"]] for m in batch["meta"]]

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = self._digests(trainer, pl_module, save=False)  # after a resume: what the checkpoint gave

    def on_fit_end(self, trainer, pl_module) -> None:
        kept = self._digests(trainer, pl_module, save=True)
        with open(os.path.join(self.dirpath, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"rank": trainer.global_rank, "world": trainer.world_size, "samples": self.samples,
                       "start": self.start, "tensors": kept}, f)

    def _digests(self, trainer, pl_module, save: bool) -> dict[str, str]:
        kept = {}
        os.makedirs(os.path.join(self.dirpath, "tensors"), exist_ok=True)
        pl_module.on_save_checkpoint(probe := {"state_dict": pl_module.state_dict(), "loops": {}})
        for name, tensor in sorted(probe["state_dict"].items()):
            if isinstance(tensor, DTensor):  # a shard (FSDP2): every rank gathers the whole, in the same order
                tensor = tensor.full_tensor()
            kept[name] = hashlib.sha256(tensor.detach().float().cpu().numpy().tobytes()).hexdigest()
            if save and trainer.global_rank == 0:
                torch.save(tensor.detach().cpu(), os.path.join(self.dirpath, "tensors", f"{name}.pt"))
        return kept

