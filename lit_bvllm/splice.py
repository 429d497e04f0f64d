"""Splicing visual tokens into a text sequence at its placeholder, for a whole ragged batch at once.

Each sample holds at most one placeholder token; it is replaced by that sample's ``M_b`` visual tokens. Every
output position is computed with cumulative sums and filled with one scatter per source (text, visual), so no
Python loop runs over samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from datamodules.conversation import IGNORE_INDEX


def splice(
    text_embeds: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    visual: Tensor,
    visual_mask: Tensor,
    placeholder_id: int,
    labels: Tensor | None = None,
    padding_side: str = "right",
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Replace each sample's placeholder by its visual tokens.

    Args:
        text_embeds: ``(B, L, H)`` embeddings of ``input_ids``.
        input_ids: ``(B, L)`` with at most one ``placeholder_id`` per row.
        attention_mask: ``(B, L)`` 1 on real text tokens (any padding side).
        visual: ``(B, M, H)`` visual tokens, the valid ones (``visual_mask``) first in each row.
        visual_mask: ``(B, M)`` bool.
        placeholder_id: the placeholder token id.
        labels: ``(B, L)`` or None; visual positions get ``-100``.
        padding_side: padding of the output: ``right`` (training) or ``left`` (generation).

    Returns: ``embeds (B, L', H)``, ``attention_mask (B, L')``, ``labels (B, L')`` or None.
    """
    B, L, H = text_embeds.shape
    text_keep = attention_mask.bool()
    is_ph = (input_ids == placeholder_id) & text_keep
    count = is_ph.sum(1)
    lost = visual_mask.any(1) & (count == 0)
    if bool(lost.any()) or bool((count > 1).any()):  # one check per batch; never drop a sample's video silently
        row = int(torch.nonzero(lost | (count > 1))[0])
        raise ValueError(
            f"sample {row} of the batch has {int(count[row])} placeholder tokens (id {placeholder_id}) for "
            f"{int(visual_mask[row].sum())} visual tokens; it needs exactly one: the data module must write the "
            "model's placeholder (--model.video_token, which the CLI passes on to --data.video_token)"
        )
    n_vis = visual_mask.sum(1) * is_ph.any(1)  # (B,) visual tokens actually spliced
    text_keep = text_keep & ~is_ph
    # each kept text token moves right by the visual tokens spliced before it
    before = torch.cumsum(is_ph.long(), 1) - is_ph.long()  # 1 after the placeholder
    text_pos = torch.cumsum(text_keep.long(), 1) - 1 + (before > 0).long() * n_vis[:, None]
    ph_pos = torch.where(is_ph.any(1), (torch.cumsum(text_keep.long(), 1) * is_ph).sum(1), 0)  # text tokens before it
    lengths = text_keep.sum(1) + n_vis
    Lout = int(lengths.max()) if B else 0
    shift = ((Lout - lengths)[:, None] if padding_side == "left"
             else torch.zeros(B, 1, dtype=torch.long, device=input_ids.device))
    out = text_embeds.new_zeros(B, Lout, H)
    b_idx = torch.arange(B, device=input_ids.device)[:, None]
    tpos = (text_pos + shift).masked_fill(~text_keep, 0)
    out[b_idx.expand_as(tpos)[text_keep], tpos[text_keep]] = text_embeds[text_keep]
    m = torch.arange(visual.shape[1], device=input_ids.device)[None]
    vkeep = visual_mask & (m < n_vis[:, None])
    vpos = ph_pos[:, None] + m + shift
    out[b_idx.expand_as(vpos)[vkeep], vpos[vkeep]] = visual[vkeep].to(out.dtype)
    pos = torch.arange(Lout, device=input_ids.device)[None]
    mask = ((pos >= shift) & (pos < shift + lengths[:, None])).long()
    new_labels = None
    if labels is not None:
        new_labels = torch.full((B, Lout), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
        new_labels[b_idx.expand_as(tpos)[text_keep], tpos[text_keep]] = labels[text_keep]
    return out, mask, new_labels
