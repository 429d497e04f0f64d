"""splice: the batched, loop-free placement of visual tokens against a plain per-row loop."""

import pytest
import torch

from datamodules.conversation import IGNORE_INDEX
from lit_bvllm.splice import splice

PH, PAD, H = 7, 0, 3


def naive(text, ids, attn, visual, vmask, labels, side):
    """Row by row: the kept text tokens with the placeholder replaced by the row's valid visual tokens."""
    rows = []
    for b in range(ids.shape[0]):
        emb, lab = [], []
        for t in range(ids.shape[1]):
            if not attn[b, t]:
                continue
            if ids[b, t] == PH:
                v = visual[b][vmask[b]]
                emb += list(v)
                lab += [IGNORE_INDEX] * len(v)
            else:
                emb.append(text[b, t])
                lab.append(int(labels[b, t]))
        rows.append((emb, lab))
    n = max(len(e) for e, _ in rows)
    out, mask, out_labels = torch.zeros(len(rows), n, H), torch.zeros(len(rows), n, dtype=torch.long), torch.full(
        (len(rows), n), IGNORE_INDEX)
    for b, (emb, lab) in enumerate(rows):
        s = n - len(emb) if side == "left" else 0
        if emb:
            out[b, s : s + len(emb)] = torch.stack(emb)
        mask[b, s : s + len(emb)] = 1
        out_labels[b, s : s + len(emb)] = torch.tensor(lab, dtype=torch.long)
    return out, mask, out_labels


def batch():
    g = torch.Generator().manual_seed(0)
    # row 0: placeholder first, right-padded; row 1: placeholder in the middle, no padding; row 2: text only (no
    # media, no visual tokens), left-padded input; row 3: placeholder last
    ids = torch.tensor([[PH, 11, 12, 13, PAD, PAD], [21, 22, PH, 23, 24, 25], [PAD, PAD, 31, 32, 33, 34],
                        [41, 42, 43, PH, PAD, PAD]])
    attn = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    text = torch.randn(4, 6, H, generator=g)
    visual = torch.randn(4, 5, H, generator=g)
    vmask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    labels = torch.where(attn.bool(), ids + 100, IGNORE_INDEX)
    return text, ids, attn, visual, vmask, labels


@pytest.mark.parametrize("side", ["right", "left"])
def test_splice_matches_a_per_row_loop(side):
    text, ids, attn, visual, vmask, labels = batch()
    got = splice(text, ids, attn, visual, vmask, PH, labels, padding_side=side)
    want = naive(text, ids, attn, visual, vmask, labels, side)
    assert got[0].shape == want[0].shape == (4, 10, H)  # the longest row: 5 text + 5 visual tokens
    assert got[1].sum(1).tolist() == [6, 10, 4, 4]
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])


def test_a_sample_whose_visual_tokens_have_no_placeholder_is_an_error():
    text, ids, attn, visual, vmask, labels = batch()
    ids[1, 2] = 99  # the data wrote another placeholder than the model splices at
    with pytest.raises(ValueError, match=r"sample 1 .* 0 placeholder tokens .*--model.video_token"):
        splice(text, ids, attn, visual, vmask, PH, labels)
    ids[1, 2], ids[0, 1] = PH, PH  # two placeholders in one sample
    with pytest.raises(ValueError, match="sample 0 .* 2 placeholder tokens"):
        splice(text, ids, attn, visual, vmask, PH, labels)
