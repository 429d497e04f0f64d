"""TokenLearner as BLIP-3-Video's space-time attentional pooling: all ``T·N`` frame tokens -> ``M`` video tokens.

BLIP-3-Video (Ryoo et al., arXiv 2410.16267), §2.2 "Spatio-temporal attentional pooling", Eq. (2)::

    X = softmax(α(V)) · V,   α = MLP_M   (TokenLearner, Ryoo et al. 2021)

with the softmax over the ``T·N`` tokens jointly (space and time), and §3.1: "a MLP as the attention function. The
size of its inner dim was the number of target tokens * 2". The pooling itself (:class:`TokenLearnerPool`) is a
reusable module; :mod:`lit_bvllm.reducers.ttm` uses it for the grouped TTM's memory write and final pooling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_bvllm.reducers.base import Reducer, ReducerOutput
from lit_bvllm.reducers.sampling import pack_frames


class TokenLearnerPool(nn.Module):
    """Attentional pooling of ``L`` tokens to ``M`` (BLIP-3-Video Eq. 2, the released code's MLP attention).

    ``U = LayerNorm(V)``; ``logits = MLP(U)`` with MLP = LayerNorm -> Linear(D, 2M, no bias) -> GELU ->
    Linear(2M, M, no bias); ``A = softmax(logits)`` over the ``L`` axis (float32, masked tokens at -inf);
    ``X = Aᵀ V`` with the un-normalised ``V``. Each output token is a convex combination of the valid inputs.

    Args:
        dim: token width ``D``.
        num_tokens: output tokens ``M`` (the MLP's inner width is ``2M``).
    """

    def __init__(self, dim: int, num_tokens: int) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"TokenLearnerPool: num_tokens must be >= 1, got {num_tokens}; set `num_tokens` >= 1")
        self.num_tokens = num_tokens
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, 2 * num_tokens, bias=False),
            nn.GELU(),
            nn.Linear(2 * num_tokens, num_tokens, bias=False),
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Pool ``x (..., L, D)`` with ``mask (..., L) bool`` (all valid when None).

        Returns ``(tokens (..., M, D), weights (..., L, M) float32)``; ``weights`` sum to 1 over ``L`` and are 0 on
        masked tokens. A row with no valid token gets zero weights and zero tokens (never NaN). Differentiable in
        ``x`` and every parameter.
        """
        logits = self.mlp(self.norm(x)).float()  # (..., L, M)
        if mask is not None:
            empty = ~mask.any(-1, keepdim=True)  # (..., 1) rows with nothing to pool
            # an empty row softmaxes over all its slots (finite), then its weights are zeroed
            logits = logits.masked_fill(~(mask | empty)[..., None], float("-inf"))
        weights = torch.softmax(logits, dim=-2)  # over the L (space-time) axis
        if mask is not None:
            weights = weights.masked_fill(empty[..., None], 0.0)
        tokens = torch.einsum("...lm,...ld->...md", weights.to(x.dtype), x)
        return tokens, weights


class TokenLearner(Reducer):
    """BLIP-3-Video's ``'tl'`` temporal encoder: one :class:`TokenLearnerPool` over all ``T·N`` tokens -> ``M``.

    Tensor contract: ``frames (B, T, N, D)`` (``cls``, text and ``cls_attn`` unused) -> ``tokens (B, M, D)``; every
    sample with at least one real frame gets exactly ``M`` tokens, a sample with none gets zero tokens (mask False).
    Padded frames get -inf logits, so they never leak into the output. Without positional information the pooling
    is permutation-invariant over the ``T·N`` tokens (BLIP-3-Video relies on the Perceiver's time embeddings).

    ``info``: ``attention (B, T', N, M)`` pooling weights over the frames read, ``frame_indices (B, T')`` (-1 on
    padding), ``num_tokens (B,)``.

    Args:
        in_dim: vision width ``D`` (also the output width).
        num_tokens: output tokens ``M`` per video; the budget. BLIP-3-Video uses 32 (16 and 128 in ablations).
        max_frames: read at most this many frames per video, uniformly spaced; None reads every real frame.
    """

    @classmethod
    def budget_from(cls, init_args) -> int:
        return int(cls.with_defaults(init_args)["num_tokens"])

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> TokenLearner:
        return cls(in_dim, num_tokens=8, max_frames=4)

    def __init__(self, in_dim: int, num_tokens: int = 32, max_frames: int | None = None) -> None:
        super().__init__()
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"TokenLearner: max_frames must be >= 1 or None, got {max_frames}; set `max_frames`")
        self.in_dim = in_dim
        self.out_dim = in_dim
        self.budget = num_tokens
        self.num_tokens = num_tokens
        self.max_frames = max_frames
        self.pool = TokenLearnerPool(in_dim, num_tokens)

    def forward(
        self,
        frames: Tensor,
        cls: Tensor,
        frame_mask: Tensor,
        text_ids: Tensor | None = None,
        text_mask: Tensor | None = None,
        cls_attn: Tensor | None = None,
    ) -> ReducerOutput:
        x, valid, index = pack_frames(frames, self.frames_to_encode(frame_mask))  # (B, T', N, D)
        B, T, N, D = x.shape
        token_valid = valid[:, :, None].expand(B, T, N).reshape(B, T * N)  # (B, T', N) -> (B, T'*N)
        tokens, weights = self.pool(x.reshape(B, T * N, D), token_valid)  # (B, T', N, D) -> (B, T'*N, D) -> (B, M, D)
        token_mask = valid.any(1)[:, None].expand(B, self.num_tokens)
        info = {
            "attention": weights.detach().reshape(B, T, N, self.num_tokens),  # (B, T'*N, M) -> (B, T', N, M)
            "frame_indices": index,
            "num_tokens": token_mask.sum(1),
        }
        return ReducerOutput(tokens.masked_fill(~token_mask[..., None], 0), token_mask, info)
