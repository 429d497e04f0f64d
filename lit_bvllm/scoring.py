"""Scoring multiple-choice items by option likelihood (lmms-eval's ``mcppl``): one forward pass over every option."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.conversation import IGNORE_INDEX
from lit_bvllm import pipeline


@torch.no_grad()
def option_scores(model, batch: dict) -> tuple[Tensor, dict]:
    """Mean token log-likelihood of every option continuation: ``(B, K_max)``, ``-inf`` where a sample has fewer;
    and the reducer's info."""
    visual, vmask, info = pipeline.visual_tokens(model, batch)  # computed once per item, shared by its K options
    k = batch["num_options"]
    owner = torch.repeat_interleave(torch.arange(len(k), device=k.device), k)  # (B*K,) item of each option row
    embeds, mask, labels = pipeline.splice_text(model, batch["option_ids"], batch["option_mask"], visual[owner],
                                                vmask[owner], batch["option_labels"])
    logits = model.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
    targets = labels[:, 1:]
    scored = targets != IGNORE_INDEX
    logp = F.log_softmax(logits[:, :-1].float(), -1).gather(-1, targets.clamp_min(0)[..., None]).squeeze(-1)
    mean = (logp * scored).sum(1) / scored.sum(1).clamp_min(1)  # (B*K,)
    out = torch.full((len(k), int(k.max())), float("-inf"), device=mean.device)
    slot = torch.arange(len(owner), device=k.device) - torch.repeat_interleave(torch.cumsum(k, 0) - k, k)
    out[owner, slot] = mean
    return out, info
