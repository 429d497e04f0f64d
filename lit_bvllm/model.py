"""``VideoLLM``: frozen vision tower -> token reducer -> projector -> LLM, with loss, generation and optimisation.

The reducer is any strategy of :mod:`lit_bvllm.reducers`, given as a class path; it is built with the vision
tower's width (``--model.reducer=BVLLM --model.reducer.num_frames=16``). Training stages are configs:
``experiments/pretrain.yaml`` trains reducer + projector with the LLM frozen; ``experiments/finetune.yaml`` adds
LoRA on the LLM's linear layers and starts every reducer and projector tensor from the pretrain checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn

from datamodules.io import write_json
from lit_bvllm import pipeline
from lit_bvllm.backbones import VIDEO_TOKEN
from lit_bvllm.reducers.base import Reducer


class VideoLLM(L.LightningModule):
    """A video LLM whose visual tokens pass through a token-reduction strategy.

    Args:
        llm: local folder of the causal LM (and its tokenizer): Qwen2 by default.
        vision_tower: local folder of the HF vision tower (CLIP / SigLIP).
        reducer: the token-reduction strategy, a ``Reducer`` class built with the tower's width.
        feature_layer: vision layer whose tokens feed the reducer (-2: penultimate).
        vision_chunk: frames per vision-tower call.
        lora_r: LoRA rank on the LLM's linear layers; 0 keeps the LLM frozen (pretraining).
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        init_from: a pretrain checkpoint (or an export folder) whose reducer and projector tensors start this run
            (all must be present).
        lora_adapter: a peft LoRA adapter folder (an export's ``adapter/``) loaded onto the LLM, frozen: evaluation
            of an exported model.
        lr: learning rate of the reducer and projector.
        lr_llm: learning rate of the LoRA weights (default: ``lr``).
        weight_decay: AdamW weight decay.
        warmup_ratio: share of the training steps spent warming up linearly.
        schedule: decay after warm-up: ``linear`` or ``cosine`` (to 0), or ``constant``.
        gradient_checkpointing: recompute the LLM's activations in backward.
        freeze: name prefixes of reducer/projector parameters kept frozen in this stage (e.g.
            ``["reducer.temporal_qformer", "reducer.temporal_proj"]``: the official B-VLLM pretraining likewise
            freezes its spatial Q-Former); they are still saved, so the next stage starts from them.
        video_token: the placeholder token the data module writes.
        max_new_tokens: generation length in ``predict``/``test``.
    """

    def __init__(
        self,
        llm: str,
        vision_tower: str,
        reducer: Callable[[int], Reducer],
        feature_layer: int = -2,
        vision_chunk: int = 64,
        lora_r: int = 0,
        lora_alpha: int = 256,
        lora_dropout: float = 0.05,
        init_from: str | None = None,
        lora_adapter: str | None = None,
        lr: float = 1e-3,
        lr_llm: float | None = None,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        schedule: Literal["linear", "cosine", "constant"] = "linear",
        gradient_checkpointing: bool = False,
        freeze: list[str] | None = None,
        video_token: str = VIDEO_TOKEN,
        max_new_tokens: int = 32,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["reducer"])
        self.hparams["reducer"] = _spec(reducer)  # class path + init args: what export and the checkpoint record
        pipeline.build(self, llm, vision_tower, reducer, feature_layer, vision_chunk, video_token)
        self.llm.requires_grad_(False)
        if freeze:
            self._freeze(freeze)
        if lora_adapter is not None:
            from peft import PeftModel

            self.llm = PeftModel.from_pretrained(self.llm, lora_adapter)
        elif lora_r > 0:
            from peft import LoraConfig, get_peft_model

            # "all-linear" on the LLM alone: every nn.Linear of the language model except the output head
            cfg = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules="all-linear")
            self.llm = get_peft_model(self.llm, cfg)
        if gradient_checkpointing:
            self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.llm.enable_input_require_grads()
        if init_from is not None:
            from lit_bvllm.checkpointing import load_visual_weights

            load_visual_weights(self, init_from)
        self.strict_loading = False  # checkpoints hold the trainable tensors only (see on_save_checkpoint)

    def _freeze(self, prefixes: list[str]) -> None:
        """Freeze the reducer/projector parameters under ``prefixes``. A stage config names its reducer's modules, and
        swapping the reducer must not break it: a prefix the reducer does not have is reported, not an error."""
        import warnings

        for prefix in prefixes:
            if not prefix.startswith(("reducer.", "projector.")):
                raise ValueError(f"--model.freeze: '{prefix}' must start with 'reducer.' or 'projector.' (the LLM and the "
                                 "vision tower are frozen already; LoRA is --model.lora_r)")
            params = [p for n, p in self.named_parameters() if n.startswith(prefix)]
            if not params:
                warnings.warn(f"--model.freeze: this reducer ({type(self.reducer).__name__}) has no parameters under "
                              f"'{prefix}'; nothing frozen for it", stacklevel=2)
            for p in params:
                p.requires_grad_(False)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        reserved = getattr(getattr(dm, "hparams", None), "visual_tokens", None)
        if reserved is not None and reserved < self.reducer.budget:
            raise ValueError(
                f"the data module reserves --data.visual_tokens={reserved} tokens per sample for visual tokens, but the "
                f"reducer may emit up to its budget θ={self.reducer.budget}: set --data.visual_tokens={self.reducer.budget} "
                "or lower the reducer's budget (--model.reducer.budget / num_tokens / max_frames)"
            )

    # ------------------------------------------------------------------ forward

    def visual_tokens(self, batch: dict) -> tuple[Tensor, Tensor, dict]:
        """Frames -> (visual tokens in LLM space ``(B, M, H)``, mask ``(B, M)``, reducer info)."""
        return pipeline.visual_tokens(self, batch)

    def embed(self, batch: dict, padding_side: str = "right", with_labels: bool = True):
        """Spliced ``inputs_embeds``, ``attention_mask`` and labels for the LLM."""
        embeds, mask, labels, info = pipeline.embed(self, batch, padding_side, with_labels)
        # text-only batches still touch every trainable visual parameter, so DDP never sees an unused one
        anchor = sum(p.view(-1)[0] for p in self._visual_params()) * 0.0
        return embeds + anchor, mask, labels, info

    def _visual_params(self) -> list[nn.Parameter]:
        return [p for m in (self.reducer, self.projector) for p in m.parameters() if p.requires_grad]

    def forward(self, batch: dict) -> tuple[Tensor, dict]:
        embeds, mask, labels, info = self.embed(batch)
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False)
        return out.loss, info

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, info = self(batch)
        B = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log("train/visual_tokens", info["num_tokens"].float().mean(), batch_size=B)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, _ = self(batch)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].shape[0])

    # ------------------------------------------------------------------ generation

    def generate(self, batch: dict, max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers for a batch of prompts (``input_ids`` ending with the assistant header), with the KV cache."""
        return pipeline.generate(self, batch, max_new_tokens or self.hparams.max_new_tokens)

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        answers = self.generate(batch)
        return [{"id": m["id"], "prompt": m.get("prompt", m.get("question")), "answer": a.strip()}
                for m, a in zip(batch["meta"], answers)]

    # ------------------------------------------------------------------ evaluation

    def _evaluator(self):
        ev = getattr(self.trainer.datamodule, "evaluator", None)
        if ev is None:
            raise ValueError("`lit_bvllm test` needs a benchmark data module (experiments/eval/*.yaml), e.g. "
                             "--data=datamodules.benchmarks.VNBenchDataModule")
        return ev

    def on_test_epoch_start(self) -> None:
        self._records: list[dict] = []
        self._scores = self._evaluator().new_metric().to(self.device)  # not a child module: never checkpointed

    def test_step(self, batch: dict, batch_idx: int) -> None:
        from lit_bvllm.scoring import option_scores

        ev = self._evaluator()
        if batch["mode"] == "likelihood":
            out, info = option_scores(self, batch)
        else:
            out, info = pipeline.generate(self, batch, self.hparams.max_new_tokens, return_info=True)
        records, update = ev.score(batch, out, info)
        self._scores.update(**update)
        self._records += records

    def on_test_epoch_end(self) -> None:
        """Sync the metric states, gather the records (each id once), aggregate, log and write the run's files:
        ``<benchmark>_results.json``, ``<benchmark>_predictions.jsonl`` and a submission file where answers are hidden."""
        from pathlib import Path

        import torch.distributed as dist

        ev = self._evaluator()
        states = self._scores.compute()  # summed over ranks
        records = self._records
        if dist.is_available() and dist.is_initialized():
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, records)
            records = [r for part in gathered for r in part]
        records.sort(key=lambda r: r["index"])
        name = self.trainer.datamodule.name
        out = Path(self.trainer.log_dir or ".")
        result = ev.aggregate(states, records, out) if self.trainer.is_global_zero else {}
        for key, value in _flatten(result).items():
            self.log(f"test/{name}/{key}", value, rank_zero_only=True)
        if self.trainer.is_global_zero:
            import json

            out.mkdir(parents=True, exist_ok=True)
            with open(out / f"{name}_predictions.jsonl", "w") as f:
                for r in records:
                    f.write(json.dumps(r) + "\n")
            if (sub := ev.submission(records)) is not None:
                (out / sub[0]).write_text(sub[1])
                result["submission"] = sub[0]
            write_json(out / f"{name}_results.json", {**result, "protocol": ev.describe(self.hparams.max_new_tokens)})
        self.results = result

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self):
        h = self.hparams
        visual = self._visual_params()
        llm = [p for p in self.llm.parameters() if p.requires_grad]
        groups = [{"params": visual, "lr": h.lr, "name": "visual"}]
        if llm:
            groups.append({"params": llm, "lr": h.lr_llm or h.lr, "name": "llm"})
        opt = torch.optim.AdamW(groups, weight_decay=h.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(h.warmup_ratio * total)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total - warmup)
            if h.schedule == "linear":
                return max(0.0, 1.0 - progress)
            if h.schedule == "cosine":
                return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
            return 1.0

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the reducer and projector whole and the LLM's trainable (LoRA) tensors; the frozen tower and LLM
        come back from their folders."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in trainable or k.startswith(("reducer.", "projector."))
        }
        checkpoint["rng"] = {"torch": torch.get_rng_state(),
                             "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Restore the RNG streams (Gumbel noise, dropout) so a resumed run draws what the uninterrupted one would."""
        self._pending_rng = checkpoint.get("rng")  # applied at the first batch: starting a DataLoader draws from it

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        rng = getattr(self, "_pending_rng", None)
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])
            self._pending_rng = None


def _flatten(result: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a (nested) results dict as ``{"a/b": float}``, for logging."""
    flat = {}
    for k, v in result.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat[f"{prefix}{k}"] = float(v)
    return flat


def _spec(factory) -> dict:
    """``{"class_path", "init_args"}`` of a reducer factory (a jsonargparse partial or a class)."""
    import functools

    if isinstance(factory, functools.partial):
        cls = factory.func if isinstance(factory.func, type) else next(a for a in factory.args if isinstance(a, type))
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(factory.keywords)}
    if isinstance(factory, type):
        return {"class_path": f"{factory.__module__}.{factory.__qualname__}", "init_args": {}}
    raise TypeError("reducer must be a Reducer class or a class path with init_args (a callable taking the tower width)")
