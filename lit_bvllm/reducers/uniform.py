"""Uniform frame sampling with optional spatial average pooling (the VideoLLaMA2 / PLLaVA baseline).

``num_frames`` frames at the midpoints of equal segments of the video (``sampling.uniform_indices``), all their
patch tokens in time order, each frame's √N×√N patch grid optionally average-pooled with stride ``pool``
(PLLaVA, Xu et al., 2024, pools 24×24 → 12×12). Parameter-free.

:func:`select_uniform_frames` is the frame choice every reducer that caps its frame count shares.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_bvllm.reducers.base import Reducer, ReducerOutput, pack
from lit_bvllm.reducers.sampling import select_uniform_frames


def gather_frames(x: Tensor, idx: Tensor) -> Tensor:
    """Per-row frame gather: ``x (B, T, ...)``, ``idx (B, n) -> (B, n, ...)``."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], idx]


def spatial_pool(frames: Tensor, pool: int) -> Tensor:
    """Average-pool each frame's √N×√N patch grid with kernel = stride = ``pool``: ``(B, T, N, D) -> (B, T, N', D)``.

    ``N' = ceil(√N / pool)²``; border windows that overhang the grid average only the patches they cover.
    Raises ``ValueError`` when ``N`` is not a square.
    """
    B, T, N, D = frames.shape
    if pool == 1:
        return frames
    side = math.isqrt(N)
    if side * side != N:
        raise ValueError(
            f"spatial pooling needs a square patch grid, but the vision tower gives N={N} patches per frame; "
            "set --model.reducer.init_args.pool=1"
        )
    grid = frames.reshape(B * T, side, side, D).permute(0, 3, 1, 2)  # (B, T, N, D) -> (B*T, D, √N, √N)
    pooled = F.avg_pool2d(grid, pool, pool, ceil_mode=True)  # (B*T, D, s', s'), s' = ceil(√N / pool)
    return pooled.flatten(2).transpose(1, 2).reshape(B, T, -1, D)  # (B*T, D, s', s') -> (B, T, s'*s', D)


class Uniform(Reducer):
    """VideoLLaMA2-style uniform frame sampling: every (pooled) patch token of ``num_frames`` frames.

    Tensor contract (see ``base.py``): ``frames (B, T, N, D) -> tokens (B, M, D)`` with
    ``M <= num_frames · ceil(√N / pool)²``, frame-major and raster order within a frame. Frames are chosen at the
    segment midpoints of each sample's real frames (``sampling.uniform_indices``); a sample with fewer real frames
    than ``num_frames`` gives each frame once (no repetition). Linear in the tokens (gradients reach the selected
    frames); no parameters.

    ``info``: ``num_tokens (B,)``, ``frame_indices (B, n)`` and ``frame_valid (B, n)``.

    Args:
        in_dim: width D of the vision tower's patch tokens.
        num_frames: frames kept per video, uniformly spaced.
        pool: stride (= kernel) of the spatial average pooling over the √N×√N patch grid; 1 keeps every patch.
        budget: maximum tokens per sample θ; ``num_frames · ceil(√N / pool)²`` must not exceed it.
    """

    inference_args = frozenset({"num_frames", "pool", "budget"})  # may change on a trained model (Reducer.inference_args)

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> Uniform:
        return cls(in_dim, num_frames=4, pool=2, budget=16)

    def __init__(self, in_dim: int, num_frames: int = 8, pool: int = 1, budget: int = 4096):
        super().__init__()
        if num_frames < 1 or pool < 1 or budget < 1:
            raise ValueError(
                f"Uniform needs num_frames, pool and budget >= 1, got {num_frames}, {pool}, {budget}; "
                "check --model.reducer.init_args.num_frames / .pool / .budget"
            )
        self.in_dim = self.out_dim = in_dim
        self.num_frames = num_frames
        self.pool = pool
        self.budget = budget

    @property
    def max_frames(self) -> int:
        return self.num_frames

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
        per_frame = N if self.pool == 1 else math.ceil(math.isqrt(N) / self.pool) ** 2
        if self.num_frames * per_frame > self.budget:
            raise ValueError(
                f"Uniform: num_frames={self.num_frames} × {per_frame} tokens per frame (N={N} patches, "
                f"pool={self.pool}) = {self.num_frames * per_frame} tokens exceeds budget={self.budget}; lower "
                "--model.reducer.init_args.num_frames, raise --model.reducer.init_args.pool or "
                "--model.reducer.init_args.budget"
            )
        idx, valid = select_uniform_frames(frame_mask, self.num_frames)  # (B, n)
        picked = spatial_pool(gather_frames(frames, idx), self.pool)  # (B, n, N', D)
        n, n_tok = picked.shape[1], picked.shape[2]
        tokens = picked.reshape(B, n * n_tok, D)  # (B, n, N', D) -> (B, n*N', D)
        keep = valid[:, :, None].expand(B, n, n_tok).reshape(B, n * n_tok)  # (B, n, N') -> (B, n*N')
        tokens, token_mask = pack(tokens, keep)
        info = {"num_tokens": token_mask.sum(1), "frame_indices": idx, "frame_valid": valid}
        return ReducerOutput(tokens, token_mask, info)
