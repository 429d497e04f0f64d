"""VisionZip (Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models", CVPR 2025),
training-free, applied to each of ``max_frames`` uniformly spaced frames as the video ports of it do.

Per frame (§3.2-3.3 of the paper; the steps as the released ``CLIPVisionTower_VisionZip.forward`` runs them):

1. dominant tokens: the [CLS] token and the ``dominant - 1`` patches that [CLS] attends to most at the feature
   layer (heads averaged), in their original order;
2. contextual tokens: of the remaining ``N'`` patches, ``contextual`` targets at a uniform stride
   ``max(1, N' // contextual)`` (positions 0, stride, 2·stride, ... among them); every other remaining patch joins
   the target whose key (the same layer's attention keys averaged over heads) is most similar by cosine, and a
   target's token becomes ``x_target + mean(x_joined)`` (the released code adds the mean of what joins to the
   target; the paper says "merged": we follow the code). A target nothing joins stays as it is.

A frame gives ``dominant + contextual`` tokens: ``[CLS, dominant patches, contextual tokens]``. The paper's CLIP-L
operating points are 54 + 10 (64 tokens), 108 + 20 and 162 + 30 of 576. Without keys (a caller that has none) the
features themselves are the similarity metric.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_bvllm.reducers.base import Reducer, ReducerOutput, pack
from lit_bvllm.reducers.sampling import select_uniform_frames
from lit_bvllm.reducers.uniform import gather_frames


def visionzip_frame_tokens(x: Tensor, cls: Tensor, cls_attn: Tensor, keys: Tensor, dominant: int,
                           contextual: int) -> tuple[Tensor, Tensor]:
    """VisionZip on frames ``x (..., N, D)`` (``cls (..., D)``, ``cls_attn (..., N)``, ``keys (..., N, Dk)``) ->
    ``tokens (..., dominant + contextual', D)`` and ``kept (..., N)``, the patches kept as dominant tokens
    (``contextual' = min(contextual, N - dominant + 1)``)."""
    N = x.shape[-2]
    n_dom = min(max(dominant - 1, 0), N)
    top = cls_attn.topk(n_dom, dim=-1).indices.sort(-1).values  # (..., n_dom) in their original order
    dom = torch.gather(x, -2, top[..., None].expand(*top.shape, x.shape[-1]))
    kept = torch.zeros_like(cls_attn, dtype=torch.bool).scatter_(-1, top, True)
    rest = torch.sort(kept.to(torch.int8), dim=-1, stable=True).indices[..., : N - n_dom]  # (..., N') in order
    n_rest = N - n_dom
    n_ctx = min(contextual, n_rest)
    parts = [cls[..., None, :], dom] if dominant >= 1 else [dom]
    if n_ctx > 0:
        step = max(1, n_rest // n_ctx)
        is_target = torch.zeros(n_rest, dtype=torch.bool, device=x.device)
        is_target[torch.arange(0, n_rest, step, device=x.device)[:n_ctx]] = True
        tgt, src = rest[..., is_target], rest[..., ~is_target]  # (..., C), (..., N' - C)

        def take(t: Tensor, i: Tensor) -> Tensor:
            return torch.gather(t, -2, i[..., None].expand(*i.shape, t.shape[-1]))

        k = F.normalize(keys.float(), dim=-1)
        sim = take(k, src) @ take(k, tgt).transpose(-1, -2)  # (..., N' - C, C) cosine
        assign = F.one_hot(sim.argmax(-1), n_ctx).to(x.dtype)  # (..., N' - C, C)
        count = assign.sum(-2)[..., None]  # (..., C, 1)
        joined = assign.transpose(-1, -2) @ take(x, src) / count.clamp_min(1)  # (..., C, D) mean of what joins
        parts.append(take(x, tgt) + joined)
    return torch.cat(parts, -2), kept


class VisionZip(Reducer):
    """VisionZip's dominant + contextual tokens on ``max_frames`` uniformly spaced frames (module docstring).

    Tensor contract (see ``base.py``): ``frames (B, T, N, D)``, ``cls (B, T, D)``, ``cls_attn (B, T, N)``, ``keys
    (B, T, N, Dk)`` -> ``tokens (B, M, D)``, ``M <= max_frames · (dominant + contextual)``, frame-major. No parameters;
    deterministic. Needs a tower with a [CLS] token (CLIP, EVA), as the paper does.

    ``info``: ``num_tokens (B,)``, ``frame_indices (B, n)``, ``frame_valid (B, n)`` and ``dominant (B, n, N)`` (the
    patches kept as dominant tokens).

    Args:
        in_dim: width D of the vision tower's patch tokens.
        dominant: dominant tokens per frame, the [CLS] token included (VisionZip's 54 at 64 tokens).
        contextual: merged contextual tokens per frame (VisionZip's 10 at 64 tokens).
        max_frames: frames taken per video, uniformly spaced (only those are encoded).
        budget: θ; ``max_frames · (dominant + contextual)`` must not exceed it (None: exactly that).
    """

    training_free = True
    needs_cls_attention = True
    needs_keys = True
    inference_args = frozenset({"dominant", "contextual", "max_frames", "budget"})

    @classmethod
    def budget_from(cls, init_args) -> int:
        a = cls.with_defaults(init_args)
        return int(a["budget"] if a["budget"] is not None else a["max_frames"] * (a["dominant"] + a["contextual"]))

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> VisionZip:
        return cls(in_dim, dominant=3, contextual=2, max_frames=4)

    def __init__(self, in_dim: int, dominant: int = 54, contextual: int = 10, max_frames: int = 8,
                 budget: int | None = None):
        super().__init__()
        if dominant < 0 or contextual < 0 or dominant + contextual < 1 or max_frames < 1:
            raise ValueError(f"VisionZip needs dominant, contextual >= 0 (one of them > 0) and max_frames >= 1, got "
                             f"{dominant}, {contextual}, {max_frames}; check --model.reducer.init_args.dominant / "
                             ".contextual / .max_frames")
        per_video = max_frames * (dominant + contextual)
        if budget is not None and per_video > budget:
            raise ValueError(f"VisionZip: max_frames={max_frames} x (dominant {dominant} + contextual {contextual}) = "
                             f"{per_video} tokens exceeds budget={budget}; lower --model.reducer.init_args.max_frames, "
                             ".dominant or .contextual, or raise .budget")
        self.in_dim = self.out_dim = in_dim
        self.dominant, self.contextual, self.max_frames = dominant, contextual, max_frames
        self.budget = per_video if budget is None else budget

    def forward(self, frames: Tensor, cls: Tensor, frame_mask: Tensor, text_ids: Tensor | None = None,
                text_mask: Tensor | None = None, cls_attn: Tensor | None = None,
                keys: Tensor | None = None) -> ReducerOutput:
        if cls_attn is None:
            raise ValueError("VisionZip ranks patches by the tower's [CLS] attention (cls_attn), and none was given: "
                             "it needs a tower with a [CLS] token (CLIP, InstructBLIP's EVA), not SigLIP")
        B, T, N, D = frames.shape
        idx, valid = select_uniform_frames(frame_mask, self.max_frames)  # (B, n)
        x, c, a = gather_frames(frames, idx), gather_frames(cls, idx), gather_frames(cls_attn, idx)
        k = gather_frames(keys, idx) if keys is not None else x
        tokens, dominant = visionzip_frame_tokens(x, c, a, k, self.dominant, self.contextual)  # (B, n, P, D)
        n, per = tokens.shape[1], tokens.shape[2]
        keep = valid[:, :, None].expand(B, n, per).reshape(B, n * per)
        out, mask = pack(tokens.reshape(B, n * per, D), keep)
        return ReducerOutput(out, mask, {"num_tokens": mask.sum(1), "frame_indices": idx, "frame_valid": valid,
                                         "dominant": dominant & valid[..., None]})
