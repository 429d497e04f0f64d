"""The parts and the forward path shared by the Lightning ``VideoLLM`` and an exported model (no Lightning here).

``m`` is any ``nn.Module`` that :func:`build` filled in: ``vision`` (:class:`~lit_bvllm.vision.VisionEncoder`),
``reducer``, ``projector``, ``llm``, ``tokenizer`` and ``placeholder_id``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_bvllm.backbones import load_llm, load_tokenizer
from lit_bvllm.projector import Projector
from lit_bvllm.splice import splice
from lit_bvllm.vision import VisionEncoder


def build(m: nn.Module, llm: str, vision_tower: str, reducer: Callable[[int], nn.Module], feature_layer: int,
          vision_chunk: int, video_token: str) -> None:
    """Load the tokenizer, tower and LLM from local folders and build the reducer and projector onto ``m``."""
    m.tokenizer = load_tokenizer(llm, video_token)
    m.placeholder_id = m.tokenizer.convert_tokens_to_ids(video_token)
    m.vision = VisionEncoder(vision_tower, feature_layer, vision_chunk)
    m.reducer = reducer(m.vision.width)
    m.llm = load_llm(llm)
    if m.llm.get_input_embeddings().num_embeddings < len(m.tokenizer):  # the placeholder was added to the vocabulary
        m.llm.resize_token_embeddings(len(m.tokenizer))
    m.projector = Projector(m.reducer.out_dim, m.llm.config.hidden_size)


def visual_tokens(m, batch: dict) -> tuple[Tensor, Tensor, dict]:
    """Frames -> (visual tokens in LLM space ``(B, M, H)``, mask ``(B, M)``, reducer info)."""
    r = m.reducer
    keep = r.frames_to_encode(batch["frame_mask"])
    enc = m.vision(batch["frames"], batch["frame_mask"], keep, attention=r.needs_cls_attention)
    weight = next(m.projector.parameters())
    B = batch["frame_mask"].shape[0]
    if enc["frame_mask"].shape[1] == 0:  # no sample of the batch has a frame (text only): nothing to reduce
        hidden = m.llm.get_input_embeddings().embedding_dim
        empty = torch.zeros(B, dtype=torch.long, device=weight.device)
        return weight.new_zeros(B, 0, hidden), torch.zeros(B, 0, dtype=torch.bool, device=weight.device), {
            "num_tokens": empty, "frames_encoded": empty}
    out = r(enc["frames"], enc["cls"], enc["frame_mask"], text_ids=batch.get("question_ids"),
            text_mask=batch.get("question_mask"), cls_attn=enc.get("cls_attn"))
    tokens = m.projector(out.tokens.to(weight.dtype)) * out.token_mask[..., None]
    info = {**out.info, "frames_encoded": enc["frame_mask"].sum(1)}
    if "frame_indices" in out.info:  # the frames whose content reaches the LLM, as positions in batch["frames"]
        info["kept_frames"] = kept_frames(out.info, enc["frame_index"])
    return tokens, out.token_mask, info


def kept_frames(info: dict, frame_index: Tensor) -> Tensor:
    """``(B, n)`` positions in the batch's frames of a reducer's ``frame_indices`` (positions among the encoded
    frames, ``frame_index (B, T')`` maps them back), -1 where a slot holds no frame."""
    idx = info["frame_indices"].long()
    valid = (idx >= 0) & info.get("frame_valid", torch.ones_like(idx, dtype=torch.bool)).bool()
    if frame_index.shape[1] == 0:
        return torch.full_like(idx, -1)
    source = torch.gather(frame_index, 1, idx.clamp(0, frame_index.shape[1] - 1))
    return torch.where(valid & (source >= 0), source, -1)


def splice_text(m, input_ids: Tensor, attention_mask: Tensor, visual: Tensor, visual_mask: Tensor,
                labels: Tensor | None = None, padding_side: str = "right"):
    """Embed ``input_ids`` and put each row's visual tokens at its placeholder: ``(embeds, mask, labels)``."""
    text = m.llm.get_input_embeddings()(input_ids.clamp_min(0))
    return splice(text, input_ids, attention_mask, visual.to(text.dtype), visual_mask, m.placeholder_id, labels,
                  padding_side)


def embed(m, batch: dict, padding_side: str = "right", with_labels: bool = True):
    """Spliced ``inputs_embeds``, ``attention_mask`` and labels (or None) for the LLM, and the reducer info."""
    visual, vmask, info = visual_tokens(m, batch)
    embeds, mask, labels = splice_text(m, batch["input_ids"], batch["attention_mask"], visual, vmask,
                                       batch["labels"] if with_labels else None, padding_side)
    return embeds, mask, labels, info


@torch.no_grad()
def generate(m, batch: dict, max_new_tokens: int, return_info: bool = False) -> list[str] | tuple[list[str], dict]:
    """Greedy, batched answers with the KV cache, from prompts ending with the assistant header (and the reducer
    info with ``return_info``)."""
    embeds, mask, _, info = embed(m, batch, padding_side="left", with_labels=False)
    out = m.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         num_beams=1, use_cache=True, eos_token_id=m.tokenizer.eos_token_id,
                         pad_token_id=m.tokenizer.pad_token_id)
    texts = m.tokenizer.batch_decode(out, skip_special_tokens=True)
    return (texts, info) if return_info else texts
