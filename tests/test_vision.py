"""VisionEncoder: chunking the frames changes nothing but memory."""

import torch

from lit_bvllm.vision import VisionEncoder


def test_chunk_size_does_not_change_the_features(tiny):
    g = torch.Generator().manual_seed(0)
    frames = torch.randn(2, 5, 3, 32, 32, generator=g)
    frame_mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    keep = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)  # 3 of row 0 (one padding), 5 of row 1
    outs = []
    for chunk in (1, 3, 64):  # one frame per call, a chunk that splits a row, every frame in one call
        enc = VisionEncoder(tiny["vision"], chunk=chunk).eval()
        with torch.no_grad():
            outs.append(enc(frames, frame_mask, keep, attention=True))
    assert outs[0]["frames"].shape == (2, 5, 16, 64) and outs[0]["frame_mask"].sum(1).tolist() == [3, 5]
    assert outs[0]["frame_index"][0].tolist() == [0, 2, 3, -1, -1]
    for other in outs[1:]:
        for key in ("frames", "cls", "cls_attn"):
            torch.testing.assert_close(other[key], outs[0][key], atol=1e-5, rtol=1e-5)
        for key in ("frame_mask", "frame_index"):
            assert torch.equal(other[key], outs[0][key])
