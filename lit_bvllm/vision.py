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


class VisionEncoder(nn.Module):
    """An HF vision tower (CLIP / SigLIP) from a local folder, frozen.

    Args:
        path: local folder of the tower (``save_pretrained`` layout).
        feature_layer: hidden layer whose tokens are used (-2: the penultimate, as LLaVA and B-VLLM do).
        chunk: frames per tower call.
    """

    def __init__(self, path: str, feature_layer: int = -2, chunk: int = 64):
        super().__init__()
        self.tower = load_vision_tower(path).requires_grad_(False).eval()
        self.feature_layer, self.chunk = feature_layer, chunk
        cfg = self.tower.config
        self.width = cfg.hidden_size
        self.has_cls = cfg.model_type.startswith("clip")  # SigLIP has no [CLS]: its mean patch stands in
        side = cfg.image_size // cfg.patch_size
        self.num_patches = side * side
        # the tower's own input rule, from its processor (not in the state dict): x * rescale_factor, then
        # (x - mean) / std; a processor that skips a step skips it here too
        proc = load_image_processor(path)
        scale = float(proc.rescale_factor) if getattr(proc, "do_rescale", True) else 1.0
        mean, std = ((proc.image_mean, proc.image_std) if getattr(proc, "do_normalize", True)
                     else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / scale, False)
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) / scale, False)

    def train(self, mode: bool = True) -> VisionEncoder:
        return super().train(False)  # always in eval mode (no dropout), whatever the module around it does

    @torch.no_grad()
    def _encode(self, pixels: Tensor, attention: bool) -> tuple[Tensor, Tensor | None]:
        """One chunk: ``pixels (k, 3, S, S)``, uint8 frames (normalised here) or float tower input (as is)."""
        dtype = next(self.tower.parameters()).dtype
        if pixels.dtype == torch.uint8:  # ((x * scale) - mean) / std = (x - mean / scale) / (std / scale)
            pixels = ((pixels.float() - self.pixel_mean) / self.pixel_std).contiguous()
        out = self.tower(pixel_values=pixels.to(dtype), output_hidden_states=True, output_attentions=attention)
        feats = out.hidden_states[self.feature_layer]  # (k, [1+]N, D)
        attn = None
        if attention:
            attn = out.attentions[self.feature_layer][:, :, 0, 1:].float().mean(1)  # (k, heads, 1+N, 1+N) -> (k, N)
        return feats, attn

    def forward(self, frames: Tensor, frame_mask: Tensor, keep: Tensor, attention: bool = False) -> dict[str, Tensor]:
        """Encode the ``keep`` frames of ``frames (B, T, 3, H, W)`` (uint8, or normalised float).

        Returns ``frames (B, T', N, D)``, ``cls (B, T', D)``, ``frame_mask (B, T')``, ``frame_index (B, T')`` (the
        source frame, -1 on padding) and, with ``attention``, ``cls_attn (B, T', N)``; T' is the most frames kept
        in a row.
        """
        keep = keep & frame_mask
        B = frames.shape[0]
        packed, valid, index = pack_frames(frames.flatten(2)[:, :, None], keep)  # (B, T, 1, 3*H*W) -> (B, T', 1, 3*H*W)
        rows = valid.nonzero(as_tuple=True)
        pixels = packed[rows].view(-1, *frames.shape[2:])  # (K, 3, H, W): real frames only
        if attention and not self.has_cls:
            raise ValueError("[CLS] attention needs a tower with a [CLS] token (CLIP); use score=learned for SigLIP")
        feats, attns = [], []
        with eager_attention(self.tower, attention):
            for i in range(0, pixels.shape[0], self.chunk):  # chunks of frames, not a per-frame loop
                f, a = self._encode(pixels[i : i + self.chunk], attention)
                feats.append(f)
                attns.append(a)
        T, N, D = packed.shape[1], self.num_patches, self.width  # T' frames kept per row
        dtype = next(self.tower.parameters()).dtype
        tokens = torch.zeros(B, T, N, D, dtype=dtype, device=frames.device)
        cls = torch.zeros(B, T, D, dtype=dtype, device=frames.device)
        if feats:
            f = torch.cat(feats)
            patches = f[:, 1:] if self.has_cls else f
            tokens[rows] = patches
            cls[rows] = f[:, 0] if self.has_cls else patches.mean(1)
        out = {"frames": tokens, "cls": cls, "frame_mask": valid, "frame_index": index}
        if attention:
            cls_attn = torch.zeros(B, T, N, device=frames.device)
            if attns:
                cls_attn[rows] = torch.cat(attns)
            out["cls_attn"] = cls_attn
        return out
