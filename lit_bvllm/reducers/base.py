"""The contract every token-reduction strategy follows.

A reducer is a plain ``nn.Module`` (no Lightning inside) mapping the frozen vision tower's output for a batch of
videos to at most ``budget`` (θ) visual tokens per sample::

    frames      (B, T, N, D)   per-frame patch tokens, [CLS] excluded
    cls         (B, T, D)      the tower's [CLS] (or pooled) token per frame
    frame_mask  (B, T) bool    False on padded frames
    text_ids    (B, S) long    the question, tokenized with the reducer's tokenizer (text-conditioned reducers)
    text_mask   (B, S)
    cls_attn    (B, T, N)      [CLS]-to-patch attention of the tower (only reducers with ``needs_cls_attention``)
    keys        (B, T, N, Dh)  the tower layer's patch keys, mean over heads (only reducers with ``needs_keys``)
    evidence    (B, T) bool    the frames that show what the question asks about (only reducers with
                               ``needs_evidence``, as ``evidence=``; None when the batch has none, as in training)
  ->
    ReducerOutput(tokens (B, M, D_out), token_mask (B, M) bool, info: dict)

with ``token_mask.sum(1) <= budget`` for every input length. Valid tokens come first in each row; padded rows
of ``tokens`` are zeros. ``info`` carries what a researcher wants to look at: selected frame indices and weights,
merge groups, attention maps and token counts (tensors, detached).

Before the vision tower runs, :meth:`Reducer.frames_to_encode` says which frames the reducer will look at, so a
model never pays to encode frames a strategy drops (uniform-8 needs 8 frames encoded, not 3600). Reducers are
idempotent on that selection: ``forward`` on the selected frames alone equals ``forward`` on all of them.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn

from lit_bvllm.reducers.sampling import pack, uniform_frame_mask  # noqa: F401  (pack: re-exported for reducers)


@dataclass
class SelectedFrames:
    """The patches of only the frames a reducer's selection picks, in place of every frame's (evaluation's second
    pass, for a reducer with ``selects_from_cls``): ``patches (B, T2, N, D)``, ``slot (B, T)``, where each of the
    T encoded frames' patches sit (-1: not encoded), and ``selection``, what the reducer's ``frames_needed``
    computed, handed back so that its forward does not select again."""

    patches: Tensor
    slot: Tensor
    selection: Tensor


@dataclass
class ReducerOutput:
    """Visual tokens for the LLM: ``tokens (B, M, D_out)``, ``token_mask (B, M)`` and logging ``info``."""

    tokens: Tensor
    token_mask: Tensor
    info: dict = field(default_factory=dict)


class Reducer(nn.Module):
    """Base class: subclasses set ``in_dim``, ``out_dim``, ``budget`` and implement ``forward``."""

    in_dim: int
    out_dim: int
    budget: int
    needs_text: bool = False
    needs_cls_attention: bool = False
    needs_evidence: bool = False
    """True: ``forward`` takes ``evidence=`` (``(B, T) bool`` or None), the frames a benchmark item's ``needle_times``
    cover (``batch["frame_evidence"]``): the oracle control of :class:`~lit_bvllm.reducers.uniform.Uniform`. Only such
    a reducer is passed it, so no other reducer's signature has it."""
    needs_keys: bool = False
    """True: ``forward`` takes ``keys=`` ``(B, T, N, D / heads)``, the tower layer's attention keys of the patches
    averaged over heads (VisionZip's similarity metric); None where a caller has none (the reducer then falls back
    to the features)."""
    training_free: bool = False
    """True: no parameters, nothing learnt; at evaluation it may replace a checkpoint's reducer
    (:func:`lit_bvllm.cli.commands.structure_differences`), as the training-free papers evaluate on the full model."""
    stage: str = "after_tower"
    """Where the strategy acts: ``"before_tower"`` (it picks the frames the tower encodes:
    :mod:`lit_bvllm.selectors`), ``"after_tower"`` (it reduces the tower's tokens before the LLM: every reducer
    here) or ``"in_llm"`` (it prunes visual tokens inside the LLM at prefill, so its token count is not comparable to
    the others': results record prefill FLOPs too)."""
    max_frames: int | None = None
    """Frames read per sample, uniformly spaced; None reads every real frame."""
    inference_args: frozenset[str] = frozenset()
    """Init args that act on the forward pass only, so they may differ from a checkpoint's when evaluating it (the
    sweeps of the B-VLLM paper's Fig. 3 change L*, R, θ, τ, γ on one trained model); every other init arg of a
    checkpoint's reducer must match the config's."""

    @classmethod
    def with_defaults(cls, init_args: Mapping) -> dict:
        """``init_args`` completed with the signature's defaults."""
        params = inspect.signature(cls.__init__).parameters.values()
        return {**{p.name: p.default for p in params if p.default is not p.empty}, **dict(init_args)}

    @classmethod
    def budget_from(cls, init_args: Mapping) -> int:
        """The budget θ an instance built with ``init_args`` has, without building it: ``lit_bvllm`` derives
        ``--data.visual_tokens`` from it when it parses a config, before anything loads. Override where θ follows
        from other arguments (the shared contract test checks it against every reducer's ``budget``)."""
        return int(cls.with_defaults(init_args)["budget"])

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> Reducer:
        """A small instance for a tower of width ``in_dim`` with ``num_patches`` tokens per frame: what the shared
        contract test (``tests/test_reducer_contract.py``) builds for every reducer :mod:`lit_bvllm.reducers`
        exports. Override it where the defaults are real-checkpoint sized."""
        return cls(in_dim)

    def frames_to_encode(self, frame_mask: Tensor) -> Tensor:
        """``(B, T) bool``: the frames the vision tower must encode (``max_frames`` uniformly spaced ones)."""
        return uniform_frame_mask(frame_mask, self.max_frames)

    def forward(
        self,
        frames: Tensor,
        cls: Tensor,
        frame_mask: Tensor,
        text_ids: Tensor | None = None,
        text_mask: Tensor | None = None,
        cls_attn: Tensor | None = None,
    ) -> ReducerOutput:
        raise NotImplementedError
