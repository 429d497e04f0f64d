"""A tiny CLIP pretrained on synthetic frames: the embedded default's vision tower, made the way real towers are.

A real video LLM's vision tower (CLIP ViT-L/14-336, SigLIP, EVA) is pretrained contrastively on image-caption
pairs, so its [CLS] token summarises what a frame shows; B-VLLM selects frames from that token alone (Lu et al.,
§3.2). A random tower's [CLS] barely sees a needle (``benchmarks/RESULTS.md``), so ``make-tiny`` pretrains a tiny
``transformers.CLIPModel`` (vision and text towers) on frames drawn by the synthetic scene generator
(:mod:`lit_bvllm.world`) with one caption per frame:

- the loss is CLIP's symmetric InfoNCE (Radford et al. 2021, Eq. in Fig. 3) over frame/caption pairs, with every
  identical caption in the batch counted as a positive (a repeated caption is not a negative);
- auxiliary linear heads on the [CLS] token of the layer the video LLM reads (``feature_layer``, -2 as in LLaVA
  and B-VLLM) classify needle presence, shape, colour and place, and the background: the supervised signal that
  a real tower's scale gives it for free, so that the token the selector reads is linearly a summary of the frame.

The frames come from their own random stream (``[seed, CLIP_STREAM, index]``), disjoint from every stream of
``make-synthetic`` (:mod:`lit_bvllm.world.generate`), so no evaluation frame is ever seen. The model is
written with ``save_pretrained`` next to its image processor and its text tokenizer, as a real CLIP checkpoint
folder is laid out, and loads back through :func:`lit_bvllm.backbones.load_vision_tower` (the vision half) or
``CLIPModel.from_pretrained`` (both towers, for training-free text-to-frame scores).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    PreTrainedTokenizerFast,
)

from lit_bvllm.world.describe import article, background_phrase, join
from lit_bvllm.world.render import distractor_centre, render_image, shape_mask
from lit_bvllm.world.scenes import (
    BACKGROUNDS,
    NEEDLE_COLOURS,
    NEEDLE_SHAPES,
    sample_video,
)

CLIP_STREAM = 1000  # numpy stream id of the pretraining frames; make-synthetic uses streams 0-7
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
PLACES = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")
HEADS = {  # auxiliary [CLS] heads: name -> classes (the last class of the needle heads is "no needle")
    "needle": 2,
    "shape": len(NEEDLE_SHAPES) + 1,
    "colour": len(NEEDLE_COLOURS) + 1,
    "place": len(PLACES) + 1,
    "background": len(BACKGROUNDS),
}
PATCH_HEADS = {"patch_shape": len(NEEDLE_SHAPES) + 1, "patch_colour": len(NEEDLE_COLOURS) + 1}  # per patch token
# Loss weight per head (1 when absent). A needle's shape is what a 32-px tower learns last: on the probe's held-out
# frames, 800 steps gave [CLS] shape accuracy 0.68 at weight 1 and 0.84 at weight 4; 1000 steps at weight 6, 0.95.
HEAD_WEIGHTS: dict[str, float] = {"shape": 6.0}


# ---------------------------------------------------------------------------------------------------- frames


def place(x: float, y: float, width: int, height: int) -> str:
    """The 3 x 3 grid cell of pixel (x, y): "top left", ..., "centre", ..., "bottom right"."""
    col = min(2, int(3 * x / width))
    row = min(2, int(3 * y / height))
    return PLACES[3 * row + col]


def frame_record(rng: np.random.Generator, width: int, height: int, needle_probability: float = 0.5) -> dict:
    """One still frame of a synthetic video: background, its distractors at a random moment and, with
    ``needle_probability``, one needle event's shape, drawn by the same samplers make-synthetic uses."""
    video = sample_video(rng, "", "", "train", (8, 32), (2, 4), width, height, min_needles=2)
    t = float(rng.uniform(0, video["duration"]))
    distractors = [dict(d, position=list(distractor_centre(d, t, width, height))) for d in video["distractors"]]
    needles = []
    if rng.random() < needle_probability:
        needles = [video["needles"][int(rng.integers(len(video["needles"])))]]
    return {"kind": "image", "width": width, "height": height, "background": video["background"],
            "distractors": distractors, "needles": needles}


def frame_caption(record: dict) -> str:
    """What the frame shows, needle first: "a red triangle at the top left. an orange circle at the centre. a
    navy background." (frames without a needle open with "no shape".)"""
    w, h = record["width"], record["height"]
    if record["needles"]:
        n = record["needles"][0]
        text = f"{article(n['colour'] + ' ' + n['shape'])} at the {place(*n['position'], w, h)}."
    else:
        text = "no shape."
    things = [f"{article(d['colour'] + ' ' + d['shape'])} at the {place(*d['position'], w, h)}"
              for d in record["distractors"]]
    return f"{text} {join(things)}. {background_phrase(record['background'])}."


def frame_labels(record: dict) -> dict[str, int]:
    """Class indices of the auxiliary heads (:data:`HEADS`)."""
    names = list(BACKGROUNDS)
    out = {"background": names.index(record["background"]["colours"][0])}
    if record["needles"]:
        n = record["needles"][0]
        out.update(needle=1, shape=NEEDLE_SHAPES.index(n["shape"]), colour=list(NEEDLE_COLOURS).index(n["colour"]),
                   place=PLACES.index(place(*n["position"], record["width"], record["height"])))
    else:
        out.update(needle=0, shape=len(NEEDLE_SHAPES), colour=len(NEEDLE_COLOURS), place=len(PLACES))
    return out


def patch_labels(record: dict, grid: int, min_cover: float = 0.2) -> dict[str, np.ndarray]:
    """Per cell of the tower's ``grid`` x ``grid`` patch grid (row-major, as the patch tokens come): the needle's shape
    and colour where it covers at least ``min_cover`` of the cell, else the "no needle" class."""
    shape = np.full(grid * grid, len(NEEDLE_SHAPES), np.int64)
    colour = np.full(grid * grid, len(NEEDLE_COLOURS), np.int64)
    if record["needles"]:
        n = record["needles"][0]
        mask = shape_mask(n["shape"], *n["position"], n["size"], record["width"], record["height"])
        h, w = mask.shape
        rows, cols = np.arange(h) * grid // h, np.arange(w) * grid // w  # the cell of each pixel row / column
        cover = np.zeros((grid, grid))
        np.add.at(cover, (rows[:, None], cols[None, :]), mask)
        cover /= np.bincount(rows, minlength=grid)[:, None] * np.bincount(cols, minlength=grid)[None, :]
        on = cover.reshape(-1) >= min_cover
        shape[on] = NEEDLE_SHAPES.index(n["shape"])
        colour[on] = list(NEEDLE_COLOURS).index(n["colour"])
    return {"patch_shape": shape, "patch_colour": colour}


def render_dataset(num_frames: int, seed: int, width: int = 128, height: int = 96, grid: int = 4
                   ) -> tuple[np.ndarray, list[str], dict]:
    """``(frames (n, H, W, 3) uint8, captions, labels)`` of ``num_frames`` pretraining frames; ``labels`` holds the
    [CLS] heads' classes ``(n,)`` and the patch heads' ``(n, grid * grid)``."""
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    captions = []
    labels = {**{k: np.empty(num_frames, np.int64) for k in HEADS},
              **{k: np.empty((num_frames, grid * grid), np.int64) for k in PATCH_HEADS}}
    for i in range(num_frames):  # rendering is numpy per frame, once, before training (not a forward pass)
        record = frame_record(np.random.default_rng([seed, CLIP_STREAM, i]), width, height)
        frames[i] = render_image(record)
        captions.append(frame_caption(record))
        for k, v in {**frame_labels(record), **patch_labels(record, grid)}.items():
            labels[k][i] = v
    return frames, captions, labels


# ---------------------------------------------------------------------------------------------------- model


def build_text_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """CLIP's kind of tokenizer, small: byte-level BPE over the caption vocabulary, wrapped as
    ``<|startoftext|> ... <|endoftext|>`` (the text tower pools at the first end token), padded with the end token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from lit_bvllm.world.scenes import DISTRACTOR_COLOURS, DISTRACTOR_SHAPES

    words = [*BACKGROUNDS, *DISTRACTOR_COLOURS, *NEEDLE_COLOURS, *DISTRACTOR_SHAPES, *NEEDLE_SHAPES, *PLACES,
             "a", "an", "at", "the", "no", "shape", "and", "background", "fading", "from", "to", "of", "frame",
             "video", "which", "what", "how", "many", "times", "does", "appear", "appears", "briefly", "shown",
             "in", "order", "these", "shapes", "then", "first", "last", "colour", "color", "is", "this"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, BOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([" ".join(words)] * 4 + [f"{w}." for w in words], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}",
                                                       special_tokens=[(BOS, tok.token_to_id(BOS)),
                                                                       (EOS, tok.token_to_id(EOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   model_max_length=64, padding_side="right")


def build_clip(tokenizer, image_size: int, patch_size: int, width: int, num_layers: int, text_layers: int = 2,
               mlp_ratio: int = 4) -> CLIPModel:
    """A CLIPModel of the given size (4 heads, projection width = ``width``)."""
    vision = CLIPVisionConfig(hidden_size=width, intermediate_size=mlp_ratio * width, num_hidden_layers=num_layers,
                              num_attention_heads=4, image_size=image_size, patch_size=patch_size, projection_dim=width)
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=mlp_ratio * width,
                          num_hidden_layers=text_layers, num_attention_heads=4, max_position_embeddings=64,
                          projection_dim=width, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=width))


def image_processor(image_size: int) -> CLIPImageProcessor:
    """Resize to ``image_size`` x ``image_size`` without cropping (SigLIP's policy: a 4:3 frame keeps its sides, where
    CLIP's centre crop would cut a needle at the edge), CLIP's mean and std."""
    square = {"height": image_size, "width": image_size}
    return CLIPImageProcessor(size=square, crop_size=square, do_center_crop=False)


class AuxHeads(nn.Module):
    """Linear classifiers on the layer-normed tokens of one vision layer: :data:`HEADS` on its [CLS] token and
    :data:`PATCH_HEADS` on every patch token (what the needle is where it is: the local semantics a real tower's
    patch tokens carry, which the spatial Q-Former samples)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.heads = nn.ModuleDict({k: nn.Linear(width, n) for k, n in {**HEADS, **PATCH_HEADS}.items()})

    def forward(self, tokens: Tensor) -> dict[str, Tensor]:
        """``tokens (B, 1 + N, D)`` -> logits ``(B, C)`` per [CLS] head and ``(B, N, C)`` per patch head."""
        x = self.norm(tokens)
        return {k: head(x[:, 0] if k in HEADS else x[:, 1:]) for k, head in self.heads.items()}


def infonce(logits: Tensor, same: Tensor) -> Tensor:
    """Symmetric InfoNCE over image-text ``logits (n, n)``, every pair with the same caption (``same (n, n)``) a
    positive: the target of each row is uniform over its positives."""
    target = same.float() / same.float().sum(1, keepdim=True)
    return 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                  + torch.sum(-target * logits.log_softmax(0).T, 1).mean())


def contrastive_loss(image: Tensor, text: Tensor, scale: Tensor, same: Tensor) -> Tensor:
    """:func:`infonce` over the scaled cosines of L2-normalised image and text embeddings."""
    return infonce(scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T, same)


def warmup_cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over 5% of ``steps``, then cosine decay to 0 (both tiny pretrainings' schedule)."""
    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))


def pretrain_clip(
    model: CLIPModel,
    tokenizer,
    pixels: Tensor,
    captions: list[str],
    labels: dict[str, np.ndarray],
    steps: int,
    batch_size: int = 256,
    lr: float = 3e-3,
    feature_layer: int = -2,
    aux_weight: float = 1.0,
    seed: int = 0,
    log_every: int = 100,
) -> list[dict]:
    """Train both towers contrastively, plus the auxiliary [CLS] heads at ``feature_layer``. Returns the log
    (step, contrastive loss, auxiliary loss, batch retrieval accuracy) every ``log_every`` steps."""
    if steps <= 0:
        return []
    g = torch.Generator().manual_seed(seed)
    text = tokenizer(captions, padding=True, return_tensors="pt")
    uniq = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    caption_id = torch.tensor([uniq[c] for c in captions])
    targets = {k: torch.from_numpy(v) for k, v in labels.items()}
    aux = AuxHeads(model.config.vision_config.hidden_size)
    params = list(model.parameters()) + list(aux.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = warmup_cosine(opt, steps)
    model.train()
    log, t0 = [], time.time()
    for step in range(steps):  # a loop over optimisation steps; every step is one batch
        idx = torch.randint(len(captions), (batch_size,), generator=g)
        x = pixels[idx]
        x = x + 0.03 * torch.randn(x.shape, generator=g)  # codec-like noise: the towers see decoded H.264 frames
        vis = model.vision_model(pixel_values=x, output_hidden_states=True)
        img = model.visual_projection(vis.pooler_output)
        txt_out = model.text_model(input_ids=text["input_ids"][idx], attention_mask=text["attention_mask"][idx])
        txt = model.text_projection(txt_out.pooler_output)
        same = caption_id[idx][:, None] == caption_id[idx][None, :]
        nce = contrastive_loss(img, txt, model.logit_scale.exp().clamp(max=100), same)
        preds = aux(vis.hidden_states[feature_layer])
        aux_loss = sum(HEAD_WEIGHTS.get(k, 1.0) * F.cross_entropy(p.flatten(0, -2), targets[k][idx].flatten())
                       for k, p in preds.items())
        loss = nce + aux_weight * aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            with torch.no_grad():
                sim = F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
                acc = same[torch.arange(batch_size), sim.argmax(1)].float().mean().item()
            entry = {"step": step, "contrastive": round(nce.item(), 3), "aux": round(aux_loss.item(), 3),
                     "retrieval@1": round(acc, 3), "seconds": round(time.time() - t0, 1)}
            log.append(entry)
            print(f"  tiny CLIP step {step:5d}: contrastive {entry['contrastive']:.3f}  aux {entry['aux']:.3f}  "
                  f"frame->caption top-1 {entry['retrieval@1']:.3f}  ({entry['seconds']} s)", flush=True)
    model.eval()
    return log


def make_tiny_clip(
    out: str | Path,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    width: int = 64,
    num_layers: int = 4,
    steps: int = 1000,
    num_frames: int = 20000,
    batch_size: int = 256,
    text_layers: int = 1,
    lr: float = 3e-3,
    mlp_ratio: int = 2,
) -> dict:
    """Pretrain a tiny CLIP on synthetic frames and write it to ``out`` (model, image processor, text tokenizer).

    Args:
        out: folder to write (a CLIP checkpoint folder).
        seed: seed of the initialisation, the frames and the batches.
        image_size: tower input (square), frames are resized to it without cropping.
        patch_size: ViT patch size.
        width: width of both towers and of the joint embedding.
        num_layers: vision layers (the video LLM reads the penultimate one's tokens).
        steps: training steps; 0 writes the randomly initialised model (the probe's random-tower baseline).
        num_frames: frames rendered for training (each is seen ``steps * batch_size / num_frames`` times).
        batch_size: frame/caption pairs per step.
        text_layers: text tower layers.
        lr: peak AdamW learning rate (warm-up over 5% of the steps, then cosine).
        mlp_ratio: MLP width over model width in both towers.

    Returns the training log and what was written.
    """
    from datamodules.transforms import FrameTransform

    torch.manual_seed(seed)
    tokenizer = build_text_tokenizer()
    model = build_clip(tokenizer, image_size, patch_size, width, num_layers, text_layers, mlp_ratio)
    log: list[dict] = []
    if steps > 0:
        t0 = time.time()
        frames, captions, labels = render_dataset(num_frames, seed, grid=image_size // patch_size)
        proc = image_processor(image_size)
        transform = FrameTransform("plain", image_size=image_size, mean=tuple(proc.image_mean),
                                   std=tuple(proc.image_std), resize_mode="squash")
        pixels = torch.cat([transform(frames[i : i + 2048]) for i in range(0, len(frames), 2048)])
        print(f"  tiny CLIP: {num_frames} frames rendered and resized in {time.time() - t0:.1f} s", flush=True)
        log = pretrain_clip(model, tokenizer, pixels, captions, labels, steps, batch_size, lr, seed=seed)
    out = Path(out)
    model.save_pretrained(out)
    image_processor(image_size).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"path": str(out), "steps": steps, "frames": num_frames if steps > 0 else 0, "log": log}
