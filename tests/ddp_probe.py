"""A callback the multi-process tests hand to the real ``lit_bvllm`` console script (``--trainer.callbacks+=
ddp_probe.RankRecorder``, with ``tests/`` on ``PYTHONPATH``): each rank writes what it trained on and what it ended
with to ``<dirpath>/rank<r>.json``."""

import hashlib
import json
import os

import lightning as L


class RankRecorder(L.Callback):
    """Per rank: the (source file, entry index) of every training sample per epoch, and a digest of every tensor the
    checkpoint keeps (trainable and reducer/projector) at the end of fit."""

    def __init__(self, dirpath: str):
        self.dirpath = dirpath
        self.samples: dict[int, list[list]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        seen = self.samples.setdefault(trainer.current_epoch, [])
        seen += [[os.path.basename(m["source"]), m["index"]] for m in batch["meta"]]

    def on_fit_end(self, trainer, pl_module) -> None:
        kept = {}
        pl_module.on_save_checkpoint(probe := {"state_dict": pl_module.state_dict(), "loops": {}})
        for name, tensor in sorted(probe["state_dict"].items()):
            kept[name] = hashlib.sha256(tensor.detach().float().cpu().numpy().tobytes()).hexdigest()
        os.makedirs(self.dirpath, exist_ok=True)
        with open(os.path.join(self.dirpath, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"rank": trainer.global_rank, "world": trainer.world_size, "samples": self.samples,
                       "tensors": kept}, f)
