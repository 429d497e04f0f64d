"""Parameter-free and simple reducers: uniform sampling, mean pooling, identity, weighted token sampler."""

import pytest
import torch
from reducer_contract import D, N, check_contract, inputs

from lit_bvllm.reducers.identity import Identity
from lit_bvllm.reducers.meanpool import MeanPool
from lit_bvllm.reducers.sampling import select_uniform_frames
from lit_bvllm.reducers.uniform import Uniform, spatial_pool
from lit_bvllm.reducers.weighted_sampler import WeightedSampler


@pytest.mark.parametrize(
    "make",
    [
        lambda: Uniform(D, num_frames=8, budget=8 * N),
        lambda: Uniform(D, num_frames=4, pool=2, budget=16),
        lambda: MeanPool(D, num_patches=N, budget=N + 4),
        lambda: Identity(D, budget=200 * N),
        lambda: Identity(D, budget=4 * N + 3, truncate=True, num_patches=N),
        lambda: WeightedSampler(D, tokens_per_frame=3, max_frames=4),
        lambda: WeightedSampler(D, tokens_per_frame=3, max_frames=4, weighting="mul_renorm"),
        lambda: WeightedSampler(D, tokens_per_frame=3, score="learned", max_frames=4),
        lambda: WeightedSampler(D, tokens_per_frame=1, score="learned", weighting="mul_renorm"),
    ],
    ids=["uniform", "uniform-pool2", "meanpool", "identity", "identity-truncate", "wts-cls", "wts-cls-renorm",
         "wts-learned", "wts-learned-renorm-k1"],
)
def test_contract(make):
    check_contract(make, text_conditioned=False)


def test_uniform_takes_the_midpoint_frames_whole():
    frames = torch.randn(1, 100, N, D)
    mask = torch.ones(1, 100, dtype=torch.bool)
    idx, valid = select_uniform_frames(mask, 8)
    assert idx.tolist() == [[6, 18, 31, 43, 56, 68, 81, 93]] and valid.all()  # floor((i + 0.5) · 100 / 8)
    reducer = Uniform(D, num_frames=8)
    out = reducer(frames, frames.mean(2), mask)
    assert out.info["frame_indices"].tolist() == idx.tolist()
    torch.testing.assert_close(out.tokens, frames[0, idx[0]].reshape(1, 8 * N, D), rtol=0, atol=0)
    assert reducer.frames_to_encode(mask).nonzero()[:, 1].tolist() == idx[0].tolist()


def test_uniform_frames_follow_real_frames_not_positions():
    mask = torch.tensor([[False, True, True, False, True, True]])  # real frames need not be a prefix
    idx, valid = select_uniform_frames(mask, 2)
    assert idx.tolist() == [[2, 5]] and valid.all()  # positions 1 and 3 of the real frames [1, 2, 4, 5]
    idx, valid = select_uniform_frames(mask, 8)
    assert idx[valid].tolist() == [1, 2, 4, 5] and valid.sum() == 4


def test_spatial_pool_is_block_mean():
    x = torch.arange(2 * 16 * 3, dtype=torch.float).reshape(1, 2, 16, 3)  # (B, T, 4x4 patches, D)
    grid = x.reshape(1, 2, 4, 4, 3)
    manual = grid.reshape(1, 2, 2, 2, 2, 2, 3).mean((3, 5)).reshape(1, 2, 4, 3)  # 2x2 block means, raster order
    torch.testing.assert_close(spatial_pool(x, 2), manual)
    odd = torch.arange(25, dtype=torch.float).reshape(1, 1, 25, 1)  # 5x5 grid: border windows average what they cover
    assert spatial_pool(odd, 2).flatten().tolist() == [3.0, 5.0, 6.5, 13.0, 15.0, 16.5, 20.5, 22.5, 24.0]
    with pytest.raises(ValueError, match="pool=1"):
        spatial_pool(torch.zeros(1, 1, 10, 2), 2)


def test_uniform_over_budget_names_the_flags():
    with pytest.raises(ValueError, match="init_args.num_frames.*init_args.pool.*init_args.budget"):
        Uniform(D, num_frames=8, budget=8 * N - 1)(**inputs(1, 10))
    out = Uniform(D, num_frames=2, pool=2, budget=8)(**inputs(1, 10))  # 3x3 -> 2x2 tokens per frame
    assert out.tokens.shape == (1, 8, D)


def test_meanpool_means_and_frame_order():
    batch = inputs(2, 6, lengths=[6, 4])
    reducer = MeanPool(D, num_patches=N, budget=N + 10)
    out = reducer(**batch)
    f = batch["frames"]
    assert out.info["num_tokens"].tolist() == [6 + N, 4 + N]
    torch.testing.assert_close(out.tokens[1, :4], f[1, :4].mean(1))  # temporal: mean over patches
    torch.testing.assert_close(out.tokens[1, 4 : 4 + N], f[1, :4].mean(0))  # spatial: mean over real frames only
    assert (out.tokens[1, 4 + N :] == 0).all() and not out.token_mask[1, 4 + N :].any()
    perm = torch.randperm(6)
    shuffled = dict(batch, frames=f[:1, perm], cls=batch["cls"][:1, perm], frame_mask=batch["frame_mask"][:1])
    again = reducer(**shuffled)
    torch.testing.assert_close(again.tokens[0, 6:], out.tokens[0, 6:])  # spatial tokens: order-free
    torch.testing.assert_close(again.tokens[0, :6], out.tokens[0, perm])  # temporal tokens follow the frames
    with pytest.raises(ValueError, match="init_args.budget"):
        MeanPool(D, num_patches=N, budget=N)
    with pytest.raises(ValueError, match="num_patches=9"):
        MeanPool(D, num_patches=16, budget=20)(**batch)


def test_identity_raises_or_truncates_to_whole_frames():
    batch = inputs(2, 10, lengths=[10, 3])
    with pytest.raises(ValueError, match=r"1 sample\(s\).*sample 0: 10 frames.*truncate=true"):
        Identity(D, budget=5 * N)(**batch)
    out = Identity(D, budget=10 * N)(**batch)
    torch.testing.assert_close(out.tokens[0], batch["frames"][0].reshape(10 * N, D), rtol=0, atol=0)
    assert out.info["num_tokens"].tolist() == [10 * N, 3 * N]
    reducer = Identity(D, budget=5 * N + 2, truncate=True, num_patches=N)
    out = reducer(**batch)
    assert out.info["num_tokens"].tolist() == [5 * N, 3 * N]
    idx = out.info["frame_indices"][0]
    assert idx.tolist() == [1, 3, 5, 7, 9]  # uniformly spaced whole frames, not the first five
    torch.testing.assert_close(out.tokens[0], batch["frames"][0, idx].reshape(5 * N, D), rtol=0, atol=0)
    assert reducer.frames_to_encode(batch["frame_mask"]).sum(1).tolist() == [5, 3]
    with pytest.raises(ValueError, match="num_patches"):
        Identity(D, budget=100, truncate=True)


def one_hot_attention(T: int, j: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.full((1, T), j), N).float()  # (1, T, N)


@pytest.mark.parametrize("weighting", ["none", "mul_renorm"])
def test_weighted_sampler_one_hot_attention_keeps_that_token(weighting):
    batch = inputs(1, 4)
    batch["cls_attn"] = one_hot_attention(4, 5)
    out = WeightedSampler(D, tokens_per_frame=1, weighting=weighting)(**batch)
    assert out.info["token_indices"].flatten().tolist() == [5] * 4
    assert (out.info["token_weights"] == 1.0).all()
    torch.testing.assert_close(out.tokens[0], batch["frames"][0, :, 5], rtol=0, atol=0)


def test_weighted_sampler_keeps_everything_in_raster_order_when_k_covers_n():
    batch = inputs(2, 5, lengths=[5, 2])
    for k in (N, N + 7):
        out = WeightedSampler(D, tokens_per_frame=k)(**batch)
        assert out.info["num_tokens"].tolist() == [5 * N, 2 * N]
        torch.testing.assert_close(out.tokens[0], batch["frames"][0].reshape(5 * N, D), rtol=0, atol=0)


def test_weighted_sampler_top_k_ties_and_renorm():
    batch = inputs(1, 2)
    attn = torch.tensor([0.1, 0.3, 0.0, 0.3, 0.05, 0.05, 0.1, 0.05, 0.05])
    batch["cls_attn"] = attn.expand(1, 2, N)
    out = WeightedSampler(D, tokens_per_frame=3, weighting="mul_renorm")(**batch)
    assert out.info["token_indices"][0, 0].tolist() == [0, 1, 3]  # 0.3, 0.3, then the first of the 0.1 ties
    weights = out.info["token_weights"][0, 0]
    torch.testing.assert_close(weights, 3 * attn[[0, 1, 3]] / 0.7)
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0))  # mean multiplier 1: average norm kept
    torch.testing.assert_close(out.tokens[0, :3], batch["frames"][0, 0, [0, 1, 3]] * weights[:, None])
    with pytest.raises(ValueError, match="score=learned.*SigLIP"):
        WeightedSampler(D)(**dict(batch, cls_attn=None))


def test_learned_scores_reach_the_scorer_with_unit_forward_weights():
    reducer = WeightedSampler(D, tokens_per_frame=2, score="learned").train()
    batch = inputs(1, 3)
    out = reducer(**batch)
    torch.testing.assert_close(out.info["token_weights"], torch.ones(1, 3, 2))
    kept = torch.gather(batch["frames"][0], 1, out.info["token_indices"][0][..., None].expand(3, 2, D))
    torch.testing.assert_close(out.tokens[0], kept.reshape(6, D))
    out.tokens.pow(2).sum().backward()
    assert reducer.scorer.weight.grad.abs().sum() > 0
    assert not reducer.needs_cls_attention and WeightedSampler(D).needs_cls_attention


def test_every_reducer_stays_within_budget_for_an_hour_of_frames():
    d, n, T = 2, 4, 3600
    frames, attn = torch.randn(1, T, n, d), torch.rand(1, T, n)
    mask = torch.ones(1, T, dtype=torch.bool)
    reducers = [
        Uniform(d, num_frames=8, pool=2, budget=8),
        MeanPool(d, num_patches=n, budget=104),
        Identity(d, budget=400, truncate=True, num_patches=n),
        WeightedSampler(d, tokens_per_frame=2, max_frames=64),
        WeightedSampler(d, tokens_per_frame=2, score="learned", max_frames=64),
    ]
    for reducer in reducers:
        out = reducer(frames, frames.mean(2), mask, cls_attn=attn)
        assert 0 < int(out.token_mask.sum()) <= reducer.budget, type(reducer).__name__
        encoded = reducer.frames_to_encode(mask)
        assert int(encoded.sum()) <= reducer.budget
        sub = encoded[0]
        part = reducer(frames[:, sub], frames[:, sub].mean(2), mask[:, sub], cls_attn=attn[:, sub])
        torch.testing.assert_close(part.tokens, out.tokens)  # encoding only the chosen frames changes nothing
    assert [int(r.frames_to_encode(mask).sum()) for r in reducers] == [8, 100, 100, 64, 64]
