"""The frozen vision tower: per-frame patch tokens, [CLS] tokens and [CLS] attention, in chunks of frames.

Only the frames a reducer will read are encoded (``Reducer.frames_to_encode``), and they go through the tower
``chunk`` frames at a time without gradients, so an hour of 1-fps frames never sits in one activation tensor.
Frames arrive as uint8 (the data modules' resized frames) and are normalised here with the tower's own processor
mean and std, one chunk at a time: an hour at 336 px is 1.2 GB of bytes, not 4.9 GB of float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from datamodules.loading import load_image_processor
from lit_bvllm.backbones import eager_attention, load_vision_tower
from lit_bvllm.reducers.sampling import pack_frames


def pixel_normalization(path: str) -> tuple[Tensor, Tensor]:
    """``mean, std`` ``(1, 3, 1, 1)`` that map uint8 frames to a tower's input, ``(x - mean) / std``: its own input
    rule, from its processor in ``path`` (not in the state dict): x * rescale_factor, then (x - mean) / std, folded
    into one step; a processor that skips a step skips it here too."""
    proc = load_image_processor(path)
    scale = float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else 1.0
    mean, std = ((proc.image_mean, proc.image_std) if getattr(proc, "do_normalize", True)
                 else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    return (torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / scale,
            torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) / scale)


class VisionEncoder(nn.Module):
    """An HF vision tower (CLIP / SigLIP / InstructBLIP's EVA ViT-g) from a local folder, frozen.

    The features are a layer's output as the encoder gives it, before the tower's ``post_layernorm``; CLIP and
    BLIP's ViT put a [CLS] token at position 0. InstructBLIP feeds its Q-Former the last layer's output through
    that ``post_layernorm`` (LAVIS's ``ln_vision``), which the Q-Former reducers hold themselves (their
    ``ln_vision``, loaded from the same folder): ``feature_layer: -1`` there.

    Args:
        path: local folder of the tower (``save_pretrained`` layout; an InstructBLIP folder: its vision model).
        feature_layer: hidden layer whose tokens are used (-2: the penultimate, as LLaVA and B-VLLM do).
        chunk: frames per tower call.
    """

    def __init__(self, path: str, feature_layer: int = -2, chunk: int = 64):
        super().__init__()
        self.tower = load_vision_tower(path).requires_grad_(False).eval()
        self.feature_layer, self.chunk = feature_layer, chunk
        cfg = self.tower.config
        self.width = cfg.hidden_size
        # CLIP and BLIP (InstructBLIP's EVA ViT-g) have a [CLS] embedding; SigLIP has none: its mean patch stands in
        self.has_cls = hasattr(getattr(self.tower, "vision_model", self.tower).embeddings, "class_embedding")
        side = cfg.image_size // cfg.patch_size
        self.num_patches = side * side
        # hidden_states[feature_layer] of the HF tower is the output of its `depth`-th layer (hidden_states[0] is the
        # patch embedding): only those layers run, the ones after it would be thrown away (LLaVA's -2: all but one)
        layers = len(self._layers())
        if not -(layers + 1) <= feature_layer <= layers or feature_layer % (layers + 1) == 0:
            raise ValueError(f"--model.feature_layer {feature_layer}: the tower '{path}' has {layers} layers; pick a "
                             f"layer's output, 1..{layers} or -{layers}..-1 (-2: the penultimate)")
        self.depth = feature_layer % (layers + 1)
        mean, std = pixel_normalization(path)
        self.register_buffer("pixel_mean", mean, False)
        self.register_buffer("pixel_std", std, False)

    def _encoder(self) -> nn.Module:
        return getattr(self.tower, "vision_model", self.tower).encoder  # transformers < 5 nests a vision_model

    def _layers(self) -> nn.ModuleList:
        return self._encoder().layers

    def train(self, mode: bool = True) -> VisionEncoder:
        return super().train(False)  # always in eval mode (no dropout), whatever the module around it does

    @torch.no_grad()
    def _encode(self, pixels: Tensor, attention: bool, keys: bool = False) -> tuple[Tensor, ...]:
        """One chunk: ``pixels (k, 3, S, S)``, uint8 frames (normalised here) or float tower input (as is).

        Runs the tower's first ``depth`` layers only and keeps that layer's output (its [CLS] attention, its keys
        averaged over heads: None unless asked), not every layer's hidden states: for CLIP-L at 64 frames that is
        151 MB kept instead of 3.8 GB.
        """
        dtype = next(self.tower.parameters()).dtype
        if pixels.dtype == torch.uint8:  # ((x * scale) - mean) / std = (x - mean / scale) / (std / scale)
            pixels = ((pixels.float() - self.pixel_mean) / self.pixel_std).contiguous()
        encoder, layers = self._encoder(), self._layers()
        last, got = layers[self.depth - 1], {}
        hooks = [last.register_forward_hook(
            lambda m, a, o: got.__setitem__("feats", o[0] if isinstance(o, tuple) else o))]
        if attention:  # eager attention returns its weights; only this layer's are kept
            hooks.append(last.self_attn.register_forward_hook(lambda m, a, o: got.__setitem__("attn", o[1])))
        if keys:  # this layer's attention keys, averaged over heads (VisionZip's similarity metric)
            hooks.append(last.self_attn.k_proj.register_forward_hook(lambda m, a, o: got.__setitem__("keys", o)))
        encoder.layers = layers[: self.depth]
        try:
            self.tower(pixel_values=pixels.to(dtype))
        finally:
            encoder.layers = layers
            for h in hooks:
                h.remove()
        attn = got["attn"][:, :, 0, 1:].float().mean(1) if attention else None  # (k, heads, 1+N, 1+N) -> (k, N)
        mean_keys = None
        if keys:  # (k, 1+N, D) -> (k, 1+N, heads, D / heads) -> mean over heads (k, 1+N, D / heads)
            k = got["keys"]
            mean_keys = k.reshape(*k.shape[:2], self.tower.config.num_attention_heads, -1).float().mean(2)
        return got["feats"], attn, mean_keys

    def forward(self, frames: Tensor, frame_mask: Tensor, keep: Tensor, attention: bool = False,
                patches: bool = True, keys: bool = False) -> dict[str, Tensor]:
        """Encode the ``keep`` frames of ``frames (B, T, 3, H, W)`` (uint8, or normalised float).

        Returns ``frames (B, T', N, D)``, ``cls (B, T', D)``, ``frame_mask (B, T')``, ``frame_index (B, T')`` (the
        source frame, -1 on padding) and, with ``attention``, ``cls_attn (B, T', N)``; T' is the most frames kept
        in a row. Each chunk's features are written straight into the outputs, and only a chunk's frames are
        gathered at a time: beside the input frames, the peak is the outputs plus one chunk's activations.
        ``patches=False`` keeps no patch features (``frames`` is then ``(B, T', 0, D)``): the [CLS] pass of a
        reducer that chooses its frames from [CLS] alone (:meth:`lit_bvllm.model.VideoLLM.visual_tokens`).
        ``keys`` adds ``keys (B, T', N, D / heads)``, that layer's attention keys of the patches averaged over heads.
        """
        if attention and not self.has_cls:
            raise ValueError("[CLS] attention needs a tower with a [CLS] token (CLIP, InstructBLIP); use score=learned "
                             "for SigLIP")
        keep = keep & frame_mask
        B = frames.shape[0]
        _, valid, index = pack_frames(keep[:, :, None, None], keep)  # where each kept frame goes, not the pixels
        rows = valid.nonzero(as_tuple=True)  # (K,) slots of the real frames, row-major
        source = index[rows]  # their positions in `frames`
        T, N, D = valid.shape[1], self.num_patches, self.width
        dtype = next(self.tower.parameters()).dtype
        tokens = torch.zeros(B, T, N if patches else 0, D, dtype=dtype, device=frames.device)
        cls = torch.zeros(B, T, D, dtype=dtype, device=frames.device)
        cls_attn = torch.zeros(B, T, N, device=frames.device) if attention else None
        patch_keys = (torch.zeros(B, T, N, D // self.tower.config.num_attention_heads, device=frames.device)
                      if keys else None)
        with eager_attention(self.tower, attention):
            for i in range(0, source.shape[0], self.chunk):  # chunks of frames, not a per-frame loop
                slot = (rows[0][i : i + self.chunk], rows[1][i : i + self.chunk])
                f, a, k = self._encode(frames[slot[0], source[i : i + self.chunk]], attention, keys)
                if keys:
                    patch_keys[slot] = k[:, 1:] if self.has_cls else k
                feats = f[:, 1:] if self.has_cls else f
                if patches:
                    tokens[slot] = feats
                cls[slot] = f[:, 0] if self.has_cls else feats.mean(1)
                if attention:
                    cls_attn[slot] = a
        out = {"frames": tokens, "cls": cls, "frame_mask": valid, "frame_index": index}
        if attention:
            out["cls_attn"] = cls_attn
        if keys:
            out["keys"] = patch_keys
        return out
