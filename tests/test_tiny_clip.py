"""The tiny CLIP of make-tiny: frames and captions from the scene generator, contrastive pretraining, and a
checkpoint that loads back through from_pretrained(local_path) as a real CLIP does."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, CLIPModel, CLIPVisionModel

from lit_bvllm.backbones import load_image_processor, load_vision_tower
from lit_bvllm.world.scenes import COLOURS, NEEDLE_COLOURS, NEEDLE_SHAPES
from lit_bvllm.world.tiny_clip import (
    HEADS,
    PLACES,
    contrastive_loss,
    frame_caption,
    frame_labels,
    frame_record,
    make_tiny_clip,
    place,
    render_dataset,
)


def test_frames_captions_and_labels_follow_their_record():
    seen_needle = seen_none = 0
    for i in range(40):
        record = frame_record(np.random.default_rng([0, 1000, i]), 128, 96)
        text, labels = frame_caption(record), frame_labels(record)
        bg = record["background"]["colours"][0]
        assert text.endswith(".") and bg in text
        for d in record["distractors"]:
            assert f"{d['colour']} {d['shape']} at the {place(*d['position'], 128, 96)}" in text
        if record["needles"]:
            n = record["needles"][0]
            seen_needle += 1
            assert text.startswith(f"a {n['colour']} {n['shape']}") or text.startswith(f"an {n['colour']} {n['shape']}")
            assert labels["needle"] == 1 and NEEDLE_SHAPES[labels["shape"]] == n["shape"]
            assert list(NEEDLE_COLOURS)[labels["colour"]] == n["colour"]
            assert PLACES[labels["place"]] == place(*n["position"], 128, 96)
        else:
            seen_none += 1
            assert text.startswith("no shape.") and labels["needle"] == 0
            assert labels["shape"] == HEADS["shape"] - 1 and labels["colour"] == HEADS["colour"] - 1
    assert seen_needle > 5 and seen_none > 5


def test_rendered_frames_show_the_captioned_needle():
    frames, captions, labels = render_dataset(12, seed=3)
    assert frames.shape == (12, 96, 128, 3) and frames.dtype == np.uint8 and len(captions) == 12
    for frame, text, shape, colour in zip(frames, captions, labels["shape"], labels["colour"]):
        if shape < len(NEEDLE_SHAPES):
            rgb = np.array(COLOURS[list(NEEDLE_COLOURS)[colour]])
            assert (np.abs(frame.astype(int) - rgb).max(-1) == 0).sum() > 100  # the needle's pixels are drawn
    again = render_dataset(12, seed=3)
    assert np.array_equal(again[0], frames) and again[1] == captions  # deterministic


def test_place_is_the_grid_cell():
    assert place(1, 1, 90, 90) == "top left" and place(45, 45, 90, 90) == "centre"
    assert place(89.9, 89.9, 90, 90) == "bottom right" and place(89.9, 1, 90, 90) == "top right"


def test_contrastive_loss_counts_repeated_captions_as_positives():
    e = torch.eye(3)
    img = torch.stack([e[0], e[0], e[1]])  # frames 0 and 1 share a caption
    txt = torch.stack([e[0], e[0], e[1]])
    same = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    scale = torch.tensor(50.0)
    loss = contrastive_loss(img, txt, scale, same)
    # the ideal embedding: each of rows 0 and 1 ties its two positives, row 2 stands alone: loss = 2/3 log 2
    assert loss.item() == pytest.approx(2 / 3 * np.log(2), abs=1e-4)
    assert contrastive_loss(img, txt[[2, 0, 1]], scale, same) > loss + 10

    # on any embedding: the InfoNCE of both directions with a uniform target over each row's positives
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    logits = 7.0 * torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
    pos = same.float()
    naive = 0.0
    for i in range(3):
        row, col = logits[i].log_softmax(0), logits[:, i].log_softmax(0)
        naive += -(pos[i] * row).sum() / pos[i].sum() / 6 - (pos[:, i] * col).sum() / pos[:, i].sum() / 6
    assert contrastive_loss(a, b, torch.tensor(7.0), same).item() == pytest.approx(naive.item(), abs=1e-5)
    assert (contrastive_loss(a, b, torch.tensor(7.0), torch.eye(3, dtype=torch.bool)).item()
            != pytest.approx(naive.item(), abs=1e-3))


def test_pretraining_lowers_the_losses(tmp_path):
    out = make_tiny_clip(tmp_path / "clip", steps=30, num_frames=512, batch_size=64, width=32, num_layers=2)
    first, last = out["log"][0], out["log"][-1]
    assert last["step"] == 29 and last["contrastive"] < 0.9 * first["contrastive"] and last["aux"] < 0.8 * first["aux"]


def test_saved_clip_reloads_through_from_pretrained_with_identical_outputs(tmp_path):
    """Written as a released CLIP folder is laid out; read back by CLIPModel.from_pretrained (both towers) and by
    the suite's vision-tower loader (its vision half), with outputs identical to the model that was written."""
    out = make_tiny_clip(tmp_path / "clip", steps=2, num_frames=64, batch_size=32, width=32, num_layers=2)
    folder = Path(out["path"])
    for f in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        assert (folder / f).is_file(), f
    assert json.loads((folder / "config.json").read_text())["model_type"] == "clip"
    clip = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    proc = load_image_processor(folder)
    frames, captions, _ = render_dataset(4, seed=9)
    pixels = proc(images=list(frames), return_tensors="pt")["pixel_values"]
    assert pixels.shape == (4, 3, 32, 32)
    text = tok(captions, padding=True, return_tensors="pt")
    assert (text["input_ids"] == tok.eos_token_id).any(1).all()  # the text tower pools at the end token
    with torch.no_grad():
        tower = load_vision_tower(folder).eval()
        assert isinstance(tower, CLIPVisionModel)
        ours = tower(pixels, output_hidden_states=True).hidden_states[-2]
        theirs = clip.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
        assert torch.equal(ours, theirs)
        again = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        a = clip(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels)
        b = again(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels)
        assert torch.equal(a.logits_per_image, b.logits_per_image) and a.logits_per_image.shape == (4, 4)


def test_a_clip_folder_missing_vision_weights_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    out = make_tiny_clip(tmp_path / "clip", steps=0, width=32, num_layers=2)
    path = Path(out["path"]) / "model.safetensors"
    state = {k: v for k, v in load_file(path).items() if "vision_model.encoder.layers.0." not in k}
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lacks weights of its vision model"):
        load_vision_tower(out["path"])


def test_pretraining_frames_are_disjoint_from_make_synthetic_streams():
    """The CLIP draws its frames from numpy stream [seed, 1000, i], the Q-Former from [seed, 1001, i]; make-synthetic's
    streams are 0-7, 10, 12 and 13 (generate.py; 12-13 the validation set's), 8, 9 and 11 (the needle sets,
    needles.py)."""
    import lit_bvllm.world.generate as generate
    import lit_bvllm.world.needles as needles
    from lit_bvllm.world.tiny_clip import CLIP_STREAM
    from lit_bvllm.world.tiny_qformer import QFORMER_STREAM

    streams = [v for module in (generate, needles) for k, v in vars(module).items()
               if k.isupper() and isinstance(v, int) and k != "MIN_DURATION"]
    assert sorted(streams) == list(range(14))  # each stream once: no two files share a random stream
    assert CLIP_STREAM not in streams and QFORMER_STREAM not in streams and CLIP_STREAM != QFORMER_STREAM
