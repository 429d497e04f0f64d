"""Shared pure functions: ToMe bipartite merging (sizes, masks, targets); Gumbel selection and top-k, uniform
indices."""

import torch
import torch.nn.functional as F

from lit_bvllm.reducers.merging import bipartite_merge, bipartite_merge_rows, merge_to_target
from lit_bvllm.reducers.sampling import gumbel_select, gumbel_topk, uniform_indices


def naive_bipartite(x: torch.Tensor, r: int) -> list[torch.Tensor]:
    """One-sample-at-a-time reference: even/odd split, best partner, top-r edges, plain means (sizes 1)."""
    out = []
    for row in x:
        a, b = row[::2], row[1::2]
        sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
        best, partner = sim.max(-1)
        order = sorted(range(len(a)), key=lambda i: -float(best[i]))
        src = set(order[: min(r, len(row) // 2)])
        groups = {j: [b[j]] for j in range(len(b))}
        for i in src:
            groups[int(partner[i])].append(a[i])
        kept = [a[i] for i in range(len(a)) if i not in src] + [torch.stack(g).mean(0) for g in groups.values()]
        out.append(torch.stack(sorted(kept, key=lambda t: tuple(t.tolist()))))
    return out


def test_bipartite_merge_matches_a_naive_reference():
    torch.manual_seed(0)
    x = torch.randn(3, 11, 5)
    merged, size = bipartite_merge(x, 4)
    assert merged.shape == (3, 7, 5) and size.shape == (3, 7, 1)
    for got, want in zip(merged, naive_bipartite(x, 4)):
        got = torch.stack(sorted(got, key=lambda t: tuple(t.tolist())))
        torch.testing.assert_close(got, want)


def test_hand_made_merge_and_order():
    # tokens 0 and 1 point the same way: the only edge worth taking; others stay, in their original order
    x = torch.tensor([[[1.0, 0, 0], [2.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])
    merged, size = bipartite_merge(x, 1)
    torch.testing.assert_close(merged, torch.tensor([[[1.5, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]]))
    assert size.squeeze(-1).tolist() == [[2.0, 1.0, 1.0]]


def test_r_is_clamped_and_zero_is_identity():
    x = torch.randn(2, 7, 4)
    assert bipartite_merge(x, 100)[0].shape == (2, 4, 4)  # at most N // 2 removed
    same, size = bipartite_merge(x, 0)
    assert torch.equal(same, x) and (size == 1).all()


def test_sizes_make_repeated_merges_exact_means():
    torch.manual_seed(1)
    x = torch.randn(2, 16, 6, requires_grad=True)
    m, s = bipartite_merge(x, 8)
    m, s = bipartite_merge(m, 4, s)
    m, s = bipartite_merge(m, 2, s)
    assert m.shape == (2, 2, 6) and s.sum(1).squeeze(-1).tolist() == [16.0, 16.0]
    torch.testing.assert_close((m * s).sum(1), x.sum(1))  # size-weighted means conserve the total
    m.sum().backward()
    assert (x.grad != 0).all()  # the averaging is differentiable w.r.t. every token


def test_rows_with_own_counts_and_padding():
    torch.manual_seed(2)
    x = torch.randn(3, 8, 4)
    mask = torch.arange(8)[None] < torch.tensor([[8], [5], [2]])
    x = x * mask[..., None]
    m, s, k = bipartite_merge_rows(x, torch.tensor([3, 2, 5]), mask=mask)
    assert k.sum(1).tolist() == [5, 3, 1]
    assert (m[~k] == 0).all()
    # a padded row merges like the same row alone
    alone, _ = bipartite_merge(x[1:2, :5], 2)
    torch.testing.assert_close(m[1, :3], alone[0])


def test_merge_to_target_lands_exactly():
    torch.manual_seed(3)
    x = torch.randn(5, 32, 8)
    targets = torch.tensor([32, 16, 15, 3, 1])
    m, s, k = merge_to_target(x, targets)
    assert k.sum(1).tolist() == targets.tolist()
    torch.testing.assert_close((m * s).sum(1), x.sum(1), atol=1e-4, rtol=1e-4)


def test_gumbel_select_eval_is_noise_free_argmax_and_respects_the_mask():
    logits = torch.tensor([[[0.0, 5.0, 1.0, 9.0], [3.0, 0.0, 2.0, 9.0]]])
    mask = torch.tensor([[True, True, True, False]])
    s = gumbel_select(logits, mask, tau=0.1, training=False)
    assert s.tolist() == [[[0, 1, 0, 0], [1, 0, 0, 0]]]
    torch.manual_seed(0)
    for _ in range(20):
        s = gumbel_select(logits.repeat(1, 50, 1), mask, tau=1.0, training=True)
        assert (s[..., 3] == 0).all()  # a padded frame is never selected, even with noise


def test_gumbel_select_training_is_one_hot_with_gradient_and_samples_softmax():
    logits = torch.tensor([[[1.0, 2.0, 0.5]]], requires_grad=True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    s = gumbel_select(logits, mask, tau=0.5, training=True)
    assert sorted(s.detach().flatten().tolist()) == [0.0, 0.0, 1.0]
    (s * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert logits.grad.abs().sum() > 0
    g = torch.Generator().manual_seed(0)
    many = gumbel_select(logits.detach().expand(1, 20000, 3), mask, tau=1.0, training=True, generator=g)
    freq = many[0].mean(0)
    torch.testing.assert_close(freq, torch.softmax(logits.detach()[0, 0], -1), atol=0.02, rtol=0)


def test_gumbel_topk():
    logits = torch.tensor([[0.1, 3.0, 2.0, 0.0, 5.0], [1.0, 0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    idx, w, valid = gumbel_topk(logits, 3, mask, tau=0.5, training=False)
    assert idx[0].tolist() == [1, 2, 4]  # top-3, in time order
    assert valid.tolist() == [[True] * 3, [True, True, False]] and idx[1, :2].tolist() == [0, 1]
    idx, w, valid = gumbel_topk(logits, 3, mask, tau=0.5, training=True)
    assert torch.allclose(w.detach(), valid.float())
    (w * torch.arange(3.0)).sum().backward()
    assert logits.grad.abs().sum() > 0
    assert gumbel_topk(logits.detach(), 9, mask, 0.5, False)[0].shape == (2, 5)  # k clamped to T


def test_uniform_indices():
    idx, valid = uniform_indices(torch.tensor([100, 5, 0]), 8)
    assert idx[0].tolist() == [6, 18, 31, 43, 56, 68, 81, 93]
    assert idx[1, :5].tolist() == [0, 1, 2, 3, 4] and valid[1].tolist() == [True] * 5 + [False] * 3
    assert not valid[2].any()
