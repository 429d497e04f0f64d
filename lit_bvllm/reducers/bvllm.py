"""B-VLLM: text-conditioned frame selection, temporal frame merging, spatial sampling and spatial merging.

Lu et al., "B-VLLM: A Vision Large Language Model with Balanced Spatio-Temporal Tokens", §3. For a video of T
frames (patch tokens V, [CLS] tokens V_cls) and a question:

1. frame selection (§3.2, Eq. 1): a Q-Former reads the T [CLS] tokens and the question and makes L* queries Q;
   ``S = GumbelSoftmax(Q V_clsᵀ, τ)`` is an L* x T matrix whose rows weigh frames, and ``V* = S V``: row l* of V*
   is, patch position by patch position, the S-weighted sum of the T frames' N patch tokens (the tower's raw
   output; the [CLS] tokens only score frames and are neither mixed nor passed on; the spatial Q-Former's
   LayerNorm comes after the mixture, where the released code normalises each frame before mixing). The rows
   are put back in temporal order (by their argmax frame). ``selection`` says what the rows are:

   - ``"hard"`` (default): one-hot rows, straight-through in training, the noise-free argmax in evaluation, so
     V* holds whole frames. Duplicates are then identical rows: evaluation gives the same output for every
     γ in (0, 1], and τ acts only in training. Deterministic and cheap (a gather); enough wherever τ and γ stay
     fixed (Fig. 3a, Fig. 3c, Table 3), but it cannot reproduce Fig. 3b.
   - ``"soft"``: the Gumbel-softmax rows themselves, as the paper writes Eq. 1 and the released code runs it:
     with Gumbel noise in training, ``softmax(Q V_clsᵀ / τ)`` in evaluation (``eval_noise=True`` adds Gumbel
     noise there too, seeded by ``noise_seed`` and keyed by (video length, query, frame), so two evaluation
     passes agree: the released code's noisy selection, made repeatable). Low τ gives near one-hot rows, high τ
     mixes frames (the "oversmoothing" of §5.3), and γ decides which mixtures count as duplicates: the mode
     that reproduces the τ x γ study of Fig. 3b. It costs L*·T·N·D multiply-adds for ``S V`` instead of a gather;
2. temporal merging (§3.3, Eq. 2-5): rows of S whose cosine similarity is >= γ are duplicates, and each group's
   frame tokens are averaged (Eq. 4). ``"soft"`` groups as Eq. 2-5 write it: the first remaining row α (in
   temporal order) takes every remaining row β with cos(s_α, s_β) >= γ, they are removed, and so on, so in a
   chain a ~ b ~ c with a !~ c the groups are {a, b} and {c}. ``"hard"`` closes duplicate groups transitively
   (connected components); on one-hot rows, whose cosines are 0 or 1, both rules give the same groups (the
   released code keeps only one hop of a chain and drops the rest);
3. spatial sampling (§3.4): a second Q-Former turns each kept frame's N patch tokens into R tokens, conditioned on
   the question;
4. spatial merging (§3.4): while a sample holds more than θ tokens, every frame is halved by ToMe bipartite
   merging (sizes carried across rounds), and one partial round lands exactly on θ.

Each step has a switch for the ablation of Table 3: ``frame_selection=False`` takes L* uniformly spaced frames,
``temporal_merge=False`` keeps duplicates, ``spatial_sampling=False`` average-pools each frame to R tokens,
``spatial_merge=False`` drops whole trailing frames past θ instead of merging (the budget holds either way).
L*, R, θ, τ, γ, ``selection``, ``eval_noise`` and ``noise_seed`` are plain attributes: they may change on a trained
model (L* and R up to the trained number of queries; fewer uses the first ones).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_bvllm.reducers.base import Reducer, ReducerOutput, SelectedFrames, pack
from lit_bvllm.reducers.merging import merge_to_target
from lit_bvllm.reducers.qformer import TextQFormer, vision_layernorm
from lit_bvllm.reducers.sampling import gumbel_select, keyed_gumbel_noise, select_uniform_frames


class BVLLM(Reducer):
    """B-VLLM's balanced spatio-temporal token reduction (module docstring for the algorithm).

    Args:
        in_dim: vision tower width D.
        num_frames: L*, frames selected per video.
        num_tokens: R, tokens sampled per kept frame.
        budget: θ, the most visual tokens a sample may get.
        tau: Gumbel-softmax temperature τ (in evaluation it acts only with ``selection="soft"``).
        gamma: cosine-similarity threshold γ from which two selections are duplicates (in evaluation it acts only
            with ``selection="soft"``: hard rows are either identical or orthogonal).
        num_queries: learned queries of each Q-Former (the largest L* and R usable later).
        hidden_size: Q-Former width (the output width of this reducer when spatial sampling is on).
        num_layers: Q-Former layers.
        num_heads: Q-Former attention heads.
        vocab_size: vocabulary of the question tokenizer; None: ``lit_bvllm`` sets it from that tokenizer as it
            parses the config (:func:`lit_bvllm.cli.commands.link_question_tokenizer`); unused with ``qformer``.
        qformer: local InstructBLIP checkpoint that both Q-Formers (``qformer.*``, ``query_tokens``) and ``ln_vision``
            (its ``vision_model.post_layernorm``, when present) start from; its ``qformer_config`` then sets the
            Q-Formers' shape (hidden_size, num_layers, num_heads, vocab_size unused). None: random initialisation.
        selection: "hard" (one-hot rows: straight-through in training, argmax in evaluation) or "soft" (the
            Gumbel-softmax rows of Eq. 1 in training and evaluation, grouped by Eq. 2-5; reproduces Fig. 3b). Train
            "soft" and evaluate "hard" for the former ``soft_selection=true``.
        eval_noise: with ``selection="soft"``, add seeded Gumbel noise in evaluation as the released code does
            (with "hard", evaluation takes a seeded Gumbel-max sample instead of the argmax).
        noise_seed: seed of the evaluation noise; the same seed gives the same noise on every pass.
        frame_selection: text-conditioned selection (True) or L* uniformly spaced frames (False).
        temporal_merge: merge duplicate selections (Eq. 2-5).
        spatial_sampling: spatial Q-Former (True) or average pooling to R tokens (False).
        spatial_merge: bipartite merging down to θ (True) or dropping frames past θ (False).
        record_attention: put the spatial Q-Former's cross-attention maps in ``info["spatial_attention"]``
            (B, L*, R, N) for visualisation (slower: eager attention).
    """

    needs_text = True

    inference_args = frozenset({"num_frames", "num_tokens", "budget", "tau", "gamma", "selection", "eval_noise",
                                "noise_seed", "record_attention"})

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> BVLLM:
        return cls(in_dim, num_frames=4, num_tokens=4, budget=10, num_queries=6, hidden_size=16, num_layers=2,
                   num_heads=2, vocab_size=50)

    def __init__(
        self,
        in_dim: int,
        num_frames: int = 32,
        num_tokens: int = 32,
        budget: int = 768,
        tau: float = 0.1,
        gamma: float = 0.75,
        num_queries: int = 32,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        vocab_size: int | None = None,
        qformer: str | None = None,
        selection: Literal["hard", "soft"] = "hard",
        eval_noise: bool = False,
        noise_seed: int = 0,
        frame_selection: bool = True,
        temporal_merge: bool = True,
        spatial_sampling: bool = True,
        spatial_merge: bool = True,
        record_attention: bool = False,
    ):
        super().__init__()
        bad = [f"{k}={v} (must be >= 1)" for k, v in (("num_frames", num_frames), ("num_tokens", num_tokens),
                                                       ("budget", budget), ("num_queries", num_queries)) if v < 1]
        if frame_selection and num_frames > num_queries:
            bad.append(f"num_frames={num_frames} (L*) exceeds num_queries={num_queries}: frame selection has one query "
                       "per kept frame")
        if spatial_sampling and num_tokens > num_queries:
            bad.append(f"num_tokens={num_tokens} (R) exceeds num_queries={num_queries}: spatial sampling has one query "
                       "per token")
        if not spatial_merge and num_tokens > budget:
            bad.append(f"num_tokens={num_tokens} (R) exceeds budget={budget} (θ) with spatial_merge=false: "
                       "not one frame would fit, and the LLM would get no visual token")
        if tau <= 0 or not 0 < gamma <= 1:
            bad.append(f"tau={tau} must be > 0 and gamma={gamma} in (0, 1]")
        if selection not in ("hard", "soft"):
            bad.append(f"selection={selection!r} must be 'hard' or 'soft'")
        if bad:
            raise ValueError("BVLLM: " + "; ".join(bad) + " (set them under --model.reducer.init_args)")
        self.in_dim, self.num_frames, self.num_tokens, self.budget = in_dim, num_frames, num_tokens, budget
        self.tau, self.gamma = tau, gamma
        self.selection, self.eval_noise, self.noise_seed = selection, eval_noise, noise_seed
        self.frame_selection, self.temporal_merge = frame_selection, temporal_merge
        self.spatial_sampling, self.spatial_merge = spatial_sampling, spatial_merge
        self.record_attention = record_attention
        self.ln_vision = vision_layernorm(in_dim, qformer)  # LAVIS's ln_vision
        qf = dict(encoder_width=in_dim, num_queries=num_queries, hidden_size=hidden_size, num_layers=num_layers,
                  num_heads=num_heads, vocab_size=vocab_size, pretrained=qformer)
        if frame_selection:
            self.temporal_qformer = TextQFormer(**qf)
            self.temporal_proj = nn.Linear(self.temporal_qformer.hidden_size, in_dim)  # Q into [CLS] space
            # small start: every frame starts about equally likely, so early samples explore the video instead of
            # every query taking the frame a random projection favours (the Q-Former's queries share a LayerNorm)
            nn.init.normal_(self.temporal_proj.weight, std=0.02)
            nn.init.zeros_(self.temporal_proj.bias)
        if spatial_sampling:
            self.spatial_qformer = TextQFormer(**qf)
        self.out_dim = self.spatial_qformer.hidden_size if spatial_sampling else in_dim
        self.generator: torch.Generator | None = None  # optional RNG for the training Gumbel noise

    # ------------------------------------------------------------------ selection

    @property
    def max_frames(self) -> int | None:
        return None if self.frame_selection else self.num_frames  # selection needs every frame's [CLS]

    def scores(self, cls: Tensor, frame_mask: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """Frame scores ``Q V_clsᵀ / √D (B, L*, T)``, the logits of Eq. 1."""
        q = self.temporal_qformer(self.num_frames, self.ln_vision(cls), frame_mask, text_ids, text_mask)  # (B, L*, H)
        return torch.einsum("bkd,btd->bkt", self.temporal_proj(q).float(), cls.float()) / math.sqrt(self.in_dim)

    def select(self, cls: Tensor, frame_mask: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        """Selection matrix ``S (B, L*, T)`` (Eq. 1): one-hot rows with ``selection="hard"``, soft ones with "soft"."""
        B, T, _ = cls.shape
        if not self.frame_selection:
            idx, valid = select_uniform_frames(frame_mask, self.num_frames)  # (B, min(L*, T))
            s = F.one_hot(idx, T).float() * valid[..., None]
            return F.pad(s, (0, 0, 0, self.num_frames - s.shape[1]))  # (B, L*, T): missing rows select nothing
        logits = self.scores(cls, frame_mask, text_ids, text_mask)
        noise = None
        if self.eval_noise and not self.training:  # keyed by (real frames, query, frame): batch and padding free
            dev = logits.device
            noise = keyed_gumbel_noise(self.noise_seed, frame_mask.sum(1)[:, None, None],
                                       torch.arange(logits.shape[1], device=dev)[None, :, None],
                                       torch.arange(T, device=dev)[None, None])
        any_frame = frame_mask.any(1)
        safe_mask = frame_mask | ~any_frame[:, None]  # a sample without frames selects nothing (zeroed below)
        s = gumbel_select(logits, safe_mask, self.tau, self.training, hard=self.selection == "hard",
                          generator=self.generator, noise=noise)
        return s * any_frame[:, None, None]

    @property
    def selects_from_cls(self) -> bool:
        """Whether, as set now, the reducer reads patches only of the frames its selection picks from [CLS] alone:
        hard one-hot selection outside training. Then the model may encode [CLS] for every frame and the patches
        of the picked frames only (:meth:`frames_needed`, ``SelectedFrames``)."""
        return self.frame_selection and self.selection == "hard" and not self.training

    def frames_needed(self, cls: Tensor, frame_mask: Tensor, text_ids: Tensor, text_mask: Tensor | None = None
                      ) -> tuple[Tensor, Tensor]:
        """``(B, L*)`` the frame (position in ``cls``) each selection row picks, -1 for a row that picks none: every
        frame whose patches :meth:`forward` reads when :attr:`selects_from_cls`; and the selection ``S`` itself,
        which the forward takes back (``SelectedFrames.selection``) instead of selecting again."""
        s = self.select(cls, frame_mask, text_ids, torch.ones_like(text_ids) if text_mask is None else text_mask)
        return torch.where(s.sum(-1) > 0, s.argmax(-1), -1), s

    # ------------------------------------------------------------------ temporal

    def order_and_group(self, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Temporal order and duplicate groups of the selected rows (Eq. 2-5: greedy with ``selection="soft"``,
        connected components with "hard").

        Returns ``s`` with rows sorted by selected frame, the group matrix ``G (B, L, L)`` (``G[b, g, i] = 1`` when
        row i belongs to the group represented by row g, the group's earliest row) and ``keep (B, L)`` (the
        representatives).
        """
        B, L, T = s.shape
        valid = s.detach().sum(-1) > 0  # (B, L): rows that select something
        frame = s.detach().argmax(-1).masked_fill(~valid, T)  # padded rows sort last
        order = torch.sort(frame, dim=1, stable=True).indices
        s = torch.gather(s, 1, order[..., None].expand(B, L, T))
        valid = torch.gather(valid, 1, order)
        rep = torch.arange(L, device=s.device).expand(B, L)  # (B, L) the row each row merges into: itself
        if self.temporal_merge:
            with torch.no_grad():
                u = F.normalize(s.float(), dim=-1)
                dup = (u @ u.transpose(1, 2) >= self.gamma - 1e-6) & valid[:, :, None] & valid[:, None, :]  # (B, L, L)
                rep = _greedy_groups(dup, valid) if self.selection == "soft" else _connected_groups(dup)
        groups = F.one_hot(rep, L).transpose(1, 2).float()  # (B, L, L): groups[b, g, i] = rep[b, i] == g
        keep = (rep == torch.arange(L, device=s.device)) & valid
        return s, groups, keep

    # ------------------------------------------------------------------ forward

    def forward(self, frames, cls, frame_mask, text_ids=None, text_mask=None, cls_attn=None) -> ReducerOutput:
        if text_ids is None:
            raise ValueError("BVLLM is text-conditioned: pass the question as text_ids/text_mask")
        if text_mask is None:
            text_mask = torch.ones_like(text_ids)
        subset = isinstance(frames, SelectedFrames)  # the picked frames' patches only (two-pass evaluation)
        if subset and not self.selects_from_cls:
            raise ValueError("BVLLM got only the picked frames' patches, but soft selection or training reads every "
                             "frame's")
        B, T = cls.shape[:2]
        N, D = frames.patches.shape[2:] if subset else frames.shape[2:]
        L = self.num_frames
        s = frames.selection if subset else self.select(cls, frame_mask, text_ids, text_mask)  # (B, L*, T)
        s, groups, keep = self.order_and_group(s)
        if self.selection == "soft" or (self.training and s.requires_grad):  # soft rows, or straight-through ones
            picked = torch.einsum("blt,btnd->blnd", s.to(frames.dtype), frames)  # V* = S V (Eq. 1)
        else:  # one-hot rows: gather instead of a (L*, T) x (T, N*D) product
            idx = s.argmax(-1)  # (B, L*)
            source, idx = ((frames.patches, torch.gather(frames.slot, 1, idx).clamp_min(0)) if subset
                           else (frames, idx))
            picked = (torch.gather(source, 1, idx[..., None, None].expand(B, L, N, D))
                      * s.amax(-1)[..., None, None].to(source.dtype))
        counts = groups.sum(-1, keepdim=True).clamp_min(1)  # (B, L, 1) group sizes
        merged = torch.einsum("bgi,bind->bgnd", (groups / counts).to(picked.dtype), picked)  # Eq. 4: group means

        # spatial sampling on the kept frames only: (B, L, N, D) -> (K, N, D) -> (K, R, H)
        rows = keep.nonzero(as_tuple=True)
        kept = merged[rows]
        R = self.num_tokens
        attention = None
        if self.spatial_sampling:
            tokens = self.spatial_qformer(R, self.ln_vision(kept),
                                          torch.ones(kept.shape[:2], dtype=torch.bool, device=kept.device),
                                          text_ids[rows[0]], text_mask[rows[0]], return_attention=self.record_attention)
            if self.record_attention:
                tokens, maps = tokens
                attention = maps.new_zeros(B, L, R, N)
                attention[rows] = maps.detach()  # (K, R, N) -> (B, L*, R, N)
        else:
            tokens = _pool(kept, R)
        H = tokens.shape[-1]
        k = keep.sum(1)  # (B,) kept frames
        if self.spatial_merge:  # spatial merging to the budget θ: per-frame targets that sum exactly to θ
            rank = keep.cumsum(1) - 1  # position of a kept frame among its sample's kept frames
            base, extra = self.budget // k.clamp_min(1), self.budget % k.clamp_min(1)
            target = (base[:, None] + (rank < extra[:, None]).long()).clamp_min(1)  # (B, L)
            x, size, tmask = merge_to_target(tokens, target[rows])
        else:
            x, size, tmask = (tokens, torch.ones(*tokens.shape[:2], 1, device=tokens.device),
                              torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))
        frame_tokens = x.new_zeros(B, L, x.shape[1], H + 1)  # tokens and their sizes, (B, L, n, H+1)
        frame_valid = torch.zeros(B, L, x.shape[1], dtype=torch.bool, device=x.device)
        frame_tokens[rows], frame_valid[rows] = torch.cat([x, size.to(x.dtype)], -1), tmask
        if not self.spatial_merge:  # no merging: whole trailing frames past θ are dropped
            fits = frame_valid.sum(-1).cumsum(1) <= self.budget  # (B, L)
            frame_valid = frame_valid & fits[..., None]
        packed, out_mask = pack(frame_tokens.flatten(1, 2), frame_valid.flatten(1, 2))  # (B, L*n, H+1), time order
        out, size = packed[..., :H], packed[..., H:].float()
        if (out_mask.sum(1) > self.budget).any():  # θ below the kept frames: the last rounds merge across frames
            out, _, out_mask = merge_to_target(out, torch.full((B,), self.budget, device=out.device), size, out_mask)
            out = out * out_mask[..., None]
        info = {
            "selection": s.detach(),  # (B, L*, T) rows (one-hot or soft weights) in temporal order
            "frame_indices": torch.where(keep, s.detach().argmax(-1), -1),  # (B, L*) kept row's argmax frame or -1
            "group_sizes": torch.where(keep, counts.squeeze(-1).long(), 0),  # (B, L*) selections merged into each
            "num_frames_kept": k,
            "tokens_per_frame": frame_valid.sum(-1),  # (B, L*) after spatial merging
            "num_tokens": out_mask.sum(1),
        }
        if attention is not None:
            info["spatial_attention"] = attention
        return ReducerOutput(out, out_mask, info)


def _pool(x: Tensor, r: int) -> Tensor:
    """Average-pool each frame's N tokens to r: 2-D on the patch grid when both are squares, else along the sequence."""
    K, N, D = x.shape
    g, h = math.isqrt(N), math.isqrt(r)
    if g * g == N and h * h == r:
        grid = x.transpose(1, 2).reshape(K, D, g, g)  # (K, N, D) -> (K, D, g, g)
        return F.adaptive_avg_pool2d(grid, h).flatten(2).transpose(1, 2)  # -> (K, r, D)
    return F.adaptive_avg_pool1d(x.transpose(1, 2), r).transpose(1, 2)


def _connected_groups(dup: Tensor) -> Tensor:
    """``rep (B, L)``: the earliest row of each row's connected component of the duplicate graph ``dup (B, L, L)``."""
    L = dup.shape[-1]
    reach = dup | torch.eye(L, dtype=torch.bool, device=dup.device)
    for _ in range(max(1, math.ceil(math.log2(max(L, 2))))):  # transitive closure by squaring
        reach = reach | ((reach.float() @ reach.float()) > 0)
    return torch.where(reach, torch.arange(L, device=dup.device), L).min(-1).values


def _greedy_groups(dup: Tensor, valid: Tensor) -> Tensor:
    """``rep (B, L)``: duplicate groups as Eq. 2-5 build them (B-VLLM §3.3), for rows in order.

    The first remaining row α takes every remaining row β with ``dup[α, β]`` (D_α, Eq. 2), they are removed
    (Eq. 3), and the next remaining row goes on; ``rep[b, β] = α``. Rows that are not ``valid`` stay alone.
    """
    B, L, _ = dup.shape
    ar = torch.arange(L, device=dup.device)
    dup = dup | torch.eye(L, dtype=torch.bool, device=dup.device)  # α belongs to D_α
    rep, remaining = ar.expand(B, L).clone(), valid.clone()
    # Eq. 2-5 are sequential over rows (which rows remain depends on the groups before), so this loops over the
    # L* rows (L* <= 32), each step vectorised across the batch; row a is the first remaining one when it remains
    for a in range(L):
        members = dup[:, a] & remaining & remaining[:, a, None]  # (B, L): D_a, empty where row a was merged
        rep = torch.where(members, a, rep)
        remaining = remaining & ~members
    return rep
