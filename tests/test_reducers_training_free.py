"""The training-free token reducers (VisionZip, FastVID): golden values worked out by hand from the papers' steps
(and the released code's choices where the papers are terse), the tower's keys they read, and the budget on long
videos."""

import math

import pytest
import torch

from lit_bvllm.reducers import FastV, FastVID, VisionZip
from lit_bvllm.reducers.fastvid import density_peaks, temporal_segments


def one_frame(x, attn, cls=(9.0, 9.0)):
    x = torch.tensor(x)[None, None]
    return dict(frames=x, cls=torch.tensor(cls)[None, None], frame_mask=torch.ones(1, 1, dtype=torch.bool),
                cls_attn=torch.tensor(attn)[None, None])


def test_visionzip_keeps_cls_and_the_most_attended_patches_and_merges_the_rest_into_strided_targets():
    batch = one_frame([[1.0, 0], [0, 1], [1, 1], [2, 0]], [0.1, 0.4, 0.3, 0.2])
    # dominant 2 = [CLS] + patch 1; the rest (0, 2, 3) at stride 3 // 1: target patch 0, which 2 and 3 join:
    # x0 + mean(x2, x3) (the released code adds the mean to the target)
    out = VisionZip(2, dominant=2, contextual=1, max_frames=1)(**batch)
    torch.testing.assert_close(out.tokens[0], torch.tensor([[9.0, 9], [0, 1], [2.5, 0.5]]))
    assert out.info["dominant"][0, 0].tolist() == [False, True, False, False]
    # two targets at stride 3 // 2 = 1: patches 0 and 2; patch 3 = (2, 0) is closer to patch 0 by cosine
    out = VisionZip(2, dominant=2, contextual=2, max_frames=1)(**batch)
    torch.testing.assert_close(out.tokens[0], torch.tensor([[9.0, 9], [0, 1], [3, 0], [1, 1]]))
    # keys, when given, decide the joining instead of the features: patch 3's key points at patch 2's
    keys = torch.tensor([[1.0, 0], [0, 1], [0, 1], [0, 1]])[None, None]
    out = VisionZip(2, dominant=2, contextual=2, max_frames=1)(**batch, keys=keys)
    torch.testing.assert_close(out.tokens[0], torch.tensor([[9.0, 9], [0, 1], [1, 0], [3, 1]]))


def test_fastvid_cuts_segments_at_the_least_similar_frames_and_below_tau():
    g = torch.tensor([[1.0, 0], [1, 0.1], [1, 0.2], [0, 1], [0.1, 1], [0.2, 1]])[None]
    valid = torch.ones(1, 6, dtype=torch.bool)
    assert temporal_segments(g, valid, segments=2, tau=-1).tolist() == [[0, 0, 0, 1, 1, 1]]
    assert temporal_segments(g, valid, segments=1, tau=-1).tolist() == [[0] * 6]
    assert temporal_segments(g, valid, segments=1, tau=0.999).tolist() == [[0, 1, 2, 3, 4, 5]]
    padded = torch.tensor([[True] * 4 + [False] * 2])
    assert temporal_segments(g, padded, segments=2, tau=-1)[0, :4].tolist() == [0, 0, 0, 1]  # cuts among real only
    # 3 segments of 4 real frames: the two least similar real pairs (2-3, then 0-1), never a pair with padding
    assert temporal_segments(g, padded, segments=3, tau=-1)[0, :4].tolist() == [0, 1, 1, 2]


def test_fastvid_density_peaks_rank_dense_and_isolated_tokens():
    x = torch.tensor([[0.0], [1], [2], [10]])
    score = density_peaks(x, torch.tensor([True, True, True, True]), knn=2)
    rho_line, rho_far = math.exp(-0.5), math.exp(-32)  # mean of (0, nearest²): 1 on the line, 64 for the outlier
    want = [rho_line * 10, rho_line * 1, rho_line * 1, rho_far * 8]  # the first of equal densities is the peak
    torch.testing.assert_close(score, torch.tensor(want))
    masked = density_peaks(x, torch.tensor([False, True, True, True]), knn=2)
    assert masked[0] == float("-inf") and masked[1] == pytest.approx(rho_line * 9)  # patch 1 peaks: 9 from 10


def test_fastvid_golden_two_frames():
    """budget 4 over 2 frames: R = 2 a frame, d = 0.5: one salient token a frame, and the segment's 2 context
    tokens at its one anchor (the last frame, p = 2); the other non-salient patches merge into them."""
    frames = torch.tensor([[[1.0, 0], [0, 1], [5, 5], [1, 0.1]], [[1.0, 0], [0, 1], [0, 1.1], [9, 9]]])[None]
    attn = torch.tensor([[0.0, 0, 1, 0], [0, 0, 0, 1]])[None]
    reducer = FastVID(2, budget=4, max_frames=2, segments=1, tau=-1, context_share=0.5, anchor_stride=2, beta=0.6,
                      knn=2)
    out = reducer(frames, torch.ones(1, 2, 2), torch.ones(1, 2, dtype=torch.bool), cls_attn=attn)
    # anchor frame 1's candidates (1,0), (0,1), (0,1.1): density peaks pick (0,1) then (1,0); each takes two:
    # 0.6 x + 0.4 mean(joined) (w = max(1/3, beta))
    want = torch.tensor([[5.0, 5], [1, 0.02], [0, 1.02], [9, 9]])
    torch.testing.assert_close(out.tokens[0], want)
    assert out.info["anchors"].tolist() == [[False, True]] and out.info["segments"].tolist() == [[0, 0]]


@pytest.mark.parametrize("make", [lambda d: VisionZip(d, dominant=4, contextual=2, max_frames=16),
                                  lambda d: FastVID(d, budget=96, max_frames=32),
                                  lambda d: FastV(d, num_frames=6, budget=96)], ids=["VisionZip", "FastVID", "FastV"])
def test_a_training_free_reducer_keeps_at_most_theta_on_16_to_256_frames(make):
    """FastV hands the LLM at most θ tokens too (its pruning inside the LLM only lowers what later layers see)."""
    torch.manual_seed(0)
    reducer = make(8)
    for T in (16, 64, 256):
        frames, cls = torch.randn(2, T, 16, 8), torch.randn(2, T, 8)
        mask = torch.arange(T)[None] < torch.tensor([[T], [T // 3]])
        attn = torch.softmax(torch.randn(2, T, 16), -1)
        out = reducer(frames, cls, mask, cls_attn=attn)
        assert (out.token_mask.sum(1) <= reducer.budget).all() and (out.token_mask.sum(1) > 0).all()
        again = reducer(frames, cls, mask, cls_attn=attn)
        assert torch.equal(out.tokens, again.tokens)


def test_the_tower_gives_its_patch_keys_averaged_over_heads(tiny):
    """VisionZip's metric: the feature layer's attention keys (k_proj of its normed input), heads averaged."""
    from lit_bvllm.vision import VisionEncoder

    enc = VisionEncoder(tiny["vision"])
    frames = torch.randint(0, 255, (1, 2, 3, 32, 32), dtype=torch.uint8)
    frames = torch.nn.functional.interpolate(frames[0].float(), size=enc.tower.config.image_size).to(torch.uint8)[None]
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = enc(frames, mask, mask, attention=True, keys=True)
    pixels = (frames[0].float() - enc.pixel_mean) / enc.pixel_std
    with torch.no_grad():
        hidden = enc.tower(pixel_values=pixels, output_hidden_states=True).hidden_states[enc.depth - 1]
        layer = enc._layers()[enc.depth - 1]
        k = layer.self_attn.k_proj(layer.layer_norm1(hidden))
    heads = enc.tower.config.num_attention_heads
    want = k.reshape(2, k.shape[1], heads, -1).mean(2)[:, 1:]
    torch.testing.assert_close(out["keys"][0], want, atol=1e-5, rtol=1e-5)
    assert out["keys"].shape == (1, 2, enc.num_patches, enc.width // heads)
