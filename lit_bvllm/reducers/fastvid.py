"""FastVID (Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models", NeurIPS 2025),
training-free, on ``max_frames`` uniformly spaced frames.

1. Dynamic temporal segmentation (DySeg, §3.2): consecutive frames' global features (here the tower's [CLS]) have
   cosine similarity ``s_i``; the video is cut after frame ``i`` wherever ``s_i < tau`` and at the ``segments - 1``
   lowest ``s_i`` (so at least ``segments`` segments when the video has that many frames).
2. Budget: ``R = budget // frames`` tokens a frame; each frame keeps ``R - floor(R · d)`` salient tokens (the
   patches its [CLS] attends to most) and a segment's context budget ``floor(R · d) · L`` (``L`` frames) goes to its
   anchor frames: the last frame and every ``p``-th one before it, each ``floor(floor(R · d) · L / ceil(L / p))``.
3. Density-based spatio-temporal pruning (STPrune, §3.3): in an anchor frame, the non-salient patches are scored by
   density peaks (DPC-KNN): ``rho_i = exp(-mean_kNN(dist²))`` over its ``knn`` nearest (itself included),
   ``delta_i`` the distance to the nearest denser patch (the farthest patch for the densest), distances
   ``||x_i - x_j|| / sqrt(D)``; the top ``rho · delta`` are its context tokens.
4. Density-based token merging (DTM): every non-salient patch of the segment (anchors' other context tokens
   included) joins the anchor's context token it is most similar to (cosine), and a context token becomes
   ``w x + (1 - w) mean(joined)`` with ``w = max(1 / (n + 1), beta)`` (``n`` joined; nothing joined: ``x``).

Kept tokens leave in their original order (frame-major, raster). The steps follow the released code
(``LunarShen/FastVID``, ``Qwen2Model.forward``'s FastVID block, read, not copied) where the paper is terse: its
parallel variant's equal per-frame split and per-anchor context share; its ``1e-6 · rand`` tie-break of the
density is dropped (of equal densities the lower patch index counts as denser), so the reducer is deterministic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_bvllm.reducers.base import Reducer, ReducerOutput, pack
from lit_bvllm.reducers.sampling import rank_descending, select_uniform_frames
from lit_bvllm.reducers.uniform import gather_frames


def temporal_segments(g: Tensor, valid: Tensor, segments: int, tau: float) -> Tensor:
    """DySeg: ``g (B, n, D)`` frame features, ``valid (B, n)`` (a prefix) -> ``(B, n)`` segment id of each frame
    (0, 1, ...; padding continues the last). Cuts after frame ``i`` where ``cos(g_i, g_{i+1}) < tau`` and at the
    ``segments - 1`` lowest similarities of the row."""
    B, n = valid.shape
    if n < 2:
        return torch.zeros(B, n, dtype=torch.long, device=g.device)
    gn = F.normalize(g.float(), dim=-1)
    s = (gn[:, :-1] * gn[:, 1:]).sum(-1)  # (B, n - 1)
    pair = valid[:, 1:] & valid[:, :-1]
    s = s.masked_fill(~pair, float("inf"))
    lowest = torch.zeros_like(pair)
    if segments > 1:
        low = s.topk(min(segments - 1, n - 1), dim=1, largest=False).indices
        lowest.scatter_(1, low, True)
    cuts = pair & (lowest | (s < tau))
    return torch.cat([torch.zeros(B, 1, dtype=torch.long, device=g.device), cuts.long().cumsum(1)], 1)


def density_peaks(x: Tensor, candidate: Tensor, knn: int) -> Tensor:
    """DPC-KNN scores ``rho · delta`` of the ``candidate (..., N)`` tokens of ``x (..., N, D)`` (others: -inf)."""
    D = x.shape[-1]
    dist = torch.cdist(x.float(), x.float()) / math.sqrt(D)  # (..., N, N)
    pair = candidate[..., :, None] & candidate[..., None, :]
    far = torch.finfo(dist.dtype).max
    k = min(knn, x.shape[-2])
    near = dist.masked_fill(~pair, far).topk(k, dim=-1, largest=False).values  # (..., N, k), itself included
    count = pair.sum(-1, keepdim=True).clamp(1, k)
    near = torch.where(near < far, near, torch.zeros_like(near))
    rho = torch.exp(-(near**2).sum(-1) / count.squeeze(-1))  # (..., N)
    # ties: an earlier index counts as denser than an equal later one, so the earliest of equal densities is the peak
    idx = torch.arange(x.shape[-2], device=x.device)
    denser = (rho[..., None, :] > rho[..., :, None]) | ((rho[..., None, :] == rho[..., :, None])
                                                        & (idx[None, :] < idx[:, None]))
    denser = denser & pair
    to_denser = dist.masked_fill(~denser, far).amin(-1)
    farthest = dist.masked_fill(~pair, -1.0).amax(-1)
    delta = torch.where(denser.any(-1), to_denser, farthest)
    return (rho * delta).masked_fill(~candidate, float("-inf"))


class FastVID(Reducer):
    """FastVID's segmentation, density pruning and merging (module docstring), at most ``budget`` tokens.

    Tensor contract (see ``base.py``): ``frames (B, T, N, D)``, ``cls (B, T, D)``, ``cls_attn (B, T, N)`` ->
    ``tokens (B, M, D)``, ``M <= budget``, frame-major and raster order. No parameters; deterministic. Needs the
    tower's [CLS] attention (CLIP, EVA).

    ``info``: ``num_tokens (B,)``, ``frame_indices (B, n)``, ``frame_valid (B, n)``, ``segments (B, n)`` (segment id
    of each frame) and ``anchors (B, n)``.

    Args:
        in_dim: width D of the vision tower's patch tokens.
        budget: θ, the most tokens a video gives; ``budget // frames`` a frame.
        max_frames: frames taken per video, uniformly spaced (LLaVA-OneVision's 32 in the paper); at most ``budget``.
        segments: DySeg's c, the fewest segments (cuts at the c - 1 lowest similarities).
        tau: DySeg's threshold: a similarity below it cuts too.
        context_share: STPrune's d, the share of a frame's tokens that are context (merged) tokens.
        anchor_stride: DTM's p, every p-th frame of a segment (from its last) is an anchor.
        beta: DTM's β, the least weight a context token keeps against the mean of what joins it.
        knn: DPC-KNN's neighbours (itself included).
    """

    training_free = True
    needs_cls_attention = True
    inference_args = frozenset({"budget", "max_frames", "segments", "tau", "context_share", "anchor_stride", "beta",
                                "knn"})

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> FastVID:
        return cls(in_dim, budget=24, max_frames=8, segments=2, anchor_stride=2)

    def __init__(self, in_dim: int, budget: int = 96, max_frames: int = 32, segments: int = 8, tau: float = 0.9,
                 context_share: float = 0.4, anchor_stride: int = 4, beta: float = 0.6, knn: int = 4):
        super().__init__()
        if not 1 <= max_frames <= budget:
            raise ValueError(f"FastVID needs 1 <= max_frames <= budget (a token a frame at least), got max_frames="
                             f"{max_frames}, budget={budget}; check --model.reducer.init_args.max_frames / .budget")
        if segments < 1 or anchor_stride < 1 or knn < 1 or not 0 <= context_share <= 1 or not 0 <= beta <= 1:
            raise ValueError("FastVID needs segments, anchor_stride, knn >= 1 and context_share, beta in [0, 1]; "
                             "check --model.reducer.init_args")
        self.in_dim = self.out_dim = in_dim
        self.budget, self.max_frames, self.segments, self.tau = budget, max_frames, segments, tau
        self.context_share, self.anchor_stride, self.beta, self.knn = context_share, anchor_stride, beta, knn

    def forward(self, frames: Tensor, cls: Tensor, frame_mask: Tensor, text_ids: Tensor | None = None,
                text_mask: Tensor | None = None, cls_attn: Tensor | None = None) -> ReducerOutput:
        if cls_attn is None:
            raise ValueError("FastVID keeps each frame's most-attended patches (the tower's [CLS] attention, cls_attn),"
                             " and none was given: it needs a tower with a [CLS] token (CLIP, InstructBLIP's EVA)")
        B, T, N, D = frames.shape
        idx, valid = select_uniform_frames(frame_mask, self.max_frames)  # (B, n), real frames first
        x, g, attn = gather_frames(frames, idx), gather_frames(cls, idx), gather_frames(cls_attn, idx)
        n = x.shape[1]
        count = valid.sum(1)  # (B,)
        per_frame = self.budget // count.clamp_min(1)  # R (B,)
        ctx_per_frame = torch.floor(per_frame * self.context_share).long()
        salient_n = (per_frame - ctx_per_frame).clamp(0, N)

        seg = temporal_segments(g, valid, self.segments, self.tau)  # (B, n)
        same = (seg[:, :, None] == seg[:, None, :]) & valid[:, :, None] & valid[:, None, :]  # (B, n, n)
        length = same.sum(2)  # (B, n) frames in each frame's segment
        later = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), 1)
        after = (same & later).sum(2)  # frames after this one in its segment
        anchor = valid & (after % self.anchor_stride == 0)
        anchors_in_seg = torch.div(length + self.anchor_stride - 1, self.anchor_stride, rounding_mode="floor")
        ctx_n = torch.where(anchor, torch.div(ctx_per_frame[:, None] * length, anchors_in_seg.clamp_min(1),
                                              rounding_mode="floor"), torch.zeros_like(length))  # (B, n)

        salient = (rank_descending(attn) < salient_n[:, None, None]) & valid[..., None]  # (B, n, N)
        scores = density_peaks(x, ~salient & anchor[..., None], self.knn)  # (B, n, N)
        context = (rank_descending(scores) < ctx_n[..., None]) & ~salient & anchor[..., None]  # (B, n, N)

        # DTM: every non-salient patch of an anchor's segment (but the anchor's own context tokens) joins the
        # anchor's most similar context token
        C = max(int(ctx_n.max()), 1)
        slot = rank_descending(context.float())  # context tokens take slots 0..ctx_n-1 (in patch order)
        c_pos = torch.argsort(slot, dim=-1)[..., :C]  # (B, n, C) the context tokens' patches
        c_ok = torch.arange(C, device=x.device) < context.sum(-1, keepdim=True)  # (B, n, C)
        c_tok = torch.gather(x, 2, c_pos[..., None].expand(B, n, C, D))  # (B, n, C, D)
        src = x.reshape(B, n * N, D)
        member = (same[:, :, :, None] & ~salient[:, None]).reshape(B, n, n * N)  # (B, anchor, token)
        own = torch.zeros(B, n, n * N, dtype=torch.bool, device=x.device)
        own.view(B, n, n, N).diagonal(dim1=1, dim2=2).copy_(context.transpose(1, 2))
        member = member & ~own & anchor[..., None]
        sim = F.normalize(src.float(), dim=-1)[:, None] @ F.normalize(c_tok.float(), dim=-1).transpose(-1, -2)
        sim = sim.masked_fill(~c_ok[:, :, None, :], float("-inf"))  # (B, n, n*N, C)
        join = F.one_hot(sim.argmax(-1), C).to(x.dtype) * member[..., None]  # (B, n, n*N, C)
        joined = join.sum(2)  # (B, n, C)
        mean = (join.transpose(-1, -2) @ src[:, None]) / joined[..., None].clamp_min(1)  # (B, n, C, D)
        w = torch.where(joined > 0, torch.clamp(1.0 / (joined + 1), min=self.beta), torch.ones_like(joined))
        merged = w[..., None] * c_tok + (1 - w[..., None]) * mean

        out = x.clone()
        out.scatter_(2, c_pos[..., None].expand(B, n, C, D),
                     torch.where(c_ok[..., None], merged.to(x.dtype), c_tok))
        keep = (salient | context).reshape(B, n * N)
        tokens, mask = pack(out.reshape(B, n * N, D), keep)
        info = {"num_tokens": mask.sum(1), "frame_indices": idx, "frame_valid": valid, "segments": seg,
                "anchors": anchor}
        return ReducerOutput(tokens, mask, info)
