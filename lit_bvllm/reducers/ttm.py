"""BLIP-3-Video's grouped Token Turing Machine (the ``'gttm'`` temporal encoder): a recurrent memory per token index.

BLIP-3-Video (Ryoo et al., arXiv 2410.16267), §2.2 "Sequential Model" and §3.1: a Token Turing Machine (Ryoo et al.
2023) used "in a 'grouped' fashion, maintaining a separate memory of size G for each of N tokens over time", with
"time-stamped positional encodings to embed the frame index of each token", a processor of Transformer layers,
TokenLearners for the memory write, and a final output "attentionally pooled from the final memory (whose size is
N·G)". Per step ``t`` and token index ``j``::

    [h_j ‖ v_(j,t)] --processor--> P_j          (G + 1 tokens, all j and all samples in one batch)
    h_j <- TokenLearnerPool_G([h_j ‖ P_j])      (2G + 1 -> G tokens)

and after the last step the ``N·G`` memory tokens are pooled to ``M`` by a :class:`TokenLearnerPool`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from lit_bvllm.reducers.base import Reducer, ReducerOutput
from lit_bvllm.reducers.sampling import pack_frames
from lit_bvllm.reducers.tokenlearner import TokenLearnerPool


def timestamp_encoding(positions: Tensor, dim: int) -> Tensor:
    """Sinusoidal time stamps ``(...,) -> (..., dim)`` float32, interleaved ``[sin tω₀, cos tω₀, sin tω₁, …]``.

    ``ω_i = 10000^(-2i/D')`` with ``D'`` = ``dim`` rounded up to even (truncated back to ``dim``), as the released
    code's ``PositionalEncoding1D``. For ``dim=8, t=1``: ``[0.8415, 0.5403, 0.0998, 0.9950, 0.01, 0.99995, 0.001, 1]``.
    """
    even = 2 * math.ceil(dim / 2)
    omega = 10000.0 ** (-torch.arange(0, even, 2, device=positions.device, dtype=torch.float32) / even)  # (D'/2,)
    angles = positions.float()[..., None] * omega  # (..., D'/2)
    emb = torch.stack((angles.sin(), angles.cos()), dim=-1)  # (..., D'/2, 2)
    return emb.flatten(-2)[..., :dim]  # (..., D'/2, 2) -> (..., D') -> (..., dim)


class ProcessorBlock(nn.Module):
    """Pre-LN transformer block over a short sequence: ``x + MHSA(LN x)``, then ``x + FF(LN x)``.

    As the released code: q/k/v projections without bias and **no output projection** (heads are concatenated),
    a 4x FeedForward without biases. Attention logits and softmax in float32.

    Args:
        dim: token width ``D``.
        num_heads: attention heads; must divide ``dim``.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"GroupedTTM: num_heads={num_heads} must divide the width {dim}; set `num_heads`")
        self.num_heads = num_heads
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, 4 * dim, bias=False),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B', S, D) -> (B', S, D)``."""
        b, s, d = x.shape
        h = self.num_heads
        qkv = self.qkv(self.attn_norm(x)).reshape(b, s, 3, h, d // h)  # (B', S, 3D) -> (B', S, 3, h, D/h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # -> 3 x (B', h, S, D/h)
        logits = q.float() @ k.float().transpose(-1, -2) / math.sqrt(d // h)  # (B', h, S, S)
        out = torch.softmax(logits, dim=-1).to(v.dtype) @ v  # (B', h, S, D/h)
        x = x + out.transpose(1, 2).reshape(b, s, d)  # (B', h, S, D/h) -> (B', S, D)
        return x + self.ff(x)


class GroupedTTM(Reducer):
    """Grouped Token Turing Machine over ``T`` frames of ``n`` tokens -> ``M`` tokens (or ``n`` with ``"mean"``).

    Tensor contract: ``frames (B, T, n, D)`` with ``n = tokens_per_frame`` (``cls``, text, ``cls_attn`` unused) ->
    ``tokens (B, M, D)``. The real frames read (at most ``max_frames``, uniformly spaced) are taken in time order;
    frame ``k`` of them gets ``timestamp_encoding(k)`` added to all its tokens, so the output depends on the order
    of frames but not on how much padding surrounds them. The recurrence is a Python loop over the ``T'`` frames
    read (inherent to a sequential model); each step is batched over samples and token groups as
    ``(B·n, G+1, D)``. Padded steps leave a sample's memory unchanged (``mem = where(valid_t, new, mem)``). A sample
    with no real frame gets zero tokens (mask False). Fully differentiable; activations grow with ``T'``.

    Departures from the released ``GroupedTokenTuringMachine`` (strefer @ 2f9ce92, ``helpers.py``):

    * final pooling: the paper's "attentionally pooled" ``N·G -> M`` TokenLearner by default; the released mean
      over ``G`` (``n`` tokens) is ``final_pool="mean"``;
    * the time stamp is the frame's rank among the frames read (the released code uses the slot index, which is the
      same for unpadded batches);
    * no read TokenLearner (constructed but unused in the released grouped unit);
    * initial memory ``randn(n, G, D) * 0.02`` (released: ``randn``, unit scale);
    * defaults 2 layers / 4 heads (BLIP-3-Video: 4 layers, 8 heads at D = 1152; set them in the experiment config).

    ``info``: ``frame_indices (B, T')`` (-1 on padding), ``num_tokens (B,)``, and with ``"tokenlearner"``
    ``pool_attention (B, n, G, M)``, the final pooling's weights over the memory slots.

    Args:
        in_dim: vision width ``D`` (also the output width).
        tokens_per_frame: tokens per frame ``n`` (BLIP-3-Video: 128 Perceiver latents); one memory group each.
        memory_slots: memory tokens ``G`` per group (BLIP-3-Video: 4).
        num_tokens: output tokens ``M`` of the final TokenLearner pooling (ignored with ``final_pool="mean"``).
        num_layers: transformer blocks of the processor.
        num_heads: attention heads of each processor block.
        max_frames: read at most this many frames per video, uniformly spaced; None reads every real frame.
        final_pool: ``"tokenlearner"`` pools the ``n·G`` memory tokens to ``M`` (paper); ``"mean"`` averages each
            group's ``G`` slots, giving ``n`` tokens (released code).
    """

    @classmethod
    def budget_from(cls, init_args) -> int:
        a = cls.with_defaults(init_args)
        return int(a["num_tokens"] if a["final_pool"] == "tokenlearner" else a["tokens_per_frame"])

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> GroupedTTM:
        return cls(in_dim, tokens_per_frame=num_patches, memory_slots=2, num_tokens=8, num_layers=2, num_heads=4,
                   max_frames=6)

    def __init__(
        self,
        in_dim: int,
        tokens_per_frame: int,
        memory_slots: int = 4,
        num_tokens: int = 32,
        num_layers: int = 2,
        num_heads: int = 4,
        max_frames: int | None = 32,
        final_pool: Literal["tokenlearner", "mean"] = "tokenlearner",
    ) -> None:
        super().__init__()
        if final_pool not in ("tokenlearner", "mean"):
            raise ValueError(f"GroupedTTM: final_pool is 'tokenlearner' or 'mean', not {final_pool!r}; "
                             "set `final_pool`")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"GroupedTTM: max_frames must be >= 1 or None, got {max_frames}; set `max_frames`")
        self.in_dim = in_dim
        self.out_dim = in_dim
        self.tokens_per_frame = tokens_per_frame
        self.memory_slots = memory_slots
        self.num_tokens = num_tokens
        self.max_frames = max_frames
        self.final_pool = final_pool
        self.budget = num_tokens if final_pool == "tokenlearner" else tokens_per_frame
        self.initial_memory = nn.Parameter(torch.randn(tokens_per_frame, memory_slots, in_dim) * 0.02)
        self.blocks = nn.ModuleList(ProcessorBlock(in_dim, num_heads) for _ in range(num_layers))
        self.write = TokenLearnerPool(in_dim, memory_slots)
        self.pool = TokenLearnerPool(in_dim, num_tokens) if final_pool == "tokenlearner" else None

    def process(self, memory: Tensor, x: Tensor) -> Tensor:
        """The processor on every group: ``memory (B, n, G, D), x (B, n, D) -> processed (B, n, G+1, D)``."""
        B, n, G, D = memory.shape
        h = torch.cat([memory, x[:, :, None]], dim=2).reshape(B * n, G + 1, D)  # (B, n, G+1, D) -> (B*n, G+1, D)
        for block in self.blocks:
            h = block(h)
        return h.reshape(B, n, G + 1, D)  # (B*n, G+1, D) -> (B, n, G+1, D)

    def step(self, memory: Tensor, x: Tensor) -> Tensor:
        """One TTM step: process ``[mem_j ‖ x_j]``, then write ``mem_j <- TL_G([mem_j ‖ processed_j])``.

        ``memory (B, n, G, D), x (B, n, D) -> new memory (B, n, G, D)``.
        """
        B, n, G, D = memory.shape
        written = torch.cat([memory, self.process(memory, x)], dim=2).reshape(B * n, 2 * G + 1, D)  # (B*n, 2G+1, D)
        new, _ = self.write(written)  # (B*n, G, D)
        return new.reshape(B, n, G, D)

    def forward(
        self,
        frames: Tensor,
        cls: Tensor,
        frame_mask: Tensor,
        text_ids: Tensor | None = None,
        text_mask: Tensor | None = None,
        cls_attn: Tensor | None = None,
    ) -> ReducerOutput:
        if frames.shape[2] != self.tokens_per_frame:
            raise ValueError(
                f"GroupedTTM was built for tokens_per_frame={self.tokens_per_frame} but frames have {frames.shape[2]} "
                "tokens per frame; set `tokens_per_frame` to the vision tower's (or resampler's) token count"
            )
        x, valid, index = pack_frames(frames, self.frames_to_encode(frame_mask))  # (B, T', n, D), real first
        B, T, n, D = x.shape
        G = self.memory_slots
        stamps = timestamp_encoding(torch.arange(T, device=x.device), D).to(x.dtype)  # (T', D): rank among frames read
        x = x + stamps[None, :, None]  # (T', D) -> (1, T', 1, D)
        memory = self.initial_memory.expand(B, n, G, D)
        for t in range(T):  # the recurrence; batched over samples and groups
            memory = torch.where(valid[:, t, None, None, None], self.step(memory, x[:, t]), memory)
        has_frame = valid.any(1)  # (B,)
        info = {"frame_indices": index}
        if self.pool is not None:
            slot_mask = has_frame[:, None].expand(B, n * G)
            # (B, n, G, D) -> (B, n*G, D) -> (B, M, D)
            tokens, weights = self.pool(memory.reshape(B, n * G, D), slot_mask)
            info["pool_attention"] = weights.detach().reshape(B, n, G, self.num_tokens)  # (B, n*G, M) -> (B, n, G, M)
        else:
            tokens = memory.mean(2)  # (B, n, G, D) -> (B, n, D)
        token_mask = has_frame[:, None].expand(B, tokens.shape[1])
        info["num_tokens"] = token_mask.sum(1)
        return ReducerOutput(tokens.masked_fill(~token_mask[..., None], 0), token_mask, info)
