"""LLaMA-VID: two tokens per frame, a text-conditioned context token and a pooled content token.

Li et al., "LLaMA-VID: An Image is Worth 2 Tokens in Large Language Models", §3.1. For frame t with patch tokens
X_t (N x D) and the question:

- a text-conditioned Q-Former makes ``num_queries`` query embeddings, projected to D: ``Q_t``;
- context attention (Eq. 1): ``E_t = mean_q softmax(Q_t K_tᵀ / √D) X_t`` with ``K_t = Linear(X_t)``; the context
  token is ``Linear(E_t)``;
- content token (Eq. 2): the mean of X_t over its N patches.

Both stay at width D; the model's projector maps them into the LLM like every other reducer's output (the
released code projects the context token straight to the LLM width instead). A video of T frames gives 2T tokens
in time order ``[context_1, content_1, context_2, ...]``; at most ``budget // 2`` frames are read, uniformly
spaced, so the budget holds for any length.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lit_bvllm.reducers.base import Reducer, ReducerOutput
from lit_bvllm.reducers.qformer import TextQFormer, vision_layernorm
from lit_bvllm.reducers.sampling import pack, pack_frames


class LLaMAVID(Reducer):
    """LLaMA-VID's context + content tokens (module docstring).

    Args:
        in_dim: vision tower width D.
        budget: θ; ``budget // 2`` frames are read at most.
        num_queries: Q-Former queries per frame (LLaMA-VID: 32).
        hidden_size: Q-Former width.
        num_layers: Q-Former layers.
        num_heads: Q-Former attention heads.
        vocab_size: vocabulary of the question tokenizer; None: ``lit_bvllm`` sets it from that tokenizer as it
            parses the config (:func:`lit_bvllm.cli.commands.link_question_tokenizer`); unused with ``qformer``.
        qformer: local InstructBLIP checkpoint that the Q-Former (``qformer.*``, ``query_tokens``) and ``ln_vision``
            (its ``vision_model.post_layernorm``, when present) start from; its ``qformer_config`` then sets the
            Q-Former's shape (hidden_size, num_layers, num_heads, vocab_size unused). None: random initialisation.
    """

    needs_text = True

    inference_args = frozenset({"budget"})  # may change on a trained model (Reducer.inference_args)

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> LLaMAVID:
        return cls(in_dim, budget=12, num_queries=4, hidden_size=16, num_layers=2, num_heads=2, vocab_size=50)

    def __init__(
        self,
        in_dim: int,
        budget: int = 512,
        num_queries: int = 32,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        vocab_size: int | None = None,
        qformer: str | None = None,
    ):
        super().__init__()
        if budget < 2:
            raise ValueError(f"LLaMAVID needs budget >= 2 (two tokens per frame), got {budget}")
        self.in_dim = self.out_dim = in_dim
        self.budget, self.num_queries = budget, num_queries
        self.ln_vision = vision_layernorm(in_dim, qformer)  # LAVIS's ln_vision
        self.qformer = TextQFormer(in_dim, num_queries, hidden_size, num_layers, num_heads, vocab_size,
                                   pretrained=qformer)
        self.query_proj = nn.Linear(self.qformer.hidden_size, in_dim)  # vlm_att_projector
        self.key_proj = nn.Linear(in_dim, in_dim)  # vlm_att_key_projector
        self.context_proj = nn.Linear(in_dim, in_dim)  # vlm_att_val_projector, kept at width D

    @property
    def max_frames(self) -> int:
        return self.budget // 2

    def forward(self, frames, cls, frame_mask, text_ids=None, text_mask=None, cls_attn=None) -> ReducerOutput:
        if text_ids is None:
            raise ValueError("LLaMAVID is text-conditioned: pass the question as text_ids/text_mask")
        if text_mask is None:
            text_mask = torch.ones_like(text_ids)
        x, valid, index = pack_frames(frames, self.frames_to_encode(frame_mask))  # (B, T', N, D)
        cls_kept = torch.gather(cls, 1, index.clamp_min(0)[..., None].expand(-1, -1, cls.shape[-1]))  # (B, T', D)
        B, T, N, D = x.shape
        rows = valid.nonzero(as_tuple=True)  # only real frames go through the Q-Former
        feats = x[rows]  # (K, N, D)
        visual = self.ln_vision(torch.cat([cls_kept[rows][:, None], feats], 1))  # (K, 1+N, D): [CLS] and patches
        q = self.qformer(self.num_queries, visual, torch.ones(visual.shape[:2], dtype=torch.bool, device=x.device),
                         text_ids[rows[0]], text_mask[rows[0]])
        q = self.query_proj(q)  # (K, num_queries, D)
        k = self.key_proj(feats)  # (K, N, D)
        attn = torch.softmax(torch.einsum("kqd,knd->kqn", q.float(), k.float()) / math.sqrt(D), dim=-1)
        context = self.context_proj(torch.einsum("kqn,knd->kd", attn.to(feats.dtype), feats) / self.num_queries)
        content = feats.mean(1)  # (K, D)
        tokens = x.new_zeros(B, T, 2, D)
        tokens[rows] = torch.stack([context, content], 1).to(x.dtype)  # (K, 2, D) -> (B, T', 2, D)
        mask = valid[..., None].expand(B, T, 2)
        out, out_mask = pack(tokens.flatten(1, 2), mask.flatten(1, 2))  # (B, 2T', D), time order
        attention = x.new_zeros(B, T, N)
        attention[rows] = attn.mean(1).to(x.dtype)  # (K, N) query-averaged context attention
        info = {"frame_indices": index, "context_attention": attention.detach(), "num_tokens": out_mask.sum(1)}
        return ReducerOutput(out, out_mask, info)
