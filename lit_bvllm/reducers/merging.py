"""Pure tensor functions shared by the reducers: ToMe bipartite merging, Gumbel selection, uniform indices.

Nothing here has parameters. Index choices are made under ``no_grad``; the averaging that uses them is linear in
the tokens, so gradients reach every token value (ToMe, Bolya et al. 2023, §3).
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


def bipartite_merge_rows(x: Tensor, r: Tensor, size: Tensor | None = None, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """ToMe bipartite soft matching with a per-row merge count and padding.

    Args:
        x: ``(B, N, D)`` tokens; the valid ones (``mask``) form a prefix of each row.
        r: ``(B,)`` tokens to remove per row (clamped to half the row's valid tokens, as ToMe clamps).
        size: ``(B, N, 1)`` float32 token sizes (patches each token stands for); ones when None.
        mask: ``(B, N)`` bool valid tokens; all True when None.

    Returns:
        ``(merged (B, N', D), size (B, N', 1), mask (B, N'))``, valid tokens first and in their original order,
        each merged token the size-weighted mean of what it absorbed (ToMe's proportional merge).
    """
    B, N, D = x.shape
    size = torch.ones(B, N, 1, dtype=torch.float32, device=x.device) if size is None else size.float()
    mask = torch.ones(B, N, dtype=torch.bool, device=x.device) if mask is None else mask
    if N < 2:
        return x, size, mask
    a, b = x[:, ::2], x[:, 1::2]  # alternate split: A = even positions, B = odd positions
    ma, mb = mask[:, ::2], mask[:, 1::2]
    with torch.no_grad():
        metric = F.normalize(x.float(), dim=-1)
        scores = metric[:, ::2] @ metric[:, 1::2].transpose(1, 2)  # (B, Na, Nb) cosine similarity
        scores = scores.masked_fill(~mb[:, None, :], float("-inf"))
        node_max, node_idx = scores.max(-1)  # best B partner of every A token
        node_max = node_max.masked_fill(~ma, float("-inf"))
        order = torch.argsort(node_max, dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=x.device).expand_as(order))
        r = torch.minimum(r.to(x.device), mask.sum(1) // 2)
        src = rank < r[:, None]  # (B, Na): A tokens merged into their partner
    sa, sb = size[:, ::2], size[:, 1::2]
    w = src[..., None].float() * sa  # (B, Na, 1) weight each source brings
    idx = node_idx[..., None]
    dst_sum = (b.float() * sb).scatter_add(1, idx.expand(-1, -1, D), a.float() * w)
    dst_size = sb.scatter_add(1, idx, w)
    new_b = (dst_sum / dst_size.clamp_min(1e-12)).to(x.dtype)  # padded B tokens have size 0
    out = torch.empty_like(x)
    out[:, ::2], out[:, 1::2] = a, new_b
    out_size = torch.empty_like(size)
    out_size[:, ::2], out_size[:, 1::2] = sa, dst_size
    keep = torch.empty_like(mask)
    keep[:, ::2], keep[:, 1::2] = ma & ~src, mb
    packed, keep = pack(torch.cat([out.float(), out_size], -1), keep)
    return packed[..., :D].to(x.dtype), packed[..., D:], keep


def bipartite_merge(x: Tensor, r: int, size: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """ToMe bipartite soft matching: remove ``min(r, N // 2)`` of the ``N`` tokens of every row of ``x (B, N, D)``.

    Tokens are split alternately into A and B; each A token's best cosine match in B is an edge; the ``r`` A
    tokens with the strongest edges are averaged into their partners, weighted by ``size`` (ToMe §3,
    "proportional" merge); the others stay. Returns ``(merged (B, N - r, D), size (B, N - r, 1))``, tokens in
    their original order. Carry ``size`` across rounds to keep averages exact over repeated merges.
    """
    B = x.shape[0]
    merged, size, _ = bipartite_merge_rows(x, torch.full((B,), max(int(r), 0), device=x.device), size)
    return merged, size


def gumbel_noise(shape: torch.Size, device, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel noise ``-log(-log U)``."""
    u = torch.rand(shape, device=device, generator=generator).clamp_(1e-10, 1 - 1e-10)
    return -torch.log(-torch.log(u))


def gumbel_select(
    logits: Tensor,
    mask: Tensor,
    tau: float,
    training: bool,
    hard: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-row categorical selection over the last axis (B-VLLM Eq. 1: ``S = GumbelSoftmax(Q V^T, τ)``).

    Args:
        logits: ``(B, K, T)`` scores of K queries over T frames.
        mask: ``(B, T)`` bool; False entries are never selected.
        tau: Gumbel-softmax temperature τ.
        training: add Gumbel noise (training); otherwise a noise-free one-hot argmax (deterministic evaluation).
        hard: in training, one-hot forward with the soft gradient (straight-through); False gives the soft mixture.
        generator: RNG for the noise.

    Returns: ``(B, K, T)`` selection weights, each row summing to 1 (one-hot unless ``training and not hard``).
    """
    logits = logits.float().masked_fill(~mask[:, None, :], float("-inf"))
    if not training:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    y = torch.softmax((logits + gumbel_noise(logits.shape, logits.device, generator)) / tau, dim=-1)
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


def merge_to_target(x: Tensor, target: Tensor, size: Tensor | None = None, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Progressive bipartite merging of each row down to exactly ``target`` tokens (B-VLLM §3.4).

    While a row holds more than its target it is halved with :func:`bipartite_merge_rows` (sizes carried across
    rounds); the round that would undershoot is replaced by one partial round that removes exactly the excess.
    A loop over rounds (about log2 of the row length), batched over rows.

    Args:
        x: ``(B, N, D)`` tokens, valid ones a prefix of each row.
        target: ``(B,)`` tokens to keep per row (>= 1; rows already at or below it are untouched).
        size: ``(B, N, 1)`` token sizes (ones when None).
        mask: ``(B, N)`` bool valid tokens (all when None).

    Returns: ``(merged (B, N', D), size (B, N', 1), mask (B, N'))`` with ``mask.sum(1) == min(n, target)``.
    """
    B, N, _ = x.shape
    size = torch.ones(B, N, 1, dtype=torch.float32, device=x.device) if size is None else size
    mask = torch.ones(B, N, dtype=torch.bool, device=x.device) if mask is None else mask
    target = target.to(x.device).clamp_min(1)
    while True:
        n = mask.sum(1)
        over = n > target
        if not over.any():
            return x, size, mask
        half = n // 2
        r = torch.where(n - half >= target, half, n - target)  # a full halving, or the partial last round
        x, size, mask = bipartite_merge_rows(x, torch.where(over, r, torch.zeros_like(r)), size, mask)


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


def uniform_frame_mask(frame_mask: Tensor, n: int | None) -> Tensor:
    """``(B, T) bool``: the frames :func:`select_uniform_frames` picks (for ``frames_to_encode``); all when ``n`` is None."""
    if n is None:
        return frame_mask
    idx, valid = select_uniform_frames(frame_mask, n)
    hits = torch.zeros(frame_mask.shape, dtype=torch.long, device=frame_mask.device)
    hits.scatter_add_(1, idx, valid.long())  # invalid slots repeat a real frame; they add 0
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
