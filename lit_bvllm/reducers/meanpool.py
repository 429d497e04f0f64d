"""Video-ChatGPT spatio-temporal mean pooling (Maaz et al., ACL 2024, "Video-ChatGPT").

For frame features ``(T, N, D)``: T temporal tokens (each frame's mean over its N patches) and N spatial tokens
(each patch position's mean over the frames): ``T + N`` tokens, 100 + 256 = 356 in Video-ChatGPT. Parameter-free.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lit_bvllm.reducers.base import Reducer, ReducerOutput, pack
from lit_bvllm.reducers.sampling import select_uniform_frames
from lit_bvllm.reducers.uniform import gather_frames


class MeanPool(Reducer):
    """Spatio-temporal pooling: per-frame means, then per-position means over time.

    Tensor contract (see ``base.py``): ``frames (B, T, N, D) -> tokens (B, M, D)``, ``M = T' + N`` where
    ``T' = min(real frames, budget - N)``. Order: the T' temporal tokens in time order, then the N spatial tokens
    in raster order. Video-ChatGPT zero-pads the temporal tokens to 100; here unused slots are masked instead.
    Videos longer than ``budget - num_patches`` frames are subsampled uniformly first (``frames_to_encode``), so
    ``M <= budget`` for any T. Padded frames enter neither mean. The spatial tokens do not depend on frame order.
    Means are taken in float32 and cast back; linear in the tokens; no parameters.

    ``info``: ``num_tokens (B,)``, ``frame_indices (B, n)`` and ``frame_valid (B, n)`` of the pooled frames.

    Args:
        in_dim: width D of the vision tower's patch tokens.
        num_patches: patches per frame N of the vision tower (256 for CLIP-L/14 at 224 px); fixes the frame cap.
        budget: maximum tokens per sample θ; at most ``budget - num_patches`` frames are pooled.
    """

    training_free = True
    inference_args = frozenset({"num_patches", "budget"})  # may change on a trained model (Reducer.inference_args)

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> MeanPool:
        return cls(in_dim, num_patches=num_patches, budget=num_patches + 4)

    def __init__(self, in_dim: int, num_patches: int = 256, budget: int = 356):
        super().__init__()
        if num_patches >= budget:
            raise ValueError(
                f"MeanPool emits num_patches={num_patches} spatial tokens plus one per frame, which leaves no room "
                f"in budget={budget}; raise --model.reducer.init_args.budget above {num_patches}"
            )
        self.in_dim = self.out_dim = in_dim
        self.num_patches = num_patches
        self.budget = budget
        self.max_frames = budget - num_patches

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
        if N != self.num_patches:
            raise ValueError(
                f"MeanPool was built for num_patches={self.num_patches} but the vision tower gives N={N} patches "
                f"per frame; set --model.reducer.init_args.num_patches={N}"
            )
        idx, valid = select_uniform_frames(frame_mask, self.max_frames)  # (B, n)
        picked = gather_frames(frames, idx).float() * valid[:, :, None, None]  # (B, n, N, D), invalid slots zero
        temporal = picked.mean(2)  # (B, n, D)
        count = valid.sum(1)  # (B,)
        spatial = picked.sum(1) / count.clamp_min(1)[:, None, None]  # (B, N, D)
        tokens = torch.cat([temporal, spatial], 1).to(frames.dtype)  # (B, n + N, D)
        keep = torch.cat([valid, (count > 0)[:, None].expand(B, N)], 1)  # (B, n + N)
        tokens, token_mask = pack(tokens, keep)
        info = {"num_tokens": token_mask.sum(1), "frame_indices": idx, "frame_valid": valid}
        return ReducerOutput(tokens, token_mask, info)
