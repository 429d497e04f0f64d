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


def test_frames_travel_as_uint8_and_the_tower_sees_what_the_processor_would_give_it(tiny, synthetic):
    """The data modules hand the device resized uint8 frames (a quarter of float32's bytes); the encoder normalises
    them with the tower's processor mean and std: the features equal those of the processor's own float output."""
    import numpy as np

    from datamodules import VideoInstructDataModule
    from datamodules.transforms import FrameTransform

    dm = VideoInstructDataModule(str(synthetic / "finetune.json"), tiny["llm"], vision_tower=tiny["vision"],
                                 num_workers=0, batch_size=2, max_frames=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].dtype == torch.uint8 and batch["frames"].shape[2:] == (3, 32, 32)
    rng = np.random.default_rng(0)
    raw = (rng.random((3, 48, 64, 3)) * 255).astype(np.uint8)
    for policy in ("processor", "plain"):
        as_bytes = FrameTransform(policy, tiny["vision"], normalize=False)(raw)
        as_floats = FrameTransform(policy, tiny["vision"])(raw)
        assert as_bytes.dtype == torch.uint8 and as_floats.dtype == torch.float32
        assert as_bytes.element_size() * 4 == as_floats.element_size()
        enc = VisionEncoder(tiny["vision"]).eval()
        mask = torch.ones(1, 3, dtype=torch.bool)
        with torch.no_grad():
            a, b = enc(as_bytes[None], mask, mask), enc(as_floats[None], mask, mask)
        # processor: the same numbers (PIL's resize is uint8 already); plain: its bicubic output rounded to bytes
        tol = 1e-4 if policy == "processor" else 0.05
        torch.testing.assert_close(a["frames"], b["frames"], atol=tol, rtol=tol)
