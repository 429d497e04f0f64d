"""Training-free, query-aware frame selectors: which frames the vision tower encodes, chosen before it runs.

A frozen image-text model (the tiny CLIP's two towers, a real CLIP's or SigLIP's, from a local folder) embeds every
real frame and the question; each frame's cosine similarity to the question is its score, and a rule turns the
scores into ``num_frames`` frames:

- :func:`bolt_frames`, BOLT (Liu et al., CVPR 2025, §3.2 "inverse transform sampling"): min-max normalised scores,
  raised to ``power``, are a density over time; the frames at ``num_frames`` evenly spaced quantiles of its CDF
  are kept, so frames crowd where the question matches and thin out elsewhere;
- :func:`aks_frames`, AKS (Tang et al., CVPR 2025, §3.2 "judge and split"): a bin of frames whose top scores
  stand out from its mean (by ``threshold``) takes its share of frames by score (relevance); otherwise it splits in
  two halves that share its budget equally (coverage), down to ``depth`` levels;
- :func:`qframe_frames`, Q-Frame (Zhang et al., ICCV 2025, §3.2): the top ``num_frames`` of ``logits / tau`` plus
  Gumbel noise, a sample without replacement from ``softmax(logits / tau)`` (Gumbel-Max): B-VLLM's Gumbel selector
  (its Eq. 1) without training. The noise is keyed (seed, video length, frame), so two evaluations agree.

Each rule is a pure function of ``scores (B, T)``, ``frame_mask (B, T)`` and ``k`` -> ``(B, T) bool``, batched,
with no loop over samples or frames. :class:`FrameSelector` wraps a rule with its scorer for
:class:`~lit_bvllm.model.VideoLLM` (``--model.frame_selector``): the frames it keeps are all the token reducer
sees, so any reducer composes with it (select frames, then reduce). Selectors have no trained weights and are not
saved in checkpoints; they can be set on any checkpoint at evaluation.

Where this deviates from the released code (read, not copied): BOLT's code feeds a frame picked by two quantiles
twice; here it is kept once (fewer frames, never more than ``num_frames``). AKS's code judges every bin with the
top ``num_frames`` scores, which on its own threshold never fires (every bin splits to the last level); this judges
a bin by the top scores of the frames it would take, as the paper writes it. Q-Frame's code scores with raw
(unnormalised) dot products of Long-CLIP features and then resizes frames by rank; here the logits are the
scorer's own (``logit_scale`` x cosine, as its contrastive training used them) and every frame keeps the tower's
resolution (a reducer decides tokens per frame).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_bvllm.reducers.sampling import keyed_gumbel_noise


def _minmax(scores: Tensor, frame_mask: Tensor) -> Tensor:
    """Each row's real-frame scores mapped to [0, 1] (a flat row: all 1); padding 0."""
    lo = scores.masked_fill(~frame_mask, float("inf")).amin(1, keepdim=True)
    hi = scores.masked_fill(~frame_mask, float("-inf")).amax(1, keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (scores - lo) / span.clamp_min(1e-12), torch.ones_like(scores))
    return out.masked_fill(~frame_mask, 0.0)


def _ranks(frame_mask: Tensor) -> Tensor:
    """``(B, T)`` each real frame's position among its row's real frames (padding: past the last)."""
    return frame_mask.long().cumsum(1) - 1


def bolt_frames(scores: Tensor, frame_mask: Tensor, k: int, power: float = 3.0) -> Tensor:
    """BOLT's inverse transform sampling: ``(B, T) scores -> (B, T) bool``, at most ``k`` frames per row.

    ``p ∝ minmax(s) ** power`` over the real frames; frame ``i`` is kept when a quantile ``u_j = 1/k ... 1 - 1/k``
    (``k`` evenly spaced; 1/2 for ``k = 1``) first reaches it, ``min {t : CDF(t) >= u_j}``. A row with at most ``k``
    real frames keeps them all; a flat row (every score equal) keeps ``k`` evenly spaced frames.
    """
    n = frame_mask.sum(1)  # (B,)
    density = _minmax(scores.float(), frame_mask) ** power  # (B, T); 0 on padding and on the worst frame
    density = torch.where(density.sum(1, keepdim=True) > 0, density, frame_mask.float())  # a single-frame row
    cdf = (density / density.sum(1, keepdim=True).clamp_min(1e-12)).cumsum(1)  # (B, T), padding at the end: flat
    u = (torch.linspace(1 / k, 1 - 1 / k, k, device=scores.device) if k > 1
         else torch.full((1,), 0.5, device=scores.device))  # (k,)
    idx = torch.searchsorted(cdf.contiguous(), u.expand(cdf.shape[0], k).contiguous() - 1e-6)  # (B, k) frames
    idx = idx.clamp_max(frame_mask.shape[1] - 1)
    chosen = torch.zeros_like(frame_mask).scatter_(1, idx, True) & frame_mask  # the CDF rises at real frames only
    return torch.where((n <= k)[:, None], frame_mask, chosen)


def aks_frames(scores: Tensor, frame_mask: Tensor, k: int, threshold: float = 0.8, depth: int = 5) -> Tensor:
    """AKS's adaptive binning: ``(B, T) scores -> (B, T) bool``, at most ``k`` frames per row.

    Scores are min-max normalised per row. A bin (contiguous real frames, at first the whole video) with budget
    ``m`` (``k`` at first) is a leaf when the mean of its top ``m`` scores exceeds its mean score by more than
    ``threshold``, when it is at level ``depth``, or when it holds at most ``m`` frames; a leaf keeps its top ``m``
    frames. Otherwise it splits at its middle frame (``len // 2``) and each half gets ``m // 2`` frames (the first
    half ``ceil``). Levels are processed together for every row and bin (no loop over samples or frames).
    """
    B, T = frame_mask.shape
    s = _minmax(scores.float(), frame_mask)
    n = frame_mask.sum(1)  # (B,)
    rank = _ranks(frame_mask)  # (B, T)
    start, end = torch.zeros(B, 1, dtype=torch.long, device=s.device), n[:, None].clone()  # (B, bins) positions
    budget = torch.full((B, 1), k, dtype=torch.long, device=s.device)
    open_ = torch.ones(B, 1, dtype=torch.bool, device=s.device)  # bins not yet a leaf
    take = torch.zeros(B, T, dtype=torch.bool, device=s.device)
    order = torch.argsort(s.masked_fill(~frame_mask, -1.0), dim=1, descending=True, stable=True)  # (B, T)
    for level in range(depth + 1):  # a loop over tree levels (at most depth + 1), not over samples
        inside = (rank[:, None, :] >= start[..., None]) & (rank[:, None, :] < end[..., None]) & frame_mask[:, None]
        # (B, bins, T): each bin's frames; rank of each frame by score within its bin, via the row's score order
        inside_sorted = torch.gather(inside, 2, order[:, None, :].expand_as(inside))
        score_rank = inside_sorted.long().cumsum(2) - 1  # (B, bins, T) in score order
        top_sorted = inside_sorted & (score_rank < budget[..., None])
        top = torch.zeros_like(inside).scatter_(2, order[:, None, :].expand_as(inside), top_sorted)  # (B, bins, T)
        size = inside.sum(2)  # (B, bins)
        mean_all = (s[:, None] * inside).sum(2) / size.clamp_min(1)
        mean_top = (s[:, None] * top).sum(2) / top.sum(2).clamp_min(1)
        leaf = open_ & ((mean_top - mean_all > threshold) | (level == depth) | (size <= budget) | (budget <= 1))
        take |= (top & leaf[..., None]).any(1)
        open_ = open_ & ~leaf
        if level == depth or not open_.any():
            break
        mid = start + (end - start) // 2
        first = budget - budget // 2  # the first half: ceil(m / 2)
        start = torch.stack([start, mid], 2).flatten(1)
        end = torch.stack([mid, end], 2).flatten(1)
        budget = torch.stack([first, budget // 2], 2).flatten(1)
        open_ = torch.stack([open_, open_], 2).flatten(1) & (budget > 0)
    return take & frame_mask


def qframe_frames(scores: Tensor, frame_mask: Tensor, k: int, tau: float = 0.8, seed: int = 0) -> Tensor:
    """Q-Frame's Gumbel-Max top-k: ``(B, T) logits -> (B, T) bool``, the ``k`` largest ``logits / tau + g`` of the
    real frames, ``g`` standard Gumbel noise keyed by (``seed``, the row's real-frame count, the frame's position
    among them): a sample without replacement from ``softmax(logits / tau)``, the same in every pass."""
    n = frame_mask.sum(1, keepdim=True)
    g = keyed_gumbel_noise(seed, n.expand_as(frame_mask), _ranks(frame_mask).clamp_min(0))
    key = (scores.float() / tau + g).masked_fill(~frame_mask, float("-inf"))
    top = key.topk(min(k, frame_mask.shape[1]), dim=1).indices
    return torch.zeros_like(frame_mask).scatter_(1, top, True) & frame_mask


class FrameSelector(nn.Module):
    """A frozen image-text model that scores frames against the question, and a rule that keeps ``num_frames``.

    ``forward(frames (B, T, 3, S, S) uint8, frame_mask, question_ids, question_mask) -> (chosen (B, T) bool,
    scores (B, T))``. The question arrives tokenized by the scorer's tokenizer: ``lit_bvllm`` points
    ``--data.question_tokenizer`` at the scorer's folder when a selector is set (a text-conditioned reducer's own
    tokenizer would conflict, and is refused there).

    Args:
        vision_tower: the model's vision tower folder (given by :class:`~lit_bvllm.model.VideoLLM`), the scorer
            when ``scorer`` is None (a full CLIP/SigLIP checkpoint holds both towers, as make-tiny's does).
        num_frames: frames kept per video (k); a video with fewer keeps all.
        scorer: local folder of an image-text model (``CLIPModel``/``SiglipModel`` layout) whose embeddings score
            the frames; None: ``vision_tower``.
        chunk: frames per image-tower call.
    """

    stage = "before_tower"
    """Where the strategy acts (:attr:`lit_bvllm.reducers.base.Reducer.stage`): it picks the frames the tower
    encodes."""

    def __init__(self, vision_tower: str, num_frames: int = 8, scorer: str | None = None, chunk: int = 64):
        super().__init__()
        from transformers import AutoModel

        from lit_bvllm.backbones import local_dir
        from lit_bvllm.vision import pixel_normalization

        if num_frames < 1:
            raise ValueError(f"{type(self).__name__}: num_frames must be >= 1, got {num_frames}; set "
                             "--model.frame_selector.init_args.num_frames")
        self.num_frames, self.chunk = num_frames, chunk
        self.path = str(scorer or vision_tower)
        folder = local_dir(self.path, "frame selector's image-text model", "--model.frame_selector.init_args.scorer")
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).requires_grad_(False).eval()
        if not (hasattr(self.model, "get_image_features") and hasattr(self.model, "get_text_features")):
            raise ValueError(f"--model.frame_selector.init_args.scorer '{self.path}' is a {type(self.model).__name__}, "
                             "not an image-text model with both towers (CLIPModel / SiglipModel); point it at one")
        mean, std = pixel_normalization(folder)  # the scorer's own input rule, as the vision tower's
        self.register_buffer("pixel_mean", mean, False)
        self.register_buffer("pixel_std", std, False)
        self.image_size = int(self.model.config.vision_config.image_size)
        self.max_text = int(self.model.config.text_config.max_position_embeddings)

    def train(self, mode: bool = True) -> FrameSelector:
        return super().train(False)  # frozen, always in eval mode

    @staticmethod
    def _embedding(out) -> Tensor:
        return out if isinstance(out, Tensor) else out.pooler_output  # transformers >= 5 returns a model output

    @torch.no_grad()
    def scores(self, frames: Tensor, frame_mask: Tensor, question_ids: Tensor, question_mask: Tensor) -> Tensor:
        """``(B, T)``: the scorer's logit (``logit_scale`` x cosine) of each real frame against its row's question;
        padding -inf. Only real frames go through the image tower, ``chunk`` at a time."""
        B, T = frame_mask.shape
        ids, mask = question_ids[:, : self.max_text], question_mask[:, : self.max_text]
        text = F.normalize(self._embedding(self.model.get_text_features(input_ids=ids, attention_mask=mask)), dim=-1)
        rows = frame_mask.nonzero(as_tuple=True)  # (K,) the real frames, row-major
        image = torch.zeros(rows[0].shape[0], text.shape[-1], device=text.device)
        dtype = next(self.model.parameters()).dtype
        for i in range(0, rows[0].shape[0], self.chunk):  # chunks of frames, not a per-frame loop
            x = frames[rows[0][i : i + self.chunk], rows[1][i : i + self.chunk]]
            x = (x.float() - self.pixel_mean) / self.pixel_std if x.dtype == torch.uint8 else x.float()
            if x.shape[-1] != self.image_size:
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
            image[i : i + self.chunk] = self._embedding(self.model.get_image_features(pixel_values=x.to(dtype))).float()
        image = F.normalize(image, dim=-1)
        sim = torch.full((B, T), float("-inf"), device=text.device)
        sim[rows] = (image * text.float()[rows[0]]).sum(-1) * self.model.logit_scale.exp().float()
        return sim

    def select(self, scores: Tensor, frame_mask: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, frames: Tensor, frame_mask: Tensor, question_ids: Tensor | None,
                question_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        if question_ids is None:
            raise ValueError(f"{type(self).__name__} scores frames against the question, and this batch has none "
                             "(batch['question_ids']); unset --model.frame_selector")
        if question_mask is None:
            question_mask = torch.ones_like(question_ids)
        s = self.scores(frames, frame_mask, question_ids, question_mask)
        few = frame_mask.sum(1, keepdim=True) <= self.num_frames  # every frame of a short video
        return torch.where(few, frame_mask, self.select(s, frame_mask)), s


class BOLT(FrameSelector):
    """BOLT's inverse transform sampling (:func:`bolt_frames`) over the scorer's frame-question similarity.

    Args:
        power: the exponent sharpening the min-max normalised scores (BOLT's scripts: 3 for Video-MME and MLVU,
            2.5 for LongVideoBench; 1: proportional to the score).
    """

    def __init__(self, vision_tower: str, num_frames: int = 8, scorer: str | None = None, chunk: int = 64,
                 power: float = 3.0):
        super().__init__(vision_tower, num_frames, scorer, chunk)
        self.power = power

    def select(self, scores: Tensor, frame_mask: Tensor) -> Tensor:
        return bolt_frames(scores, frame_mask, self.num_frames, self.power)


class AKS(FrameSelector):
    """AKS's adaptive keyframe sampling (:func:`aks_frames`): relevance where a bin's best frames stand out,
    coverage elsewhere.

    Args:
        threshold: how far (on min-max normalised scores) a bin's top frames must stand above its mean for the bin
            to take them (AKS's t1, 0.8).
        depth: the most times a bin splits (AKS's all_depth, 5: up to 32 bins).
    """

    def __init__(self, vision_tower: str, num_frames: int = 8, scorer: str | None = None, chunk: int = 64,
                 threshold: float = 0.8, depth: int = 5):
        super().__init__(vision_tower, num_frames, scorer, chunk)
        self.threshold, self.depth = threshold, depth

    def select(self, scores: Tensor, frame_mask: Tensor) -> Tensor:
        return aks_frames(scores, frame_mask, self.num_frames, self.threshold, self.depth)


class QFrame(FrameSelector):
    """Q-Frame's Gumbel-Max top-k (:func:`qframe_frames`): B-VLLM's selector without training.

    Args:
        tau: the temperature of ``softmax(logits / tau)`` the frames are drawn from (Q-Frame: 0.8).
        seed: the noise's seed (the same frames in every evaluation with one seed); None: the run's seed
            (``--seed_everything``, read when the selector is built), so a study's seeds draw different frames.
    """

    def __init__(self, vision_tower: str, num_frames: int = 8, scorer: str | None = None, chunk: int = 64,
                 tau: float = 0.8, seed: int | None = None):
        super().__init__(vision_tower, num_frames, scorer, chunk)
        self.tau = tau
        self.seed = torch.initial_seed() % 2**31 if seed is None else seed  # the run's seed

    def select(self, scores: Tensor, frame_mask: Tensor) -> Tensor:
        return qframe_frames(scores, frame_mask, self.num_frames, self.tau, self.seed)


class TopK(FrameSelector):
    """The ``num_frames`` best-scoring frames, in time order: the plain relevance baseline the three rules above
    refine (BOLT and AKS add coverage, Q-Frame noise)."""

    def select(self, scores: Tensor, frame_mask: Tensor) -> Tensor:
        top = scores.masked_fill(~frame_mask, float("-inf")).topk(min(self.num_frames, scores.shape[1]), 1).indices
        return torch.zeros_like(frame_mask).scatter_(1, top, True) & frame_mask


SELECTORS = (AKS, BOLT, QFrame, TopK)
__all__ = ["AKS", "BOLT", "FrameSelector", "QFrame", "TopK", "aks_frames", "bolt_frames", "qframe_frames"]
