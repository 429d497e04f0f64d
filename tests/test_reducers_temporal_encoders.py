"""BLIP-3-Video temporal encoders: TokenLearner space-time pooling and the grouped Token Turing Machine."""

import pytest
import torch
from reducer_contract import check_contract, inputs

from lit_bvllm.reducers.sampling import uniform_frame_mask
from lit_bvllm.reducers.tokenlearner import TokenLearner, TokenLearnerPool
from lit_bvllm.reducers.ttm import GroupedTTM, timestamp_encoding

D, N = 16, 9  # the harness's width and tokens per frame


def small_ttm(**overrides) -> GroupedTTM:
    args = dict(tokens_per_frame=N, memory_slots=2, num_tokens=8, num_layers=2, num_heads=4, max_frames=6)
    return GroupedTTM(D, **(args | overrides))


def test_contract_tokenlearner():
    check_contract(lambda: TokenLearner(D, num_tokens=8), text_conditioned=False)
    check_contract(lambda: TokenLearner(D, num_tokens=8, max_frames=4), text_conditioned=False)


def test_contract_grouped_ttm():
    check_contract(small_ttm, text_conditioned=False)
    check_contract(lambda: small_ttm(final_pool="mean", max_frames=None), text_conditioned=False, ts=(1, 3, 16))


def test_tokenlearner_zeroed_mlp_gives_mean_of_valid_tokens():
    torch.manual_seed(0)
    tl = TokenLearner(D, num_tokens=5).eval()
    torch.nn.init.zeros_(tl.pool.mlp[-1].weight)
    batch = inputs(2, 6, lengths=[6, 3])
    out = tl(**batch)
    for b, t in enumerate([6, 3]):
        mean = batch["frames"][b, :t].reshape(-1, D).mean(0)  # valid frames only
        torch.testing.assert_close(out.tokens[b], mean.expand(5, D), atol=1e-6, rtol=0)
    assert out.info["num_tokens"].tolist() == [5, 5]
    torch.testing.assert_close(out.info["attention"][1, :3].sum((0, 1)), torch.ones(5))
    assert (out.info["attention"][1, 3:] == 0).all()


def test_tokenlearner_permutation_invariant_over_space_time():
    torch.manual_seed(0)
    tl = TokenLearner(D, num_tokens=4).eval()
    batch = inputs(1, 5)
    flat = batch["frames"].reshape(1, 5 * N, D)  # (1, T, N, D) -> (1, T*N, D)
    shuffled = flat[:, torch.randperm(5 * N)].reshape(1, 5, N, D)
    a = tl(**batch).tokens
    b = tl(**(batch | {"frames": shuffled})).tokens
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("make", [lambda: TokenLearner(D, num_tokens=4), small_ttm], ids=["tokenlearner", "gttm"])
def test_padding_never_leaks(make):
    torch.manual_seed(0)
    reducer = make().eval()
    batch = inputs(2, 7, lengths=[7, 4])
    noisy = batch["frames"].clone()
    noisy[1, 4:] = torch.randn(3, N, D) * 100
    a = reducer(**batch).tokens
    b = reducer(**(batch | {"frames": noisy})).tokens
    assert torch.equal(a, b)


@pytest.mark.parametrize("make", [lambda: TokenLearner(D, num_tokens=4), small_ttm], ids=["tokenlearner", "gttm"])
def test_sample_without_frames_gives_no_tokens(make):
    torch.manual_seed(0)
    reducer = make()
    batch = inputs(2, 3, lengths=[3, 0])
    batch["frames"].requires_grad_(True)
    out = reducer(**batch)
    assert out.token_mask[0].all() and not out.token_mask[1].any()
    assert out.info["num_tokens"].tolist() == [out.tokens.shape[1], 0]
    assert (out.tokens[1] == 0).all() and torch.isfinite(out.tokens).all()
    out.tokens.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in reducer.parameters() if p.grad is not None)
    empty = reducer(**inputs(1, 2, lengths=[0]))  # a batch with no frame at all
    assert not empty.token_mask.any() and torch.isfinite(empty.tokens).all()


def test_tokenlearner_pool_weights_and_budget():
    pool = TokenLearnerPool(D, 3)
    x = torch.randn(4, 10, D)
    mask = torch.arange(10)[None] < torch.tensor([10, 4, 1, 0])[:, None]
    tokens, w = pool(x, mask)
    assert tokens.shape == (4, 3, D) and w.dtype == torch.float32
    torch.testing.assert_close(w[:3].sum(1), torch.ones(3, 3))
    assert (w[~mask] == 0).all() and (tokens[3] == 0).all()
    torch.testing.assert_close(tokens[2], x[2, 0].expand(3, D))  # one valid token: every output is that token
    assert TokenLearner(D, num_tokens=7).budget == 7


def test_uniform_frame_mask():
    mask = torch.tensor([[True] * 8, [True] * 3 + [False] * 5, [False, True, False, True, True, True, False, True]])
    keep = uniform_frame_mask(mask, 4)
    assert keep.sum(1).tolist() == [4, 3, 4]
    assert keep[0].nonzero().flatten().tolist() == [1, 3, 5, 7]  # midpoints of 4 segments of 8
    assert not (keep & ~mask).any()
    assert torch.equal(uniform_frame_mask(keep, 4), keep)  # idempotent
    assert torch.equal(uniform_frame_mask(mask, None), mask)


def test_timestamp_encoding_golden_row():
    row = timestamp_encoding(torch.tensor([0, 1]), 8)
    expected = torch.tensor([0.841471, 0.540302, 0.099833, 0.995004, 0.01, 0.99995, 0.001, 1.0])
    torch.testing.assert_close(row[1], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(row[0], torch.tensor([0.0, 1.0] * 4))
    assert timestamp_encoding(torch.arange(3), 7).shape == (3, 7)


def test_ttm_zeroed_write_gives_mean_of_memory_and_processed():
    torch.manual_seed(0)
    ttm = small_ttm(memory_slots=3).eval()
    torch.nn.init.zeros_(ttm.write.mlp[-1].weight)
    memory, x = torch.randn(2, N, 3, D), torch.randn(2, N, D)
    processed = ttm.process(memory, x)
    assert processed.shape == (2, N, 4, D)
    new = ttm.step(memory, x)
    mean = torch.cat([memory, processed], dim=2).mean(2, keepdim=True)  # the 2G+1 = 7 tokens of each group
    torch.testing.assert_close(new, mean.expand(2, N, 3, D), atol=1e-6, rtol=1e-5)


def test_ttm_order_sensitive_and_groups_independent():
    torch.manual_seed(0)
    ttm = small_ttm().eval()
    batch = inputs(1, 4)
    swapped = batch["frames"][:, [1, 0, 2, 3]]
    a = ttm(**batch).tokens
    b = ttm(**(batch | {"frames": swapped})).tokens
    assert not torch.allclose(a, b, atol=1e-4)
    # each group j only sees token j of every frame: changing token 0 changes memory group 0 only
    mean_ttm = small_ttm(final_pool="mean").eval()
    changed = batch["frames"].clone()
    changed[:, :, 0] += 1
    c, d = mean_ttm(**batch).tokens, mean_ttm(**(batch | {"frames": changed})).tokens
    assert not torch.allclose(c[0, 0], d[0, 0]) and torch.equal(c[0, 1:], d[0, 1:])


def test_ttm_output_count_and_budget():
    ttm = small_ttm(num_tokens=5)
    assert ttm.budget == 5 and small_ttm(final_pool="mean").budget == N
    for T in (1, 3, 20):
        out = ttm.eval()(**inputs(2, T))
        assert out.tokens.shape == (2, 5, D) and out.token_mask.all()
        assert out.info["frame_indices"].shape == (2, min(T, 6))
    out = small_ttm(final_pool="mean").eval()(**inputs(2, 3))
    assert out.tokens.shape == (2, N, D) and out.info["num_tokens"].tolist() == [N, N]
    with pytest.raises(ValueError, match="tokens_per_frame"):
        small_ttm(tokens_per_frame=4)(**inputs(1, 2))
