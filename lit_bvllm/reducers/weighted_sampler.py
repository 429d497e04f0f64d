"""The weighted token sampler of "Fewer Tokens and Fewer Videos" (Chen et al., ACL 2024, arXiv 2406.08024).

The paper keeps, in each frame, the tokens "with higher visual attention responses" to cut the visual tokens per
frame before the LLM (its abstract and method overview). Its method section's details and its code are not public,
so the unknowns are switches:
which score (the tower's [CLS]-to-patch attention, as FasterVLM reads it, or a learned scorer) and whether kept
tokens are re-weighted by their score.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lit_bvllm.reducers.base import Reducer, ReducerOutput, pack
from lit_bvllm.reducers.sampling import select_uniform_frames
from lit_bvllm.reducers.uniform import gather_frames


class WeightedSampler(Reducer):
    """Per frame, the ``tokens_per_frame`` (K) highest-scoring patch tokens, in raster order, of ``max_frames`` frames.

    Tensor contract (see ``base.py``): ``frames (B, T, N, D) -> tokens (B, M, D)``, ``M <= max_frames · min(K, N)``,
    frame-major, ascending patch index within a frame. Frames are ``max_frames`` uniformly spaced real frames (only
    those are encoded, ``frames_to_encode``). Top-K uses a stable descending sort, so ties go to the lower patch
    index; ``K >= N`` keeps every patch.

    Scores ``w (B, T, N)``:

    - ``cls_attn``: the tower's [CLS]-to-patch attention ``cls_attn``, used as given (not differentiated).
    - ``learned``: ``softmax_N(Linear(LayerNorm(x)))`` over each frame's patches. The LayerNorm has no affine and the
      Linear no bias: a per-frame softmax ignores constant shifts, so those parameters would never get a gradient.
      Kept tokens are multiplied by the straight-through weight ``1 - w.detach() + w`` (exactly 1 in the forward
      pass), which carries a gradient to the scorer through the hard top-K (the straight-through estimator,
      Bengio et al., 2013).

    Weighting: ``none`` leaves kept tokens as they are; ``mul_renorm`` multiplies each kept token by
    ``K·w_i / Σ_kept w`` (mean multiplier 1, so the average token norm is kept; differentiable in a learned score).

    ``info``: ``num_tokens (B,)``, ``frame_indices (B, n)``, ``frame_valid (B, n)``, ``token_indices (B, n, K)`` (kept
    patch of each slot), ``token_weights (B, n, K)`` (multiplier applied) and ``scores (B, n, N)``.

    Args:
        in_dim: width D of the vision tower's patch tokens.
        tokens_per_frame: tokens K kept in every frame.
        score: ``cls_attn`` (the tower's [CLS] attention; towers without [CLS] such as SigLIP cannot give it) or
            ``learned`` (a linear scorer trained through straight-through weights).
        weighting: ``none`` or ``mul_renorm`` (multiply kept tokens by their score renormalised to mean 1).
        max_frames: frames sampled uniformly per video; the budget is ``max_frames · tokens_per_frame``.
    """

    # may change on a trained model (Reducer.inference_args)
    inference_args = frozenset({"tokens_per_frame", "weighting", "max_frames"})

    @classmethod
    def budget_from(cls, init_args) -> int:
        a = cls.with_defaults(init_args)
        return int(a["max_frames"] * a["tokens_per_frame"])

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> WeightedSampler:
        return cls(in_dim, tokens_per_frame=3, max_frames=4)

    def __init__(
        self,
        in_dim: int,
        tokens_per_frame: int = 16,
        score: Literal["cls_attn", "learned"] = "cls_attn",
        weighting: Literal["none", "mul_renorm"] = "none",
        max_frames: int = 64,
    ):
        super().__init__()
        if tokens_per_frame < 1 or max_frames < 1:
            raise ValueError(
                f"WeightedSampler needs tokens_per_frame and max_frames >= 1, got {tokens_per_frame}, {max_frames}; "
                "check --model.reducer.init_args.tokens_per_frame / .max_frames"
            )
        if score not in ("cls_attn", "learned") or weighting not in ("none", "mul_renorm"):
            raise ValueError(
                f"WeightedSampler: unknown score={score!r} or weighting={weighting!r}; set "
                "--model.reducer.init_args.score to cls_attn|learned and .weighting to none|mul_renorm"
            )
        self.in_dim = self.out_dim = in_dim
        self.tokens_per_frame = tokens_per_frame
        self.score = score
        self.weighting = weighting
        self.max_frames = max_frames
        self.budget = max_frames * tokens_per_frame
        self.needs_cls_attention = score == "cls_attn"
        if score == "learned":
            self.norm = nn.LayerNorm(in_dim, elementwise_affine=False)
            self.scorer = nn.Linear(in_dim, 1, bias=False)

    def forward(
        self,
        frames: Tensor,
        cls: Tensor,
        frame_mask: Tensor,
        text_ids: Tensor | None = None,
        text_mask: Tensor | None = None,
        cls_attn: Tensor | None = None,
    ) -> ReducerOutput:
        B, T, N, D = frames.shape
        idx, valid = select_uniform_frames(frame_mask, self.max_frames)  # (B, n)
        picked = gather_frames(frames, idx)  # (B, n, N, D)
        n, k = picked.shape[1], min(self.tokens_per_frame, N)
        if self.score == "cls_attn":
            if cls_attn is None:
                raise ValueError(
                    "WeightedSampler(score=cls_attn): the vision tower must return [CLS] attention; use "
                    "--model.reducer.init_args.score=learned for towers without [CLS] such as SigLIP"
                )
            w = gather_frames(cls_attn, idx).detach().float()  # (B, n, N)
        else:
            w = torch.softmax(self.scorer(self.norm(picked.float())).squeeze(-1), dim=-1)  # (B, n, N)

        with torch.no_grad():
            top = torch.sort(w, dim=-1, descending=True, stable=True).indices[..., :k]  # (B, n, k) best first
            top = torch.sort(top, dim=-1).values  # (B, n, k) raster order
        kept = torch.gather(picked, 2, top[..., None].expand(B, n, k, D))  # (B, n, k, D)
        w_kept = torch.gather(w, 2, top)  # (B, n, k)
        mult = torch.ones_like(w_kept)
        if self.weighting == "mul_renorm":
            mult = k * w_kept / w_kept.sum(-1, keepdim=True).clamp_min(1e-12)
        if self.score == "learned":
            mult = mult * (1 - w_kept.detach() + w_kept)  # straight-through: value 1, gradient to the scorer
        kept = kept * mult[..., None].to(kept.dtype)

        tokens = kept.reshape(B, n * k, D)  # (B, n, k, D) -> (B, n*k, D)
        keep = valid[:, :, None].expand(B, n, k).reshape(B, n * k)  # (B, n, k) -> (B, n*k)
        tokens, token_mask = pack(tokens, keep)
        info = {
            "num_tokens": token_mask.sum(1),
            "frame_indices": idx,
            "frame_valid": valid,
            "token_indices": top,
            "token_weights": mult.detach(),
            "scores": w.detach(),
        }
        return ReducerOutput(tokens, token_mask, info)
