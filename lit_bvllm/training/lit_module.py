"""``VideoLLMModule``: the Lightning side of a :class:`~lit_bvllm.model.VideoLLM`: stages, steps, logging, optimiser.

The reducer is any strategy of :mod:`lit_bvllm.reducers`, given as a class path; it is built with the vision
tower's width (``--model.reducer=BVLLM --model.reducer.num_frames=16``). Training stages are configs:
``experiments/pretrain.yaml`` trains reducer + projector with the LLM frozen; ``experiments/finetune.yaml`` adds
LoRA on the LLM's linear layers and starts every reducer and projector tensor from the pretrain checkpoint.

The backbones load in :meth:`configure_model`, not in ``__init__``: Lightning calls it once the strategy is set up,
so FSDP and DeepSpeed ZeRO-3 can build the model sharded. Benchmark scoring, gathering and result files live with the
evaluator (:class:`lit_bvllm.training.callbacks.BenchmarkEvaluation`); the RNG streams ride in
:class:`lit_bvllm.training.callbacks.RNGState`'s checkpoint state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from transformers import get_scheduler

from lit_bvllm.backbones import VIDEO_TOKEN
from lit_bvllm.model import VideoLLM, reducer_spec
from lit_bvllm.reducers.base import Reducer
from lit_bvllm.selectors import FrameSelector
from lit_bvllm.training.wrapping import checkpoint_layers, clean_name, shard
from lit_bvllm.weights import VISUAL_PREFIXES, check_tensors, load_visual_weights, unused_names

SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}  # transformers' names


class VideoLLMModule(L.LightningModule):
    """Trains and evaluates a :class:`~lit_bvllm.model.VideoLLM` (``.model``).

    Args:
        llm: local folder of the causal LM (and its tokenizer): Qwen2 by default.
        vision_tower: local folder of the HF vision tower (CLIP / SigLIP).
        reducer: the token-reduction strategy, a ``Reducer`` class built with the tower's width.
        feature_layer: vision layer whose tokens feed the reducer (-2: penultimate).
        vision_chunk: frames per vision-tower call.
        lora_r: LoRA rank on the LLM's linear layers; 0 keeps the LLM frozen (pretraining).
        lora_alpha: LoRA alpha.
        lora_dropout: LoRA dropout.
        init_from: when fitting, the earlier stage whose reducer and projector tensors this run starts from (a
            checkpoint or an export folder; all must be present). Not read by test/validate/predict, whose weights
            come from ``--ckpt_path`` or ``weights``.
        weights: reducer and projector tensors this model has in every stage (an export folder, or a checkpoint):
            what ``lit_bvllm test --config DIR/model.yaml`` evaluates; a ``--ckpt_path`` replaces them.
        lora_adapter: a peft LoRA adapter folder (an export's ``adapter/``) loaded onto the LLM, frozen.
        lr: learning rate of the reducer and projector.
        lr_llm: learning rate of the LoRA weights (default: ``lr``).
        weight_decay: AdamW weight decay.
        warmup_ratio: share of the training steps spent warming up linearly.
        schedule: decay after warm-up (``transformers.get_scheduler``): ``linear`` or ``cosine`` (to 0), or
            ``constant``.
        gradient_checkpointing: recompute the LLM's activations in backward (Hugging Face's, the LLM only).
        activation_checkpointing: recompute every layer's activations in backward, the LLM's, the tower's and the
            reducer's (torch's checkpoint wrapper on :func:`lit_bvllm.training.wrapping.layer_classes`); what
            ``experiments/strategies/fsdp.yaml`` sets.
        freeze: name prefixes of reducer/projector parameters kept frozen in this stage (e.g.
            ``["reducer.temporal_qformer", "reducer.temporal_proj"]``: the official B-VLLM pretraining likewise
            freezes its spatial Q-Former); they are still saved, so the next stage starts from them.
        video_token: the placeholder token the data module writes (linked to ``--data.video_token``).
        max_new_tokens: generation length in ``predict``/``test``.
        max_nonfinite_steps: a training step whose loss is NaN or inf is skipped (no update) and its sample ids are
            logged; this many in a row stop the run (1: stop at the first).
        frame_selector: a training-free, query-aware frame selector before the tower (:mod:`lit_bvllm.selectors`:
            ``BOLT``, ``AKS``, ``QFrame``, ``TopK``), composed with any reducer; it has no weights, so it may be set
            on any checkpoint at evaluation. ``--data.question_tokenizer`` then follows its scorer.
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
        weights: str | None = None,
        lora_adapter: str | None = None,
        lr: float = 1e-3,
        lr_llm: float | None = None,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        schedule: Literal["linear", "cosine", "constant"] = "linear",
        gradient_checkpointing: bool = False,
        activation_checkpointing: bool = False,
        freeze: list[str] | None = None,
        video_token: str = VIDEO_TOKEN,
        max_new_tokens: int = 32,
        max_nonfinite_steps: int = 3,
        frame_selector: Callable[[str], FrameSelector] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["reducer", "frame_selector"])
        self.hparams["reducer"] = reducer_spec(reducer)  # class path + init args: what the checkpoint records
        self.hparams["frame_selector"] = None if frame_selector is None else reducer_spec(frame_selector)
        self.reducer_factory, self.selector_factory = reducer, frame_selector
        self.model: VideoLLM | None = None  # built in configure_model
        self.nonfinite_in_a_row = 0
        self.strict_loading = False  # checkpoints hold the trainable tensors only (see on_save_checkpoint)

    def configure_model(self) -> None:
        """Build the model (:meth:`build`), then place it for the strategy (:meth:`place`)."""
        if self.model is not None:
            return
        model = self.build()
        self.place(model)
        self.model = model

    def build(self) -> VideoLLM:
        """Load the backbones, build reducer and projector, set what trains in this stage (freezing, LoRA, gradient
        checkpointing), and load the weights the stage starts from (``weights`` always, ``init_from`` when
        fitting)."""
        h = self.hparams
        model = VideoLLM(h.llm, h.vision_tower, self.reducer_factory, h.feature_layer, h.vision_chunk, h.video_token,
                         h.max_new_tokens, frame_selector=self.selector_factory)
        if h.freeze:
            model.freeze(h.freeze)
        if h.lora_adapter is not None:
            model.load_lora(h.lora_adapter)
        elif h.lora_r > 0:
            model.add_lora(h.lora_r, h.lora_alpha, h.lora_dropout)
        if h.gradient_checkpointing:
            model.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.llm.enable_input_require_grads()
        if h.weights is not None:
            load_visual_weights(model, h.weights, flag="--model.weights")
        if h.init_from is not None and self._fitting():
            load_visual_weights(model, h.init_from)
        return model

    def place(self, model: VideoLLM) -> None:
        """Ready ``model`` for the trainer's strategy: plain DDP needs every visual parameter touched each step
        (``touch_visual``); FSDP2 shards it (:func:`~lit_bvllm.training.wrapping.shard`), with activation
        checkpointing inside the units when asked; otherwise activation checkpointing wraps the layers."""
        strategy = getattr(self._trainer, "strategy", None)
        model.touch_visual = strategy is None or (isinstance(strategy, DDPStrategy)  # plain DDP only
                                                  and not isinstance(strategy, DeepSpeedStrategy))
        if self._device_mesh is not None:  # ModelParallelStrategy (experiments/strategies/fsdp.yaml): FSDP2
            shard(model, self._device_mesh["data_parallel"], checkpointing=self.hparams.activation_checkpointing)
        elif self.hparams.activation_checkpointing:
            checkpoint_layers(model)

    def _fitting(self) -> bool:
        trainer = self._trainer
        return trainer is None or trainer.state.fn == "fit"  # built by hand (no trainer): as a training run would

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict, batch_idx: int) -> dict | None:
        """The loss, and the visual tokens each sample got (``num_tokens``: the run summary reads them from the
        step's outputs); None for a skipped step (a non-finite loss)."""
        out, info = self.model(batch)
        B = batch["input_ids"].shape[0]
        bad = self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(out.loss)), all=False)
        if bad:  # every rank skips together (DDP), so no rank waits for gradients that never come
            return self._skip_nonfinite(batch, out.loss)
        self.nonfinite_in_a_row = 0
        self.log("train/loss", out.loss, prog_bar=True, batch_size=B)
        self.log("train/visual_tokens", info["num_tokens"].float().mean(), batch_size=B)
        return {"loss": out.loss, "num_tokens": info["num_tokens"].detach()}

    def _skip_nonfinite(self, batch: dict, loss: Tensor) -> None:
        """Skip this step (no backward, no update), say which samples, and stop after ``max_nonfinite_steps`` in a
        row."""
        self.nonfinite_in_a_row += 1
        ids = [m.get("id") for m in batch.get("meta", [])]
        message = (f"step {self.global_step}: non-finite loss ({float(loss)}) on samples {ids}; step skipped "
                   f"({self.nonfinite_in_a_row} in a row)")
        rank_zero_warn(message)
        self.log("train/nonfinite_steps", float(self.nonfinite_in_a_row), batch_size=len(ids) or 1)
        if self.nonfinite_in_a_row >= self.hparams.max_nonfinite_steps:
            raise RuntimeError(f"{message}; stopping after {self.nonfinite_in_a_row} non-finite losses in a row "
                               "(--model.max_nonfinite_steps): lower --model.lr / --model.lr_llm, or check these "
                               "samples")
        return None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out, _ = self.model(batch)
        self.log("val/loss", out.loss, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].shape[0])

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        """The model's answers to a benchmark batch: option scores when it carries options (``option_ids``: the
        likelihood mode's collator) or generations, with the info; the evaluator
        (:class:`~lit_bvllm.training.callbacks.BenchmarkEvaluation`) scores them."""
        if "option_ids" in batch:
            output, info = self.model.option_scores(batch)
        else:
            output, info = self.model.generate(batch, return_info=True)
        return {"output": output, "info": info}

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        """One record per item, keyed as ``test``'s predictions are: ``output`` is the model's answer, ``error`` why
        the item's video gave no frames (None when it did: an answer with an error was given blind)."""
        answers = self.model.generate(batch)
        return [{"id": m["id"], "prompt": m.get("prompt", m.get("question")), "output": a.strip(),
                 "error": m.get("error")}
                for i, m, a in zip(batch["index"].tolist(), batch["meta"], answers) if i >= 0]

    def on_test_start(self) -> None:
        self._refuse_sharded_evaluation("test")
        self._warn_if_untrained()

    def on_predict_start(self) -> None:
        self._refuse_sharded_evaluation("predict")
        self._warn_if_untrained()

    def _refuse_sharded_evaluation(self, command: str) -> None:
        """Benchmarks give ranks unequal item counts and generation stops at a different step on each: under a
        strategy that gathers parameters on every rank together (FSDP, DeepSpeed ZeRO-3) that would hang."""
        s = self.trainer.strategy
        sharded = isinstance(s, (FSDPStrategy, ModelParallelStrategy)) or (
            isinstance(s, DeepSpeedStrategy) and s.config.get("zero_optimization", {}).get("stage") == 3)
        if sharded:
            raise RuntimeError(
                f"`lit_bvllm {command}` does not run under {type(s).__name__} (ranks with unequal item counts and "
                "generation lengths would wait on each other's parameter gathers for ever). Evaluate on one device or "
                "with --trainer.strategy ddp, without the strategy config; a sharded checkpoint folder first becomes "
                "one file: lit_bvllm consolidate --ckpt_path DIR")

    def _warn_if_untrained(self) -> None:
        if self.trainer.ckpt_path is None and self.hparams.weights is None:
            rank_zero_warn("evaluating a reducer and projector that were never trained: pass --ckpt_path (a training "
                           "run's checkpoint) or --model.weights (an export folder)")

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self):
        """AdamW over the visual parameters (``lr``) and the LoRA weights (``lr_llm``), with a per-step warm-up and
        decay schedule from ``transformers.get_scheduler``."""
        h = self.hparams
        groups = [{"params": self.model.visual_params(), "lr": h.lr, "name": "visual"}]
        llm = [p for p in self.model.llm.parameters() if p.requires_grad]
        if llm:
            groups.append({"params": llm, "lr": h.lr_llm or h.lr, "name": "llm"})
        opt = torch.optim.AdamW(groups, weight_decay=h.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = get_scheduler(SCHEDULES[h.schedule], opt, num_warmup_steps=int(h.warmup_ratio * total),
                              num_training_steps=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints

    def check_state(self, state: dict, source: str) -> None:
        """Refuse a checkpoint state that lacks a tensor this model trains or a reducer/projector tensor, holds one of
        another shape, or holds visual tensors this model does not have (:func:`~lit_bvllm.weights.check_tensors`)."""
        own = self.state_dict()
        visual = tuple(f"model.{p}" for p in VISUAL_PREFIXES)
        required = (self._trainable_names() | {k for k in own if k.startswith(visual)}) - {
            clean_name(n) for n in unused_names(self)}
        check_tensors(own, state, required, visual, source, "does not hold what this model needs")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        path = getattr(self._trainer, "ckpt_path", None)
        if "state_dict" in checkpoint:  # a sharded checkpoint's tensors were read and checked by ShardedStrategy
            self.check_state(checkpoint["state_dict"], f"--ckpt_path '{path}'")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the reducer and projector whole and the LLM's trainable (LoRA) tensors; the frozen tower and LLM
        come back from their folders."""
        trainable = self._trainable_names()
        visual = tuple(f"model.{p}" for p in VISUAL_PREFIXES)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if k in trainable or k.startswith(visual)}
        _keep_a_cut_epoch_open(self.trainer, checkpoint)

    def _trainable_names(self) -> set[str]:
        """Names of the trainable parameters as the state dict has them (without activation-checkpoint or FSDP
        wrapper segments, which ``named_parameters`` keeps and the state dict drops)."""
        return {clean_name(n) for n, p in self.named_parameters() if p.requires_grad}


def _keep_a_cut_epoch_open(trainer, checkpoint: dict) -> None:
    """A run that reaches ``max_steps`` mid-epoch still closes that epoch in its loop state before the end-of-run
    checkpoint is written, so extending the run (``--ckpt_path last --trainer.max_steps <more>``) would start the next
    epoch and never see the rest of this one. Record it as what it is: the same epoch, ``processed`` batches in, as a
    checkpoint written after that batch would; the data module's position says the same."""
    fit = trainer.fit_loop
    epoch = fit.epoch_progress.current
    done = fit.epoch_loop.batch_progress.current.processed
    total = trainer.num_training_batches
    if not (epoch.completed == epoch.started and isinstance(total, int) and 0 < done < total):
        return  # mid-epoch already, or the epoch really ended
    loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress")
    if loop is None:
        return
    for counts in (loop["current"], loop["total"]):
        counts["processed"] -= 1
        counts["completed"] -= 1
    datamodule = getattr(trainer, "datamodule", None)
    state = checkpoint.get(type(datamodule).__qualname__) if datamodule is not None else None
    if isinstance(state, dict) and "epoch" in state:
        state["epoch"] = epoch.started - 1
