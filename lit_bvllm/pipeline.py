"""The forward path shared by the Lightning ``VideoLLM`` and an exported model: no Lightning imported here.

``m`` is any object with ``vision`` (:class:`~lit_bvllm.vision.VisionEncoder`), ``reducer``, ``projector``,
``llm``, ``tokenizer`` and ``placeholder_id``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_bvllm.splice import splice


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
    return tokens, out.token_mask, {**out.info, "frames_encoded": enc["frame_mask"].sum(1)}


def embed(m, batch: dict, padding_side: str = "right", with_labels: bool = True):
    """Spliced ``inputs_embeds``, ``attention_mask`` and labels (or None) for the LLM, and the reducer info."""
    text = m.llm.get_input_embeddings()(batch["input_ids"].clamp_min(0))
    visual, vmask, info = visual_tokens(m, batch)
    embeds, mask, labels = splice(text, batch["input_ids"], batch["attention_mask"], visual.to(text.dtype), vmask,
                                  m.placeholder_id, batch["labels"] if with_labels else None, padding_side)
    return embeds, mask, labels, info


@torch.no_grad()
def generate(m, batch: dict, max_new_tokens: int) -> list[str]:
    """Greedy, batched answers with the KV cache, from prompts ending with the assistant header."""
    embeds, mask, _, _ = embed(m, batch, padding_side="left", with_labels=False)
    out = m.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         num_beams=1, use_cache=True, eos_token_id=m.tokenizer.eos_token_id,
                         pad_token_id=m.tokenizer.pad_token_id)
    return m.tokenizer.batch_decode(out, skip_special_tokens=True)
