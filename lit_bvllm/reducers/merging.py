"""ToMe bipartite token merging (Bolya et al., ICLR 2023, §3), as B-VLLM's spatial merging uses it (§3.4).

Nothing here has parameters. Index choices are made under ``no_grad``; the averaging that uses them is linear in
the tokens, so gradients reach every token value (ToMe §3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_bvllm.reducers.sampling import pack


def bipartite_merge_rows(x: Tensor, r: Tensor, size: Tensor | None = None,
                         mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
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
        rank = torch.empty_like(order).scatter_(1, order,
                                                torch.arange(order.shape[1], device=x.device).expand_as(order))
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


def merge_to_target(x: Tensor, target: Tensor, size: Tensor | None = None,
                    mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
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
