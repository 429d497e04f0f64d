"""Prefill FLOPs of the LLM: what an item's evaluation costs before its first answer token, so that strategies that
hand the LLM the same number of tokens, and those that prune inside it (FastV), compare on one scale.

For a causal decoder of ``n`` layers over ``L`` tokens: ``2 · P · L`` for the linear layers (``P`` the parameters of
one decoder layer: attention projections and MLP; two FLOPs per multiply-add), ``2 · w · L (L + 1)`` for causal
attention (each of ``QKᵀ`` and ``AV`` takes ``w · L (L + 1) / 2`` multiply-adds, ``w`` the query heads' width), per
layer, and ``2 · h · V`` for the output layer at the last position. A method that keeps ``L'`` of the ``L`` tokens
from layer ``K`` on counts ``L`` for the first ``K`` layers and ``L'`` after (its kept tokens attend to ``L'`` keys).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def decoder_layer_params(llm: nn.Module) -> int:
    """Parameters of one decoder layer of an HF causal LM (the first; they are alike)."""
    base = llm.get_decoder() if hasattr(llm, "get_decoder") else llm.model
    return sum(p.numel() for p in base.layers[0].parameters())


def prefill_flops(llm: nn.Module, lengths: Tensor, kept: Tensor | None = None, layer: int | None = None) -> Tensor:
    """``(B,)`` FLOPs of a prefill of ``lengths (B,)`` tokens; with ``kept (B,)`` tokens from decoder layer ``layer``
    on (an in-LLM pruning method), those layers count ``kept``."""
    cfg = llm.config
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    width = cfg.num_attention_heads * (getattr(cfg, "head_dim", None) or hidden // cfg.num_attention_heads)
    p = decoder_layer_params(llm)
    L = lengths.double()

    def per_layer(n: Tensor) -> Tensor:
        return 2 * p * n + 2 * width * n * (n + 1)

    if kept is None or layer is None:
        total = layers * per_layer(L)
    else:
        total = layer * per_layer(L) + (layers - layer) * per_layer(kept.double())
    return total + 2 * hidden * cfg.vocab_size


def with_prefill(info: dict, llm: nn.Module, lengths: Tensor) -> dict:
    """``info`` with ``prefill_tokens`` and ``prefill_flops`` ``(B,)`` for prompts of ``lengths`` tokens, visual ones
    included (an in-LLM reducer's ``llm_kept``/``llm_layer`` in ``info``: its pruned layers count what it kept)."""
    kept, layer = info.get("llm_kept"), info.get("llm_layer")
    flops = prefill_flops(llm, lengths, kept, int(layer) if layer is not None else None)
    return {**info, "prefill_tokens": lengths.long(), "prefill_flops": flops.to(torch.float64)}
