"""Text-conditioned Q-Former: learned queries and the question in self-attention, cross-attention to visual tokens.

This is transformers' ``InstructBlipQFormerModel`` (InstructBLIP, Dai et al. 2023, §3.2: the instruction enters
the Q-Former's self-attention beside the queries), which B-VLLM uses for both frame selection and spatial
sampling (B-VLLM §3.2, §3.4). It starts either from random initialisation or, as in the paper, from a local
InstructBLIP checkpoint (B-VLLM's released code loads ``Qformer.*``, ``query_tokens`` and ``ln_vision`` from
LAVIS's InstructBLIP-Vicuna-7B into both Q-Formers).

An InstructBLIP folder, as ``InstructBlipForConditionalGeneration.save_pretrained`` (transformers 5) writes it:

- ``config.json``: an ``InstructBlipConfig`` (``model_type`` "instructblip"); its ``qformer_config`` gives the
  Q-Former's shape (``encoder_hidden_size`` = the tower's width), ``num_query_tokens`` the queries, and
  ``vision_config`` the tower;
- ``*.safetensors`` (one file or shards with ``model.safetensors.index.json``), tensor names without a prefix:
  ``qformer.*`` (``InstructBlipQFormerModel``'s state dict: ``qformer.embeddings.*``, ``qformer.encoder.*``),
  ``query_tokens`` ``(1, num_query_tokens, hidden)``, ``vision_model.*`` (the tower; ``vision_model.post_layernorm.*``
  is LAVIS's ``ln_vision``, the LayerNorm before the Q-Former), ``language_projection.*``, ``language_model.*``;
- ``qformer_tokenizer/``: the Q-Former's BERT tokenizer (``InstructBlipProcessor.save_pretrained``), and
  ``preprocessor_config.json``: the tower's ``BlipImageProcessor``.

Only ``qformer.*`` and ``query_tokens`` are read here (:func:`vision_layernorm` reads
``vision_model.post_layernorm.{weight,bias}``), never the language model. A *Q-Former-only* folder holds
``config.json`` (``InstructBlipConfig(...).save_pretrained``: ``vision_config`` of the tower's shape,
``qformer_config`` with ``encoder_hidden_size`` = its width, ``num_query_tokens``), a ``model.safetensors`` with
just those keys (``qformer.*``, ``query_tokens``, ``vision_model.post_layernorm.weight``,
``vision_model.post_layernorm.bias``) and ``qformer_tokenizer/`` (the question tokenizer's default there): it
serves ``qformer:`` and is refused as a vision tower (:func:`lit_bvllm.backbones.load_vision_tower`). Built on the
meta device (``with torch.device("meta")``), a module reads no tensor, so a folder holding only ``config.json``
builds there (shapes only).
"""

from __future__ import annotations

import json

import torch
from torch import Tensor, nn
from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

from datamodules.loading import local_dir
from lit_bvllm.backbones import eager_attention, read_safetensors

FLAG = "--model.reducer.init_args.qformer"
QFORMER_PREFIX = "qformer."
QUERY_TOKENS = "query_tokens"
LN_VISION_PREFIX = "vision_model.post_layernorm."
QFORMER_TOKENIZER = "qformer_tokenizer"


class TextQFormer(nn.Module):
    """``num_queries`` learned queries that read visual tokens, conditioned on a tokenized question.

    Args:
        encoder_width: width D of the visual tokens it cross-attends to.
        num_queries: learned queries (a caller may use only the first k of them).
        hidden_size: Q-Former width.
        num_layers: Q-Former layers.
        num_heads: attention heads.
        vocab_size: size of the question tokenizer's vocabulary (30523 for InstructBLIP's BERT); needed without
            ``pretrained``.
        cross_attention_frequency: a cross-attention block every this many layers (InstructBLIP: 2).
        max_text_length: longest question (position embeddings).
        pretrained: local InstructBLIP checkpoint folder to initialise from (queries, Q-Former weights; module
            docstring). Its ``qformer_config`` then decides the shape: ``hidden_size``, ``num_layers``,
            ``num_heads``, ``vocab_size``, ``cross_attention_frequency`` and ``max_text_length`` are not used.
    """

    def __init__(
        self,
        encoder_width: int,
        num_queries: int = 32,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        vocab_size: int | None = None,
        cross_attention_frequency: int = 2,
        max_text_length: int = 512,
        pretrained: str | None = None,
    ):
        super().__init__()
        if pretrained is not None:
            config = pretrained_config(pretrained)
        else:
            if vocab_size is None:
                raise ValueError("a Q-Former without a checkpoint needs the question tokenizer's vocabulary size: set "
                                 "--model.reducer.init_args.vocab_size (lit_bvllm sets it from the question "
                                 "tokenizer), or --model.reducer.init_args.qformer")
            config = InstructBlipQFormerConfig(
                vocab_size=vocab_size,
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=4 * hidden_size,
                cross_attention_frequency=cross_attention_frequency,
                encoder_hidden_size=encoder_width,
                max_position_embeddings=max_text_length,
            )
        _check_width(config.encoder_hidden_size, encoder_width, pretrained)
        self.qformer = InstructBlipQFormerModel(config)
        self.query_tokens = nn.Parameter(torch.randn(1, num_queries, config.hidden_size) * 0.02)
        self.hidden_size = config.hidden_size
        if pretrained is not None:
            self._load(pretrained, num_queries)
        # The last layer's text feed-forward only produces text outputs, which nobody reads (the queries are the
        # output): frozen, so DDP sees no parameter without a gradient, and flagged, so a checkpoint that leaves
        # frozen tensors out (DeepSpeed's exclude_frozen_parameters) still loads (lit_bvllm.weights.unused_names).
        last = self.qformer.encoder.layer[-1]
        for p in [*last.intermediate.parameters(), *last.output.parameters()]:
            p.requires_grad_(False)
            p.unused_output = True

    def forward(
        self,
        num_queries: int,
        visual: Tensor,
        visual_mask: Tensor,
        text_ids: Tensor,
        text_mask: Tensor,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``visual (R, L, D)``, ``visual_mask (R, L)``, question ``(R, S)`` -> query outputs ``(R, num_queries, H)``.

        With ``return_attention`` also the last cross-attention map, averaged over heads, ``(R, num_queries, L)``
        (computed with eager attention for that call, since fused kernels do not return weights).
        """
        if num_queries > self.query_tokens.shape[1]:
            raise ValueError(f"{num_queries} queries requested but only {self.query_tokens.shape[1]} were trained")
        R = visual.shape[0]
        queries = self.query_tokens[:, :num_queries].expand(R, -1, -1)
        attn = torch.cat([torch.ones(R, num_queries, dtype=text_mask.dtype, device=text_mask.device), text_mask], 1)
        with eager_attention(self.qformer, return_attention):
            out = self.qformer(
                input_ids=text_ids,
                attention_mask=attn,
                query_embeds=queries,
                encoder_hidden_states=visual,
                encoder_attention_mask=visual_mask.long(),
                output_attentions=return_attention,
            )
        queries_out = out.last_hidden_state[:, :num_queries]  # (R, num_queries + S, H) -> the query positions
        if not return_attention:
            return queries_out
        # (R, heads, Q, L) -> (R, Q, L)
        return queries_out, out.cross_attentions[-1][:, :, :num_queries].float().mean(1)

    def _load(self, path: str, num_queries: int) -> None:
        """The folder's ``qformer.*`` into the Q-Former (every tensor, shapes checked) and its first ``num_queries``
        ``query_tokens``; nothing on the meta device (shapes only)."""
        if self.query_tokens.is_meta:
            return
        state = read_safetensors(path, lambda k: k.startswith(QFORMER_PREFIX) or k == QUERY_TOKENS)
        queries = state.pop(QUERY_TOKENS, None)
        state = {k[len(QFORMER_PREFIX) :]: v for k, v in state.items()}
        absent = [name for name, gone in (("qformer.*", not state), (QUERY_TOKENS, queries is None)) if gone]
        if absent:
            raise ValueError(f"Q-Former checkpoint '{path}' ({FLAG}) holds no {' and no '.join(absent)} tensors in its "
                             "*.safetensors: use an InstructBLIP folder written by save_pretrained (the keys are "
                             "listed in lit_bvllm/reducers/qformer.py's docstring)")
        if queries.shape[1] < num_queries or queries.shape[2] != self.query_tokens.shape[2]:
            raise ValueError(f"Q-Former checkpoint '{path}' ({FLAG}) has query_tokens {tuple(queries.shape)}; "
                             f"{num_queries} queries of width {self.query_tokens.shape[2]} requested (num_queries)")
        own = self.qformer.state_dict()
        # buffers that are not saved today (position_ids) were saved by older transformers: leftovers, not weights
        buffers = {name for name, _ in self.qformer.named_buffers()} - set(own)
        state = {k: v for k, v in state.items() if k not in buffers}
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                      if k in own and v.shape != own[k].shape]
        if missing or unexpected or mismatched:
            raise ValueError(f"Q-Former checkpoint '{path}' ({FLAG}) does not match its qformer_config: missing "
                             f"{missing[:5]}, unexpected {unexpected[:5]}, mismatched {mismatched[:5]}")
        self.qformer.load_state_dict(state)
        with torch.no_grad():
            self.query_tokens.copy_(queries[:, :num_queries])


def vision_layernorm(in_dim: int, pretrained: str | None = None) -> nn.LayerNorm:
    """The LayerNorm between the vision tower and a Q-Former (LAVIS's ``ln_vision``), over width ``in_dim``.

    Without ``pretrained``: torch's default init (weight 1, bias 0). With an InstructBLIP folder: its
    ``vision_model.post_layernorm.{weight,bias}`` (HF's name for ``ln_vision``) when the folder holds them, else the
    default init (a Q-Former checkpoint without its LayerNorm). The eps stays torch's 1e-5, LAVIS's ``ln_vision``'s
    (InstructBLIP trained with it; HF's port writes 1e-6 for ``post_layernorm``). Nothing is read on the meta device.
    """
    if pretrained is None:
        return nn.LayerNorm(in_dim)
    _check_width(pretrained_config(pretrained).encoder_hidden_size, in_dim, pretrained)
    ln = nn.LayerNorm(in_dim)
    if ln.weight.is_meta:
        return ln
    state = {k[len(LN_VISION_PREFIX) :]: v for k, v in
             read_safetensors(pretrained, lambda k: k.startswith(LN_VISION_PREFIX)).items()}
    if state:
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        if shapes != {"weight": (in_dim,), "bias": (in_dim,)}:
            raise ValueError(f"Q-Former checkpoint '{pretrained}' ({FLAG}): {LN_VISION_PREFIX}* {shapes} is not a "
                             f"LayerNorm of width {in_dim}")
        ln.load_state_dict(state)
    return ln


def _check_width(qformer_width: int, encoder_width: int, path: str | None) -> None:
    if qformer_width != encoder_width:
        raise ValueError(
            f"Q-Former checkpoint '{path}' ({FLAG}) cross-attends to width {qformer_width}, but the vision tower "
            f"(--model.vision_tower) gives {encoder_width}: use the matching tower (EVA ViT-g: 1408) or random "
            "initialisation"
        )


def _instructblip_config(path: str) -> dict:
    """The folder's ``config.json`` as a dict with a ``qformer_config`` (an InstructBlipConfig's; a bare Q-Former
    config is its own ``qformer_config``)."""
    file = local_dir(path, "Q-Former checkpoint", FLAG) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"Q-Former checkpoint '{path}' ({FLAG}) has no config.json: use an InstructBLIP "
                                "folder written by save_pretrained")
    cfg = json.loads(file.read_text())
    return cfg if "qformer_config" in cfg else {"qformer_config": cfg}


def pretrained_config(path: str) -> InstructBlipQFormerConfig:
    """The Q-Former config of an InstructBLIP folder (its ``InstructBlipConfig``'s ``qformer_config``)."""
    return InstructBlipQFormerConfig(**_instructblip_config(path)["qformer_config"])
