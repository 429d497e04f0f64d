"""``VideoLLM``: frozen vision tower -> token reducer -> projector -> LLM, as one plain ``nn.Module``.

It knows nothing of Lightning: training stages, optimisation and evaluation live in
:class:`lit_bvllm.training.lit_module.VideoLLMModule`, which holds one of these as ``.model``; an export
(:func:`lit_bvllm.export.load_exported`) is one of these too.

Batch contract (what the data modules' collators produce; ``B`` samples, ``T`` frame slots, ``L`` text tokens):

- ``frames`` ``(B, T, 3, H, W)`` tower input, ``frame_mask`` ``(B, T)`` bool (real frames), ``frame_times`` ``(B, T)``
  seconds;
- ``input_ids``, ``attention_mask`` ``(B, L)``: each row holds at most one placeholder (``video_token``), where the
  row's visual tokens are spliced (:func:`lit_bvllm.splice.splice`); ``labels`` ``(B, L)`` for the loss (-100:
  not supervised);
- optional ``question_ids``, ``question_mask`` ``(B, Q)``: the question, for text-conditioned reducers (B-VLLM §3.2)
  and frame selectors (:mod:`lit_bvllm.selectors`, in their scorer's tokenizer);
- option scoring only: ``option_ids``, ``option_mask``, ``option_labels`` ``(sum_b K_b, L')``, one row per option
  (prompt + option), and ``num_options`` ``(B,)``.

``info``: every forward path also returns the reducer's info dict: ``num_tokens`` ``(B,)`` visual tokens each sample
gave the LLM, ``frames_encoded`` ``(B,)`` frames the tower encoded, and for frame-selecting reducers
``kept_frames`` ``(B, n)`` the positions in ``frames`` whose content reached the LLM (-1: empty slot), plus what the
reducer adds itself (:class:`lit_bvllm.reducers.base.ReducerOutput`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel, get_peft_model
from torch import Tensor, nn

from datamodules.conversation import IGNORE_INDEX
from lit_bvllm.backbones import VIDEO_TOKEN, load_llm, load_tokenizer
from lit_bvllm.flops import with_prefill
from lit_bvllm.projector import Projector
from lit_bvllm.reducers.base import Reducer, SelectedFrames
from lit_bvllm.selectors import FrameSelector
from lit_bvllm.splice import splice
from lit_bvllm.vision import VisionEncoder
from lit_bvllm.weights import VISUAL_PREFIXES


class VideoLLM(nn.Module):
    """A video LLM whose visual tokens pass through a token-reduction strategy.

    Args:
        llm: local folder of the causal LM and its tokenizer (Qwen2 by default).
        vision_tower: local folder of the HF vision tower (CLIP / SigLIP).
        reducer: the token-reduction strategy: a ``Reducer`` class (or partial) built with the tower's width.
        feature_layer: vision layer whose tokens feed the reducer (-2: penultimate, as LLaVA and B-VLLM).
        vision_chunk: frames per vision-tower call.
        video_token: the placeholder token the data writes.
        max_new_tokens: default generation length.
        tokenizer: local folder of the tokenizer when it is not ``llm``'s (an export's adapter folder).
        frame_selector: a training-free frame selector (:mod:`lit_bvllm.selectors`: a class or partial built with
            ``vision_tower``) that picks the frames the tower encodes and the reducer sees, from the question; None:
            every frame goes to the reducer (which may pick its own).
    """

    def __init__(self, llm: str, vision_tower: str, reducer: Callable[[int], Reducer], feature_layer: int = -2,
                 vision_chunk: int = 64, video_token: str = VIDEO_TOKEN, max_new_tokens: int = 32,
                 tokenizer: str | None = None, frame_selector: Callable[[str], FrameSelector] | None = None):
        super().__init__()
        self.config = {"llm": str(llm), "vision_tower": str(vision_tower), "reducer": reducer_spec(reducer),
                       "feature_layer": feature_layer, "vision_chunk": vision_chunk, "video_token": video_token,
                       "max_new_tokens": max_new_tokens,
                       "frame_selector": None if frame_selector is None else reducer_spec(frame_selector)}
        self.max_new_tokens = max_new_tokens
        self.touch_visual = True  # the DDP keep-alive term (embed); VideoLLMModule turns it off under other strategies
        self.two_pass = True  # evaluation: [CLS] of every frame, patches of the picked ones (visual_tokens)
        self.tokenizer = load_tokenizer(tokenizer or llm, video_token, "--model.llm")
        self.placeholder_id = self.tokenizer.convert_tokens_to_ids(video_token)
        self.vision = VisionEncoder(vision_tower, feature_layer, vision_chunk)
        self.reducer = reducer(self.vision.width)
        self.selector = None if frame_selector is None else frame_selector(str(vision_tower))
        if not self.reducer.budget >= 1:  # θ: the visual tokens one sample may give the LLM
            raise ValueError(f"--model.reducer: {type(self.reducer).__name__}'s budget θ is {self.reducer.budget}; it "
                             "must be >= 1 (--model.reducer.init_args.budget / num_tokens)")
        self.llm = load_llm(llm).requires_grad_(False)
        if self.llm.get_input_embeddings().num_embeddings < len(self.tokenizer):  # the placeholder was added
            self.llm.resize_token_embeddings(len(self.tokenizer))
        self.projector = Projector(self.reducer.out_dim, self.llm.config.hidden_size)

    # ------------------------------------------------------------------ what trains

    def freeze(self, prefixes: list[str]) -> None:
        """Freeze the reducer/projector parameters under ``prefixes``. A stage config names its reducer's modules, and
        swapping the reducer must not break it: a prefix the reducer does not have is reported, not an error."""
        for prefix in prefixes:
            if not prefix.startswith(VISUAL_PREFIXES):
                raise ValueError(f"--model.freeze: '{prefix}' must start with 'reducer.' or 'projector.' (the LLM and "
                                 "the vision tower are frozen already; LoRA is --model.lora_r)")
            params = [p for n, p in self.named_parameters() if n.startswith(prefix)]
            if not params:
                warnings.warn(f"--model.freeze: this reducer ({type(self.reducer).__name__}) has no parameters under "
                              f"'{prefix}'; nothing frozen for it", stacklevel=2)
            for p in params:
                p.requires_grad_(False)

    def add_lora(self, r: int, alpha: int, dropout: float) -> None:
        """Trainable LoRA (peft) on every linear layer of the LLM except its output head ("all-linear")."""
        self.llm = get_peft_model(self.llm, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                                       target_modules="all-linear"))

    def load_lora(self, adapter: str) -> None:
        """A saved peft LoRA adapter (an export's ``adapter/``, a local folder) onto the LLM, frozen."""
        if not (Path(adapter) / "adapter_config.json").is_file():  # peft would look a missing path up on the hub
            raise FileNotFoundError(f"--model.lora_adapter '{adapter}' is not a local LoRA adapter folder (no "
                                    "adapter_config.json); lit_bvllm loads only local folders")
        self.llm = PeftModel.from_pretrained(self.llm, adapter, local_files_only=True)

    def visual_params(self) -> list[nn.Parameter]:
        """The trainable reducer and projector parameters."""
        return [p for m in (self.reducer, self.projector) for p in m.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ forward

    def visual_tokens(self, batch: dict) -> tuple[Tensor, Tensor, dict]:
        """Frames -> (visual tokens in LLM space ``(B, M, H)``, mask ``(B, M)``, info)."""
        r, extra_info = self.reducer, {}
        if self.selector is not None:  # before the tower: the frames it keeps are the video the reducer sees
            chosen, scores = self.selector(batch["frames"], batch["frame_mask"], batch.get("question_ids"),
                                           batch.get("question_mask"))
            batch = {**batch, "frame_mask": chosen}
            extra_info = {"selector_scores": scores, "selector_frames": chosen.sum(1)}
        keep = r.frames_to_encode(batch["frame_mask"])
        # a reducer that picks its frames from [CLS] alone (B-VLLM's hard selection at evaluation) reads the patches
        # of those frames only: [CLS] of every frame first, then the picked frames' patches (one pass keeps every
        # frame's: 7.9 GiB of an hour's 14 with CLIP-L/336)
        two_pass = self.two_pass and getattr(r, "selects_from_cls", False) and batch.get("question_ids") is not None
        enc = self.vision(batch["frames"], batch["frame_mask"], keep, attention=r.needs_cls_attention,
                          patches=not two_pass, keys=r.needs_keys)
        weight = next(self.projector.parameters())
        B = batch["frame_mask"].shape[0]
        if enc["frame_mask"].shape[1] == 0:  # no sample of the batch has a frame (text only): nothing to reduce
            hidden = self.llm.get_input_embeddings().embedding_dim
            empty = torch.zeros(B, dtype=torch.long, device=weight.device)
            return weight.new_zeros(B, 0, hidden), torch.zeros(B, 0, dtype=torch.bool, device=weight.device), {
                "num_tokens": empty, "frames_encoded": empty}
        extra = {}
        if r.needs_evidence:  # batch["frame_evidence"] (B, T), the frames inside the needle spans -> (B, T') encoded
            evidence, index = batch.get("frame_evidence"), enc["frame_index"]  # None: the batch has none (training)
            if evidence is not None:
                evidence = torch.gather(evidence, 1, index.clamp_min(0)) & (index >= 0)
            extra["evidence"] = evidence
        if r.needs_keys:
            extra["keys"] = enc["keys"]
        frames = self._picked_patches(batch, enc) if two_pass else enc["frames"]
        out = r(frames, enc["cls"], enc["frame_mask"], text_ids=batch.get("question_ids"),
                text_mask=batch.get("question_mask"), cls_attn=enc.get("cls_attn"), **extra)
        tokens = self.projector(out.tokens.to(weight.dtype)) * out.token_mask[..., None]
        info = {**out.info, **extra_info, "frames_encoded": enc["frame_mask"].sum(1),  # through the tower
                "patches_encoded": (frames.slot >= 0).sum(1) if two_pass else enc["frame_mask"].sum(1)}
        if "frame_indices" in out.info:  # the frames whose content reaches the LLM, as positions in batch["frames"]
            info["kept_frames"] = kept_frames(out.info, enc["frame_index"])
        elif self.selector is not None:  # a reducer that reads every frame it is given: the selector's frames
            info["kept_frames"] = enc["frame_index"]
        return tokens, out.token_mask, info

    def _picked_patches(self, batch: dict, enc: dict) -> SelectedFrames:
        """The second pass: the patches of the frames the reducer's selection picks from ``enc``'s [CLS] tokens
        (:meth:`~lit_bvllm.reducers.bvllm.BVLLM.frames_needed`), encoded alone, and where each encoded frame's sit."""
        need, selection = self.reducer.frames_needed(enc["cls"], enc["frame_mask"], batch["question_ids"],
                                                     batch.get("question_mask"))  # need: (B, L*) encoded positions
        index = enc["frame_index"]  # (B, T') their positions in batch["frames"]
        B, T = batch["frame_mask"].shape
        picked = torch.zeros(B, index.shape[1], dtype=torch.long, device=index.device)
        picked.scatter_reduce_(1, need.clamp_min(0), (need >= 0).long(), "amax")
        keep = torch.zeros(B, T + 1, dtype=torch.long, device=index.device)  # column T: padding's
        keep.scatter_reduce_(1, torch.where(index >= 0, index, T), picked, "amax")
        second = self.vision(batch["frames"], batch["frame_mask"], keep[:, :T].bool())
        where = torch.full((B, T + 1), -1, dtype=torch.long, device=index.device)  # batch frame -> its patches' slot
        index2 = second["frame_index"]
        where.scatter_(1, torch.where(index2 >= 0, index2, T),
                       torch.arange(index2.shape[1], device=index.device).expand_as(index2).contiguous())
        where[:, T] = -1
        return SelectedFrames(second["frames"], torch.gather(where, 1, torch.where(index >= 0, index, T)), selection)

    def splice(self, input_ids: Tensor, attention_mask: Tensor, visual: Tensor, visual_mask: Tensor,
               labels: Tensor | None = None, padding_side: str = "right"):
        """Embed ``input_ids`` and put each row's visual tokens at its placeholder: ``(embeds, mask, labels)``."""
        text = self.llm.get_input_embeddings()(input_ids.clamp_min(0))
        return splice(text, input_ids, attention_mask, visual.to(text.dtype), visual_mask, self.placeholder_id, labels,
                      padding_side)

    def embed(self, batch: dict, padding_side: str = "right", with_labels: bool = True):
        """Spliced ``inputs_embeds``, ``attention_mask`` and labels (or None) for the LLM, and the info."""
        visual, vmask, info = self.visual_tokens(batch)
        embeds, mask, labels = self.splice(batch["input_ids"], batch["attention_mask"], visual, vmask,
                                           batch["labels"] if with_labels else None, padding_side)
        if torch.is_grad_enabled() and self.touch_visual:
            # text-only batches still touch every trainable visual parameter, so DDP never sees an unused one (the
            # sharding strategies have no unused-parameter check, and their parameters outside a unit's forward are
            # shards, possibly empty ones)
            embeds = embeds + sum(p.view(-1)[0] for p in self.visual_params()) * 0.0
        return embeds, mask, labels, info

    def forward(self, batch: dict, with_labels: bool = True):
        """The LLM's output over the spliced batch (``.loss`` from ``labels`` when ``with_labels``, ``.logits``
        ``(B, L', V)``) and the info."""
        embeds, mask, labels, info = self.embed(batch, with_labels=with_labels)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False), info

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int | None = None, return_info: bool = False):
        """Greedy, batched answers with the KV cache, from prompts ending with the assistant header (left-padded);
        ``(answers, info)`` with ``return_info``."""
        visual, vmask, info = self.visual_tokens(batch)
        embeds, mask, _ = self.splice(batch["input_ids"], batch["attention_mask"], visual, vmask, padding_side="left")
        pruning, info = self._in_llm(batch["input_ids"], batch["attention_mask"], vmask, "left", info)
        info = with_prefill(info, self.llm, mask.sum(1))
        with pruning:
            out = self.llm.generate(inputs_embeds=embeds, attention_mask=mask,
                                    max_new_tokens=max_new_tokens or self.max_new_tokens, do_sample=False,
                                    num_beams=1, use_cache=True, eos_token_id=self.tokenizer.eos_token_id,
                                    pad_token_id=self.tokenizer.pad_token_id)
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return (texts, info) if return_info else texts

    @torch.no_grad()
    def option_scores(self, batch: dict) -> tuple[Tensor, dict]:
        """Multiple choice by option likelihood (lmms-eval's ``mcppl``): the mean token log-likelihood of every option
        continuation, ``(B, K_max)`` (``-inf`` where a sample has fewer options), and the info.

        The prompt and visual tokens run once per item: the prefix its option rows share (up to the first scored
        token, the placeholder inside it) is one LLM pass whose KV cache every option row of the item continues
        from, in one batched pass over the option tokens only. K options cost one prefill of the video prefix, not K
        (:meth:`option_scores_unshared`, the K-row path, gives the same scores; it runs when no prefix with the
        placeholder is shared)."""
        visual, vmask, info = self.visual_tokens(batch)
        ids, amask, labels = batch["option_ids"], batch["option_mask"].bool(), batch["option_labels"]
        k = batch["num_options"]
        owner = torch.repeat_interleave(torch.arange(len(k), device=k.device), k)  # (R,) item of each option row
        first = torch.cumsum(k, 0) - k  # (B,) each item's first row
        same = (ids == ids[first][owner]) & amask & amask[first][owner]
        scored = labels != IGNORE_INDEX
        first_label = torch.where(scored.any(1), scored.long().argmax(1), ids.shape[1])
        row_cut = torch.minimum(same.long().cumprod(1).sum(1), first_label)  # (R,) shared, and before any target
        cut = torch.full_like(k, ids.shape[1]).scatter_reduce(0, owner, row_cut, "amin")  # (B,)
        is_ph = (ids == self.placeholder_id) & amask
        ph_pos = torch.where(is_ph.any(1), is_ph.long().argmax(1), -1)
        shared = (cut >= 1).all() & ((ph_pos < cut[owner]) & (is_ph.any(1) | ~vmask.any(1)[owner])).all()
        if not bool(shared):
            return self.option_scores_unshared(batch, (visual, vmask, info))
        # the prefix: one left-padded row per item, so that its last token's logits are the last column
        cols = torch.arange(ids.shape[1], device=ids.device)
        pre_len = int(cut.max())
        pre_mask = (amask[first] & (cols < cut[:, None]))[:, :pre_len]
        embeds, mask, _ = self.splice(ids[first][:, :pre_len], pre_mask, visual, vmask, padding_side="left")
        positions = (mask.cumsum(1) - 1).clamp_min(0)  # as a right-padded row numbers them: the K-row path's
        pruning, info = self._in_llm(ids[first][:, :pre_len], pre_mask, vmask, "left", info)
        info = with_prefill(info, self.llm, mask.sum(1))
        with pruning as pruned:
            out = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                           logits_to_keep=1)
            if pruned is not None:
                pruned.rows = owner  # the option rows continue their item's pruned prompt
            predicted, cont_labels = self._continue(out, mask, ids, amask, labels, cut, owner)
        info["option_greedy"] = self._greedy(predicted, cont_labels, k, owner)
        return self._mean_option_logp(predicted, cont_labels, k, owner), info

    def _continue(self, out, mask: Tensor, ids: Tensor, amask: Tensor, labels: Tensor, cut: Tensor,
                  owner: Tensor) -> tuple[Tensor, Tensor]:
        """The option rows from each item's cut on, continuing its prefix's KV cache: the logits that predict
        each continuation token and the continuation's labels."""
        cache = out.cache
        cache.reorder_cache(owner)  # every option row of an item continues from its prefix
        # the continuations: each row's tokens from its item's cut on, right-padded
        start = cut[owner]
        width = int((amask.sum(1) - start).max())
        at = start[:, None] + torch.arange(width, device=ids.device)
        inside = at < ids.shape[1]
        at = at.clamp_max(ids.shape[1] - 1)
        cont_mask = amask.gather(1, at) & inside
        cont_labels = labels.gather(1, at).masked_fill(~cont_mask, IGNORE_INDEX)
        cont = self.llm.get_input_embeddings()(ids.gather(1, at).clamp_min(0))
        length = mask.sum(1)[owner]  # the prefix's tokens in each row: the continuation's first position
        logits = self.llm(inputs_embeds=cont, attention_mask=torch.cat([mask[owner], cont_mask.long()], 1),
                          position_ids=length[:, None] + torch.arange(width, device=ids.device),
                          cache=cache, use_cache=True).logits
        # token j of a continuation is predicted by the token before it: the prefix's last one for j = 0
        return torch.cat([out.logits[:, -1:][owner], logits[:, :-1]], 1), cont_labels

    def _in_llm(self, ids: Tensor, mask: Tensor, vmask: Tensor, padding_side: str, info: dict):
        """The context in which the LLM's calls run the reducer's in-LLM stage (FastV's pruning: a
        :class:`~lit_bvllm.reducers.fastv.PrunedPrefill`) on the prompts ``ids``/``mask`` once spliced, and ``info``
        with the tokens it keeps from its layer on (``llm_kept``, ``llm_layer``, for the prefill FLOPs); a context
        that does nothing (yielding None) for any other reducer, or when no sample has a visual token."""
        r = self.reducer
        if r.stage != "in_llm" or not bool(vmask.any()):
            return contextlib.nullcontext(), info
        from lit_bvllm.reducers.fastv import PrunedPrefill

        marker = vmask.new_ones(vmask.shape, dtype=torch.float32)[..., None]  # (B, M, 1): 1 where a visual token goes
        where, spliced, _ = splice(torch.zeros(*ids.shape, 1, device=ids.device), ids, mask, marker, vmask,
                                   self.placeholder_id, padding_side=padding_side)
        visual = where[..., 0] > 0
        n = visual.sum(1)
        info = {**info, "llm_kept": spliced.sum(1) - n + r.kept(n), "llm_layer": torch.tensor(r.layer)}
        return PrunedPrefill(self.llm, r).active(visual), info

    @torch.no_grad()
    def option_scores_unshared(self, batch: dict, visual_tokens: tuple | None = None) -> tuple[Tensor, dict]:
        """:meth:`option_scores` with one full row per option (prompt, visual tokens and option, each row its own
        prefill): the reference the shared-prefix path equals, and its fallback."""
        visual, vmask, info = visual_tokens or self.visual_tokens(batch)
        if self.reducer.stage == "in_llm" and bool(vmask.any()):
            raise ValueError(f"{type(self.reducer).__name__} prunes inside the LLM at the prompt's prefill, and this "
                             "batch's option rows share no prompt with the placeholder (the one-row-per-option path); "
                             "evaluate a benchmark whose options follow one prompt, or another reducer")
        k = batch["num_options"]
        owner = torch.repeat_interleave(torch.arange(len(k), device=k.device), k)  # (sum K,) item of each option row
        embeds, mask, labels = self.splice(batch["option_ids"], batch["option_mask"], visual[owner], vmask[owner],
                                           batch["option_labels"])
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        info = {**info, "option_greedy": self._greedy(logits[:, :-1], labels[:, 1:], k, owner)}
        first = torch.cumsum(k, 0) - k  # each item's first row: its prompt ends before its first scored token
        scored = labels[first] != IGNORE_INDEX
        info = with_prefill(info, self.llm, torch.where(scored.any(1), scored.long().argmax(1), mask[first].sum(1)))
        return self._mean_option_logp(logits[:, :-1], labels[:, 1:], k, owner), info

    @staticmethod
    def _greedy(predicted: Tensor, targets: Tensor, k: Tensor, owner: Tensor) -> Tensor:
        """``(B, K_max)`` whether each option is what greedy decoding writes (every target token the argmax of the
        logits before it: lmms-eval's ``is_greedy``), False where an item has fewer options."""
        hit = ((predicted.argmax(-1) == targets) | (targets == IGNORE_INDEX)).all(1)  # (sum K,)
        return VideoLLM._per_item(hit, k, owner, False)

    @staticmethod
    def _per_item(values: Tensor, k: Tensor, owner: Tensor, fill) -> Tensor:
        """``(sum K,)`` values of the option rows -> ``(B, K_max)`` by item, ``fill`` where an item has fewer."""
        out = torch.full((len(k), int(k.max())), fill, dtype=values.dtype, device=values.device)
        slot = torch.arange(len(owner), device=k.device) - torch.repeat_interleave(torch.cumsum(k, 0) - k, k)
        out[owner, slot] = values
        return out

    @staticmethod
    def _mean_option_logp(predicted: Tensor, targets: Tensor, k: Tensor, owner: Tensor) -> Tensor:
        """``(B, K_max)`` mean log-likelihood of each row's targets (``predicted[:, j]`` the logits for
        ``targets[:, j]``), ``-inf`` where an item has fewer options."""
        scored = targets != IGNORE_INDEX
        logp = F.log_softmax(predicted.float(), -1).gather(-1, targets.clamp_min(0)[..., None]).squeeze(-1)
        mean = (logp * scored).sum(1) / scored.sum(1).clamp_min(1)  # (sum K,)
        return VideoLLM._per_item(mean, k, owner, float("-inf"))


def kept_frames(info: dict, frame_index: Tensor) -> Tensor:
    """``(B, n)`` positions in the batch's frames of a reducer's ``frame_indices`` (positions among the encoded
    frames, ``frame_index (B, T')`` maps them back), -1 where a slot holds no frame."""
    idx = info["frame_indices"].long()
    valid = (idx >= 0) & info.get("frame_valid", torch.ones_like(idx, dtype=torch.bool)).bool()
    if frame_index.shape[1] == 0:
        return torch.full_like(idx, -1)
    source = torch.gather(frame_index, 1, idx.clamp(0, frame_index.shape[1] - 1))
    return torch.where(valid & (source >= 0), source, -1)


def reducer_spec(factory) -> dict:
    """``{"class_path", "init_args"}`` of a reducer (or frame selector) factory (a class, or a partial of one as
    jsonargparse builds it): what a checkpoint and an export record."""
    if isinstance(factory, functools.partial):
        cls = factory.func if isinstance(factory.func, type) else next(a for a in factory.args if isinstance(a, type))
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(factory.keywords)}
    if isinstance(factory, type):
        return {"class_path": f"{factory.__module__}.{factory.__qualname__}", "init_args": {}}
    raise TypeError("reducer must be a Reducer class or a class path with init_args "
                    "(a callable taking the tower width)")


def reducer_factory(spec: dict) -> Callable[[int], Reducer]:
    """The inverse of :func:`reducer_spec`."""
    module, name = spec["class_path"].rsplit(".", 1)
    return functools.partial(getattr(importlib.import_module(module), name), **spec.get("init_args", {}))
