"""VisionEncoder: chunking the frames changes nothing but memory."""

import pytest
import torch

from lit_bvllm.backbones import eager_attention
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
                                 num_workers=0, batch_size=2, max_frames=4, visual_tokens=96)
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


def _siglip_tower(path):
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                             image_size=32, patch_size=8)
    SiglipVisionModel(cfg).save_pretrained(path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


def test_the_tower_runs_up_to_the_feature_layer_and_gives_hfs_hidden_state(tiny, tmp_path):
    """Only the layers up to ``feature_layer`` run (the ones after it were thrown away), and what comes out is the
    HF tower's own ``hidden_states[feature_layer]`` (and that layer's [CLS] attention), for CLIP and SigLIP."""
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, 3, 3, 32, 32), generator=g, dtype=torch.uint8)
    mask = torch.ones(2, 3, dtype=torch.bool)
    for path, layers in ((tiny["vision"], 4), (_siglip_tower(tmp_path / "siglip"), 3)):
        for feature_layer in (-2, -1, 1):
            enc = VisionEncoder(path, feature_layer=feature_layer, chunk=4)
            clip = enc.has_cls
            calls = []
            for i, layer in enumerate(enc._layers()):
                layer.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
            with torch.no_grad():
                out = enc(frames, mask, mask, attention=clip)
                depth = feature_layer % (layers + 1)
                assert sorted(set(calls)) == list(range(depth)) and len(calls) == 2 * depth  # 6 frames, chunks of 4
                pixels = ((frames.flatten(0, 1).float() - enc.pixel_mean) / enc.pixel_std)
                with eager_attention(enc.tower, clip):
                    ref = enc.tower(pixel_values=pixels, output_hidden_states=True, output_attentions=clip)
            want = ref.hidden_states[feature_layer].view(2, 3, -1, enc.width)
            torch.testing.assert_close(out["frames"], want[:, :, 1:] if clip else want)
            torch.testing.assert_close(out["cls"], want[:, :, 0] if clip else want.mean(2))
            if clip:  # the [CLS] attention of the layer whose output is used (layer depth-1, 0-based)
                attn = ref.attentions[depth - 1][:, :, 0, 1:].mean(1).view(2, 3, -1)
                torch.testing.assert_close(out["cls_attn"], attn)
        assert len(enc._layers()) == layers  # the tower keeps every layer (and its state dict) afterwards
    with pytest.raises(ValueError, match="feature_layer 0"):
        VisionEncoder(tiny["vision"], feature_layer=0)
    with pytest.raises(ValueError, match="feature_layer -6"):
        VisionEncoder(tiny["vision"], feature_layer=-6)
