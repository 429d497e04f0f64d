"""FastV (Chen et al., "An Image is Worth 1/2 Tokens After Layer 2", ECCV 2024): training-free pruning of visual
tokens inside the LLM, at prefill.

The visual tokens (here a :class:`~lit_bvllm.reducers.uniform.Uniform` pick: ``num_frames`` uniformly spaced frames,
at most θ tokens) enter the LLM whole. After decoder layer ``K - 1`` each visual token is scored by the attention
the prompt's last token pays it there (heads averaged); from layer ``K`` on only the ``round(n · keep)`` best-scored
visual tokens of a sample take part (``keep = 1 - R``, FastV's R the share dropped; K = 2, R = 0.5 by default), every
text token stays, and the kept tokens keep their original positions (RoPE). The answer's tokens, scored or generated
after the prompt, see the pruned set from layer K on, all tokens before it: the prune-once-at-prefill rule of the
released code's Hugging Face and lmms-eval versions (``LlamaModel.fastv_forward``; ``fastv_kvcache.py``; the paper's
"average attention received" is, in every released version, the last token's row).

Here pruning is carried out by masking: the pruned tokens' columns are masked for every query of layers ``>= K``
(the released code's mask variant), which gives exactly the outputs of dropping them; the FLOPs recorded
(:mod:`lit_bvllm.flops`) are those of dropping them (``llm_kept`` tokens from layer K on). The LLM runs with eager
attention while FastV scores (the fused kernels return no attention weights). It acts only at evaluation
(``generate`` and option scoring); training a FastV model trains its Uniform pick.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from lit_bvllm.reducers.sampling import rank_descending
from lit_bvllm.reducers.uniform import Uniform


class FastV(Uniform):
    """Uniform's frames and tokens, then FastV's pruning inside the LLM (module docstring).

    Args:
        in_dim, num_frames, pool, budget, pick, seed: :class:`~lit_bvllm.reducers.uniform.Uniform`'s.
        layer: K, the first decoder layer that sees only the kept visual tokens (scored at layer K - 1); >= 1.
        keep: the share of each sample's visual tokens kept from layer K on (FastV's 1 - R).
    """

    stage = "in_llm"
    inference_args = Uniform.inference_args | {"layer", "keep"}

    @classmethod
    def example(cls, in_dim: int, num_patches: int) -> FastV:
        return cls(in_dim, num_frames=4, pool=2, budget=16)

    def __init__(self, in_dim: int, num_frames: int = 8, pool: int = 1, budget: int = 4096,
                 pick: Literal["uniform", "random", "oracle"] = "uniform", seed: int | None = None, layer: int = 2,
                 keep: float = 0.5):
        super().__init__(in_dim, num_frames, pool, budget, pick, seed)
        if layer < 1 or not 0.0 <= keep <= 1.0:
            raise ValueError(f"FastV needs layer >= 1 and keep in [0, 1], got layer={layer}, keep={keep}; set "
                             "--model.reducer.init_args.layer / .keep")
        self.layer, self.keep = layer, keep

    def kept(self, visual: Tensor) -> Tensor:
        """``(B,)`` visual tokens kept from layer K on, of ``visual (B,)`` handed to the LLM."""
        return torch.round(visual.double() * self.keep).long()


class PrunedPrefill:
    """Hooks that carry out FastV on an HF decoder-only LLM for the calls made inside :meth:`active`.

    The first call that holds the prompt (``visual (B, L)``, the visual tokens' positions in it) scores them at layer
    ``K - 1`` and fixes the kept set; every call masks the pruned ones' key columns in the layers from K on. A later
    call with other rows (the option rows continuing each prompt) names which prompt each row continues (``rows``).
    """

    def __init__(self, llm: nn.Module, reducer: FastV):
        self.llm, self.reducer = llm, reducer
        decoder = llm.get_decoder() if hasattr(llm, "get_decoder") else llm.model
        self.layers = decoder.layers
        if reducer.layer >= len(self.layers):
            raise ValueError(f"FastV: layer={reducer.layer}, but the LLM has {len(self.layers)} decoder layers; set "
                             f"--model.reducer.init_args.layer below {len(self.layers)}")
        self.keep_cols: Tensor | None = None  # (B, P) False on the prompt's pruned visual tokens
        self.rows: Tensor | None = None

    def _score(self, module, args, output) -> None:
        if self.keep_cols is not None:
            return
        weights = output[1]  # (B, heads, Q, KV), eager attention's probabilities
        score = weights.float().mean(1)[:, -1, :]  # the last token's row, heads averaged: (B, KV)
        score = score.masked_fill(~self.visual, float("-inf"))
        rank = rank_descending(score)
        kept = self.reducer.kept(self.visual.sum(1))  # (B,)
        self.keep_cols = ~self.visual | (rank < kept[:, None])

    def _mask(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if self.keep_cols is None or mask is None:
            return None
        keep = self.keep_cols if self.rows is None else self.keep_cols[self.rows]
        B, KV = mask.shape[0], mask.shape[-1]
        full = torch.ones(B, KV, dtype=torch.bool, device=mask.device)
        full[:, : keep.shape[1]] = keep[:, :KV]
        kwargs["attention_mask"] = mask.masked_fill(~full[:, None, None, :], torch.finfo(mask.dtype).min)
        return args, kwargs

    @contextmanager
    def active(self, visual: Tensor):
        """Within the block, LLM calls run FastV on prompts whose visual tokens sit at ``visual (B, L)``."""
        from lit_bvllm.backbones import eager_attention

        self.visual, self.keep_cols, self.rows = visual.bool(), None, None
        k = self.reducer.layer
        hooks = [self.layers[k - 1].self_attn.register_forward_hook(self._score)]
        hooks += [layer.register_forward_pre_hook(self._mask, with_kwargs=True) for layer in self.layers[k:]]
        try:
            with eager_attention(self.llm):
                yield self
        finally:
            for h in hooks:
                h.remove()
