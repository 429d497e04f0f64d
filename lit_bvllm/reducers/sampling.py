"""Choosing and packing frames and tokens: Gumbel-softmax selection (B-VLLM §3.2, Eq. 1; Jang et al., ICLR 2017)
with optional seeded evaluation noise, uniform segment-midpoint frame indices (VideoLLaMA2's uniform sampling), and
packing the kept items to the front.

Nothing here has parameters. Index choices are made under ``no_grad`` unless a straight-through estimator carries
the gradient (``gumbel_select``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pack(tokens: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Move the kept tokens of each row to the front, in order: ``(B, L, D), (B, L) -> (B, M, D), (B, M)``.

    ``M = keep.sum(1).max()``; dropped and padded positions become zeros with mask False. No per-sample loop:
    a stable sort of ``~keep`` gives every row's gather order.
    """
    B, L, D = tokens.shape
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices  # kept first, original order
    m = int(keep.sum(1).max()) if L else 0
    order = order[:, :m]
    mask = torch.gather(keep, 1, order)
    out = torch.gather(tokens, 1, order[..., None].expand(B, m, D)) * mask[..., None]
    return out, mask


def gumbel_noise(shape: torch.Size, device, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel noise ``-log(-log U)``."""
    u = torch.rand(shape, device=device, generator=generator).clamp_(1e-10, 1 - 1e-10)
    return -torch.log(-torch.log(u))


def keyed_gumbel_noise(seed: int, *keys: Tensor) -> Tensor:
    """Standard Gumbel noise that is a fixed function of ``seed`` and integer ``keys`` (broadcast together).

    A counter-based hash (two rounds of a 32-bit integer mix per key) instead of an RNG stream: an entry's noise
    does not depend on the batch it is in, on padding, on the device or on what the global RNG did before, so two
    evaluation passes agree. Keys are non-negative integer tensors; the result has their broadcast shape, float32.
    """
    mask = 0xFFFFFFFF

    def mix(x: Tensor) -> Tensor:  # 32-bit avalanche mix on int64 holding values < 2**32 (no int64 overflow)
        for _ in range(2):
            x = x ^ (x >> 16)
            x = (x * 0x45D9F3B) & mask
        return x ^ (x >> 16)

    x = torch.tensor(seed & mask, device=keys[0].device)
    for k in keys:
        x = mix(x ^ mix(k.long() & mask))
    u = (x.double() + 0.5) / 2**32  # in (0, 1), never 0 or 1
    return (-torch.log(-torch.log(u))).float()


def gumbel_select(
    logits: Tensor,
    mask: Tensor,
    tau: float,
    training: bool,
    hard: bool = True,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """Per-row categorical selection over the last axis (B-VLLM Eq. 1: ``S = GumbelSoftmax(Q V^T, τ)``).

    Args:
        logits: ``(B, K, T)`` scores of K queries over T frames.
        mask: ``(B, T)`` bool; False entries are never selected.
        tau: Gumbel-softmax temperature τ.
        training: draw fresh Gumbel noise ``g`` (from ``generator``) unless ``noise`` is given; in evaluation no
            noise is added unless ``noise`` is given.
        hard: one-hot rows: in training the one-hot of ``softmax((logits + g) / τ)`` with its soft gradient
            (straight-through); in evaluation ``one_hot(argmax(logits + noise))``, the noise-free argmax by default.
            False gives the soft rows ``softmax((logits + g) / τ)`` (no noise in evaluation by default), whose
            sharpness τ sets.
        generator: RNG for the training noise.
        noise: ``(B, K, T)`` Gumbel noise to use instead of drawing it (e.g. :func:`keyed_gumbel_noise`).

    Returns: ``(B, K, T)`` selection weights, each row summing to 1 (one-hot when ``hard``).
    """
    logits = logits.float().masked_fill(~mask[:, None, :], float("-inf"))
    if noise is None and training:
        noise = gumbel_noise(logits.shape, logits.device, generator)
    if noise is not None:
        logits = logits + noise
    if hard and not training:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    y = torch.softmax(logits / tau, dim=-1)
    if not hard:
        return y
    y_hard = F.one_hot(y.argmax(-1), y.shape[-1]).to(y.dtype)
    return y_hard - y.detach() + y


def gumbel_topk(
    logits: Tensor,
    k: int,
    mask: Tensor,
    tau: float,
    training: bool,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k selection without replacement, straight-through in training (relaxed subset sampling, Xie & Ermon 2019).

    Args:
        logits: ``(B, T)`` scores.
        k: items to keep (clamped to the valid count of each row).
        mask: ``(B, T)`` bool valid items.
        tau: temperature of the relaxed top-k.
        training: perturb with Gumbel noise and attach straight-through weights; else plain top-k.
        generator: RNG for the noise.

    Returns:
        ``indices (B, k)`` ascending (time order), ``weights (B, k)`` — exactly 1 in the forward pass, carrying the
        relaxed top-k gradient in training — and ``valid (B, k)`` bool.
    """
    B, T = logits.shape
    k = min(k, T)
    scores = logits.float().masked_fill(~mask, float("-inf"))
    if training:
        scores = scores + gumbel_noise(scores.shape, scores.device, generator)
    top = torch.topk(scores, k, dim=1, sorted=False).indices
    valid_count = mask.sum(1, keepdim=True)
    indices, _ = torch.sort(top, dim=1)
    # rows with fewer than k valid items: keep the valid ones, in time order, first
    is_valid = torch.gather(mask, 1, indices)
    indices = torch.gather(indices, 1, torch.sort((~is_valid).to(torch.int8), dim=1, stable=True).indices)
    valid = torch.arange(k, device=logits.device)[None] < valid_count
    weights = torch.ones(B, k, device=logits.device)
    if training:
        soft = torch.zeros_like(scores)
        w = scores.clone()
        for _ in range(k):  # k softmaxes, each discounting what earlier ones took
            p = torch.softmax(w / tau, dim=1)
            soft = soft + p
            w = w + torch.log((1 - p).clamp_min(1e-10))
        s = torch.gather(soft, 1, indices)
        weights = 1 - s.detach() + s
    return indices, weights * valid, valid


def rank_descending(score: Tensor) -> Tensor:
    """Each entry's rank in its row (last axis) by descending score, 0 the highest; ties: the lower index first."""
    order = torch.argsort(score, dim=-1, descending=True, stable=True)
    return torch.empty_like(order).scatter_(-1, order, torch.arange(score.shape[-1], device=score.device)
                                            .expand_as(order).contiguous())


def uniform_indices(num_valid: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``n`` frame indices at the midpoints of equal segments of each row's ``num_valid`` frames.

    Index i is ``floor((i + 0.5) * L / n)``, the frame shown at the middle of segment i (the rule the data
    module's uniform sampling uses: 100 frames, n = 8 -> 6, 18, 31, 43, 56, 68, 81, 93). VideoLLaMA2 rounds
    ``(L - 1) / n`` steps instead and differs by one frame in places. Rows with fewer than ``n`` frames give each
    frame once; their invalid slots repeat the last index, so build masks with ``scatter_add``, not ``scatter``.
    Returns ``(indices (B, n), valid (B, n))``.
    """
    i = torch.arange(n, device=num_valid.device)
    t = num_valid[:, None].clamp_min(1)
    idx = torch.floor((i[None] + 0.5) * t / n).long()
    short = num_valid[:, None] < n
    idx = torch.where(short, i[None].expand_as(idx), idx)
    valid = torch.where(short, i[None] < num_valid[:, None], torch.ones_like(idx, dtype=torch.bool))
    return idx.clamp_max((num_valid[:, None] - 1).clamp_min(0)), valid


def select_uniform_frames(frame_mask: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``n`` uniformly spaced real frames per row: ``(B, T) bool -> indices, valid (B, n')``, ``n' = min(n, T)``.

    Indices are absolute frame positions, ascending, at the segment midpoints of each row's real frames (which
    need not be a prefix). Rows with fewer than ``n`` real frames give each of them once, then invalid slots.
    On a row whose real frames are exactly a previous selection, it selects them all (idempotent).
    """
    n = min(n, frame_mask.shape[1])
    real_first = torch.sort((~frame_mask).to(torch.int8), dim=1, stable=True).indices  # (B, T) real frames first
    pos, valid = uniform_indices(frame_mask.sum(1), n)  # (B, n) positions among the real frames
    return torch.gather(real_first, 1, pos), valid


def uniform_frame_mask(frame_mask: Tensor, n: int | Tensor | None) -> Tensor:
    """``(B, T) bool``: ``n`` (an int, or a count per row ``(B,)``) of each row's real frames at the midpoints of equal
    segments of them, the frames :func:`select_uniform_frames` picks (for ``frames_to_encode``); all of them where
    ``n`` reaches their number, or is None."""
    if n is None:
        return frame_mask
    B, T = frame_mask.shape
    counts = torch.as_tensor(n, device=frame_mask.device).expand(B)
    total = frame_mask.sum(1, keepdim=True)  # (B, 1)
    m = torch.minimum(counts[:, None].clamp_min(0), total)  # (B, 1) frames to take
    i = torch.arange(T, device=frame_mask.device)[None]  # (1, T) slots; slot i < m takes uniform_indices' frame i
    pos = torch.floor((i + 0.5) * total / m.clamp_min(1)).long().clamp_max(T - 1)  # (B, T) positions among real
    real_first = torch.sort((~frame_mask).to(torch.int8), dim=1, stable=True).indices  # (B, T) real frames first
    hits = torch.zeros(B, T, dtype=torch.long, device=frame_mask.device)
    hits.scatter_add_(1, torch.gather(real_first, 1, pos), (i < m).long())
    return (hits > 0) & frame_mask


def pack_frames(frames: Tensor, keep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Move each row's kept frames to the front, in time order: ``(B, T, N, D), (B, T) -> (B, T', N, D)``.

    ``T' = keep.sum(1).max()``. Returns ``(frames (B, T', N, D), valid (B, T') bool, index (B, T') long)``; padded
    slots are zeros with ``valid`` False and ``index`` -1, so nothing from a dropped frame is carried forward.
    """
    B, T, N, D = frames.shape
    t = int(keep.sum(1).max()) if T else 0
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :t]  # (B, T') kept first
    valid = torch.gather(keep, 1, order)
    out = torch.gather(frames, 1, order[:, :, None, None].expand(B, t, N, D))
    out = out.masked_fill(~valid[:, :, None, None], 0)
    return out, valid, order.masked_fill(~valid, -1)
