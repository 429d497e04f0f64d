"""``RunSummary``: prints and logs the numbers a run is judged by, once, at the start of training."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from lit_bvllm.io import write_json


class RunSummary(L.Callback):
    """Parameter counts at fit start; frames and visual tokens per sample, before and after reduction, on the first batch.

    Everything goes to stdout, to the logger as hyperparameters (``derived/...``) and to ``run_summary.json`` in the
    run directory.
    """

    def __init__(self):
        self.done = False

    def on_fit_start(self, trainer, pl_module) -> None:
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        total = sum(p.numel() for p in pl_module.parameters())
        self.stats = {"derived/params_trainable": trainable, "derived/params_frozen": total - trainable}
        per_module = {n: sum(p.numel() for p in m.parameters() if p.requires_grad) for n, m in pl_module.named_children()}
        self.stats.update({f"derived/trainable_{n}": c for n, c in per_module.items() if c})

    @torch.no_grad()
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.done:
            return
        self.done = True
        frames = batch["frame_mask"].sum(1).float()
        r = pl_module.reducer
        keep = r.frames_to_encode(batch["frame_mask"]).sum(1).float()
        n = getattr(pl_module.vision, "num_patches", 0)
        was = pl_module.training
        pl_module.eval()
        _, mask, _ = pl_module.visual_tokens(batch)
        pl_module.train(was)
        after = mask.sum(1).float()
        media = frames > 0
        mean = lambda x: float(x[media].mean()) if media.any() else 0.0  # noqa: E731
        self.stats.update({
            "derived/frames_per_sample": mean(frames),
            "derived/frames_encoded_per_sample": mean(keep),
            "derived/visual_tokens_before": mean(frames * n),
            "derived/visual_tokens_after": mean(after),
            "derived/visual_token_budget": int(r.budget),
            "derived/batch_size_per_device": int(batch["input_ids"].shape[0]),
            "derived/world_size": trainer.world_size,
        })
        if trainer.is_global_zero:
            print("run summary: " + ", ".join(f"{k.split('/')[1]}={v:,.1f}" if isinstance(v, float) else f"{k.split('/')[1]}={v:,}"
                                              for k, v in self.stats.items()), flush=True)
        for logger in trainer.loggers:
            logger.log_hyperparams(self.stats)
        if trainer.is_global_zero and trainer.log_dir:
            write_json(Path(trainer.log_dir) / "run_summary.json", self.stats)


class PredictionWriter(L.pytorch.callbacks.BasePredictionWriter):
    """``lit_bvllm predict``: each rank appends its generations to ``predictions.rank<r>.jsonl`` in the run dir as
    batches finish (nothing is held in memory, and a crash keeps what was written)."""

    def __init__(self):
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        import json

        out = Path(trainer.log_dir or ".")
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"predictions.rank{trainer.global_rank}.jsonl", "a") as f:
            for record in prediction:
                f.write(json.dumps(record) + "\n")

    def on_predict_start(self, trainer, pl_module) -> None:  # a rerun into the same dir starts the file afresh
        out = Path(trainer.log_dir or ".") / f"predictions.rank{trainer.global_rank}.jsonl"
        out.unlink(missing_ok=True)
