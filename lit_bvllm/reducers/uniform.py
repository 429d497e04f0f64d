"""Uniform frame sampling with optional spatial average pooling (the VideoLLaMA2 / PLLaVA baseline).

``num_frames`` frames at the midpoints of equal segments of the video (``sampling.uniform_indices``), all their
patch tokens in time order, each frame's √N×√N patch grid optionally average-pooled with stride ``pool``
(PLLaVA, Xu et al., 2024, pools 24×24 → 12×12). Parameter-free.

:func:`select_uniform_frames` is the frame choice every reducer that caps its frame count shares.

The needle study's controls are other frame choices of the same reducer (``pick``), so that one trained model,
evaluated three ways, isolates what frame selection is worth: ``random`` (:func:`random_frames`, as many frames
drawn at random) and ``oracle`` (:func:`oracle_frames`, the frames that show the needle the question asks about,
from the benchmark's ``needle_times``: the ceiling of any selector at that frame count).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_bvllm.reducers.base import Reducer, ReducerOutput, pack
from lit_bvllm.reducers.sampling import keyed_gumbel_noise, select_uniform_frames, uniform_frame_mask

PICKS = ("uniform", "random", "oracle")


def chosen_frames(chosen: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The ``chosen (B, T) bool`` frames of each row as ``indices, valid (B, n)``: ascending (time order), then
    invalid slots (pointing at unchosen frames); ``n`` must cover every row's count."""
    order = torch.sort((~chosen).to(torch.int8), dim=1, stable=True).indices[:, :n]  # (B, n) chosen first
    return order, torch.gather(chosen, 1, order)


def random_frames(frame_mask: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``min(n, real)`` distinct real frames per row, drawn uniformly at random, in time order: ``(B, T) bool ->
    indices, valid (B, n')``, ``n' = min(n, T)``.

    The draw is the top ``n`` of keyed Gumbel noise (:func:`~lit_bvllm.reducers.sampling.keyed_gumbel_noise`, keys:
    ``seed``, the row's real-frame count and each frame's position among its real frames): a fixed function of the
    seed and the video's frame count, whatever the batch, its padding or the device, so two passes agree and the
    frames given and the frames encoded (all real ones) choose alike. Videos with as many frames share their draw.
    """
    n = min(n, frame_mask.shape[1])
    count = frame_mask.sum(1, keepdim=True)  # (B, 1)
    rank = (frame_mask.long().cumsum(1) - 1).clamp_min(0)  # (B, T) position among the row's real frames
    score = keyed_gumbel_noise(seed, count.expand_as(rank), rank).masked_fill(~frame_mask, float("-inf"))
    top = score.topk(n, dim=1).indices  # (B, n) real frames first (padding scores -inf)
    chosen = torch.zeros_like(frame_mask).scatter_(1, top, torch.gather(frame_mask, 1, top))
    return chosen_frames(chosen, n)


def oracle_frames(frame_mask: Tensor, evidence: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``min(n, real)`` real frames per row, the evidence first: every ``evidence (B, T) bool`` frame when there are
    at most ``n`` (else ``n`` uniformly spaced among them), the rest uniformly spaced among the other real frames;
    in time order, ``indices, valid (B, n')`` as :func:`random_frames`. A row without evidence is uniform."""
    n = min(n, frame_mask.shape[1])
    evidence = evidence & frame_mask
    shown = uniform_frame_mask(evidence, n)  # (B, T): the evidence frames, thinned uniformly to n
    rest = uniform_frame_mask(frame_mask & ~evidence, n - shown.sum(1))  # (B, T): the other frames, to n in all
    return chosen_frames(shown | rest, n)


def gather_frames(x: Tensor, idx: Tensor) -> Tensor:
    """Per-row frame gather: ``x (B, T, ...)``, ``idx (B, n) -> (B, n, ...)``."""
    return x[torch.arange(x.shape[0], device=x.device)[:, None], idx]


def spatial_pool(frames: Tensor, pool: int) -> Tensor:
    """Average-pool each frame's √N×√N patch grid with kernel = stride = ``pool``: ``(B, T, N, D) -> (B, T, N', D)``.

    ``N' = ceil(√N / pool)²``; border windows that overhang the grid average only the patches they cover.
    Raises ``ValueError`` when ``N`` is not a square.
    """
    B, T, N, D = frames.shape
    if pool == 1:
        return frames
    side = math.isqrt(N)
    if side * side != N:
        raise ValueError(
            f"spatial pooling needs a square patch grid, but the vision tower gives N={N} patches per frame; "
            "set --model.reducer.init_args.pool=1"
        )
    grid = frames.reshape(B * T, side, side, D).permute(0, 3, 1, 2)  # (B, T, N, D) -> (B*T, D, √N, √N)
    pooled = F.avg_pool2d(grid, pool, pool, ceil_mode=True)  # (B*T, D, s', s'), s' = ceil(√N / pool)
    return pooled.flatten(2).transpose(1, 2).reshape(B, T, -1, D)  # (B*T, D, s', s') -> (B, T, s'*s', D)


class Uniform(Reducer):
    """VideoLLaMA2-style uniform frame sampling: every (pooled) patch token of ``num_frames`` frames.

    Tensor contract (see ``base.py``): ``frames (B, T, N, D) -> tokens (B, M, D)`` with
    ``M <= num_frames · ceil(√N / pool)²``, frame-major and raster order within a frame. Frames are chosen at the
    segment midpoints of each sample's real frames (``sampling.uniform_indices``); a sample with fewer real frames
    than ``num_frames`` gives each frame once (no repetition). Linear in the tokens (gradients reach the selected
    frames); no parameters.

    ``info``: ``num_tokens (B,)``, ``frame_indices (B, n)`` and ``frame_valid (B, n)``.

    ``pick`` chooses the frames otherwise (the needle study's controls; the tokens of a chosen frame are the same):
    ``random`` draws ``num_frames`` of the real frames at random (:func:`random_frames`, seeded by ``seed``, the same
    frames in every pass), ``oracle`` keeps the frames inside the needle spans the question is about
    (:func:`oracle_frames`; ``evidence (B, T) bool``, which the model passes from ``batch["frame_evidence"]``: only
    a benchmark whose items carry ``needle_times`` has it, training batches do not, and the oracle then raises).
    Both read every real frame (the data's ``max_frames`` caps them), so the tower encodes them all.

    Args:
        in_dim: width D of the vision tower's patch tokens.
        num_frames: frames kept per video, uniformly spaced.
        pool: stride (= kernel) of the spatial average pooling over the √N×√N patch grid; 1 keeps every patch.
        budget: maximum tokens per sample θ; ``num_frames · ceil(√N / pool)²`` must not exceed it.
        pick: how the ``num_frames`` frames are chosen: ``uniform`` (segment midpoints), ``random`` (seeded, in time
            order) or ``oracle`` (the needle frames first; needs the batch's ``frame_evidence``).
        seed: the seed of ``pick="random"``; None: the run's seed (``--seed_everything``, read when the reducer is
            built), so a study's seeds draw different random frames.
    """

    training_free = True
    # may change on a trained model (Reducer.inference_args): a Uniform checkpoint is evaluated with every pick
    inference_args = frozenset({"num_frames", "pool", "budget", "pick", "seed"})

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> Uniform:
        return cls(in_dim, num_frames=4, pool=2, budget=16)

    def __init__(self, in_dim: int, num_frames: int = 8, pool: int = 1, budget: int = 4096,
                 pick: Literal["uniform", "random", "oracle"] = "uniform", seed: int | None = None):
        super().__init__()
        if num_frames < 1 or pool < 1 or budget < 1:
            raise ValueError(
                f"Uniform needs num_frames, pool and budget >= 1, got {num_frames}, {pool}, {budget}; "
                "check --model.reducer.init_args.num_frames / .pool / .budget"
            )
        if pick not in PICKS:
            raise ValueError(f"Uniform: pick must be one of {', '.join(PICKS)}, got {pick!r}; set "
                             "--model.reducer.init_args.pick")
        self.in_dim = self.out_dim = in_dim
        self.num_frames = num_frames
        self.pool = pool
        self.budget = budget
        self.pick = pick
        self.seed = torch.initial_seed() % 2**31 if seed is None else seed  # the run's seed

    @property
    def max_frames(self) -> int | None:
        """``num_frames`` uniformly spaced frames are encoded; the random and oracle picks read every real frame."""
        return self.num_frames if self.pick == "uniform" else None

    @property
    def needs_evidence(self) -> bool:
        return self.pick == "oracle"

    def forward(
        self,
        frames: Tensor,
        cls: Tensor,
        frame_mask: Tensor,
        text_ids: Tensor | None = None,
        text_mask: Tensor | None = None,
        cls_attn: Tensor | None = None,
        evidence: Tensor | None = None,
    ) -> ReducerOutput:
        B, T, N, D = frames.shape
        per_frame = N if self.pool == 1 else math.ceil(math.isqrt(N) / self.pool) ** 2
        if self.num_frames * per_frame > self.budget:
            raise ValueError(
                f"Uniform: num_frames={self.num_frames} × {per_frame} tokens per frame (N={N} patches, "
                f"pool={self.pool}) = {self.num_frames * per_frame} tokens exceeds budget={self.budget}; lower "
                "--model.reducer.init_args.num_frames, raise --model.reducer.init_args.pool or "
                "--model.reducer.init_args.budget"
            )
        idx, valid = self.select(frame_mask, evidence)  # (B, n)
        picked = spatial_pool(gather_frames(frames, idx), self.pool)  # (B, n, N', D)
        n, n_tok = picked.shape[1], picked.shape[2]
        tokens = picked.reshape(B, n * n_tok, D)  # (B, n, N', D) -> (B, n*N', D)
        keep = valid[:, :, None].expand(B, n, n_tok).reshape(B, n * n_tok)  # (B, n, N') -> (B, n*N')
        tokens, token_mask = pack(tokens, keep)
        info = {"num_tokens": token_mask.sum(1), "frame_indices": idx, "frame_valid": valid}
        return ReducerOutput(tokens, token_mask, info)

    def select(self, frame_mask: Tensor, evidence: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The ``pick``'s frames: ``indices, valid (B, n)``, ascending absolute frame positions."""
        if self.pick == "uniform":
            return select_uniform_frames(frame_mask, self.num_frames)
        if self.pick == "random":
            return random_frames(frame_mask, self.num_frames, self.seed)
        if evidence is None:
            raise ValueError(
                "Uniform(pick='oracle') keeps the frames inside each question's needle spans, and this batch says "
                "none (batch['frame_evidence'] comes only from a benchmark whose items carry needle_times, such as "
                "the synthetic needle sets, experiments/eval/needle_*s.yaml; training batches have none). Evaluate "
                "on such a set, or set --model.reducer.init_args.pick uniform (or random)"
            )
        return oracle_frames(frame_mask, evidence, self.num_frames)
