"""Frames to the vision tower's input: one policy, shared by training and evaluation.

``FrameTransform`` takes ``(T, H, W, 3)`` uint8 RGB frames and returns ``(T, 3, S, S)``: uint8, resized, when the
data modules build it (``normalize=False``: frames travel from the workers to the device as bytes, a quarter of
float32's size, and :class:`~lit_bvllm.vision.VisionEncoder` normalises them there, chunk by chunk), or float32,
normalised (the default, for code that feeds the tower directly).

- ``processor``: the vision tower's own HF ``AutoImageProcessor`` (exact parity with the checkpoint);
- ``plain``: a batched torch resize + normalise. Its size, mean and std come from the same processor config when
  a vision tower is given, so both policies target the same input. ``resize_mode`` picks ``crop`` (shortest
  side to S, centre crop: CLIP's policy), ``pad`` (pad to square with the mean colour, then resize: VideoLLaMA2's
  ``expand2square``) or ``squash`` (resize to S x S, aspect ratio ignored).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class FrameTransform:
    """Resize and normalise frames.

    Args:
        policy: ``processor`` (the HF image processor of ``vision_tower``) or ``plain`` (batched torch).
        vision_tower: local folder of the vision tower; its image processor defines size, mean and std.
        image_size: output size S when no vision tower is given (``plain`` only).
        mean: normalisation mean when no vision tower is given.
        std: normalisation std when no vision tower is given.
        resize_mode: ``crop``, ``pad`` or ``squash`` (``plain`` only); None follows the vision tower's processor
            (``crop`` when it centre-crops, as CLIP's does; ``squash`` when it resizes to a square, as SigLIP's and
            the tiny CLIP's do), or ``crop`` without a tower.
        normalize: return normalised float32 (True) or the resized frames as uint8 (False), rounded as an image
            library's resize rounds; the vision encoder then normalises them where they are used.
    """

    def __init__(
        self,
        policy: Literal["processor", "plain"] = "processor",
        vision_tower: str | None = None,
        image_size: int = 224,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
        resize_mode: Literal["crop", "pad", "squash"] | None = None,
        normalize: bool = True,
    ):
        self.policy, self.normalize = policy, normalize
        self.processor = None
        if vision_tower is not None:
            from datamodules.loading import load_image_processor

            proc = load_image_processor(vision_tower)
            crops = getattr(proc, "do_center_crop", True)
            size = (getattr(proc, "crop_size", None) if crops else None) or getattr(proc, "size", None) or {}
            image_size = int(size.get("height") or size.get("shortest_edge") or image_size)
            if resize_mode is None:
                resize_mode = "crop" if crops else "squash"
            mean, std = tuple(proc.image_mean), tuple(proc.image_std)
            self.processor = proc
        elif policy == "processor":
            raise ValueError("--data.transform=processor needs --data.vision_tower (a local folder); or use plain")
        self.resize_mode = resize_mode or "crop"
        self.image_size = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        if len(frames) == 0:
            return torch.zeros(0, 3, self.image_size, self.image_size,
                               dtype=torch.float32 if self.normalize else torch.uint8)
        if self.policy == "processor":
            if self.normalize:
                return self.processor(images=list(frames), return_tensors="pt")["pixel_values"].float()
            resized = self.processor(images=list(frames), return_tensors="pt", do_rescale=False, do_normalize=False)
            return resized["pixel_values"].round_().clamp_(0, 255).to(torch.uint8)  # PIL resized uint8 values
        if not self.normalize:  # resized as bytes: torch's uint8 kernel, within 1 of the float path, ~6x faster
            return self._plain(frames, as_bytes=True).contiguous()
        x = self._plain(frames, as_bytes=False).clamp_(0, 1)
        return ((x - self.mean) / self.std).contiguous()

    def _plain(self, frames: np.ndarray, as_bytes: bool) -> torch.Tensor:
        """Resized ``(T, 3, S, S)``: uint8, or float32 in [0, 1] (the pad colour: the mean)."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T,H,W,3) -> (T,3,H,W), channels last
        fill = self.mean
        if as_bytes:
            fill = (fill * 255).round().to(torch.uint8)
        else:
            x = x.float().div_(255)
        s = self.image_size
        if self.resize_mode == "pad":
            h, w = x.shape[-2:]
            side = max(h, w)
            canvas = fill.expand(x.shape[0], 3, side, side).clone(memory_format=torch.channels_last)  # as x
            top, left = (side - h) // 2, (side - w) // 2
            canvas[:, :, top : top + h, left : left + w] = x
            x = F.interpolate(canvas, size=(s, s), mode="bicubic", antialias=True, align_corners=False)
        elif self.resize_mode == "crop":
            h, w = x.shape[-2:]
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
            top, left = (nh - s) // 2, (nw - s) // 2
            x = x[:, :, top : top + s, left : left + s]
        elif self.resize_mode == "squash":
            x = F.interpolate(x, size=(s, s), mode="bicubic", antialias=True, align_corners=False)
        else:
            raise ValueError(f"--data.resize_mode must be crop, pad or squash, got '{self.resize_mode}'")
        return x

