"""Text-conditioned Q-Former: learned queries and the question in self-attention, cross-attention to visual tokens.

This is transformers' ``InstructBlipQFormerModel`` (InstructBLIP, Dai et al. 2023, §3.2: the instruction enters
the Q-Former's self-attention beside the queries), which B-VLLM uses for both frame selection and spatial
sampling (B-VLLM §3.2, §3.4). It starts either from random initialisation or, as in the paper, from a local
InstructBLIP checkpoint; only the ``qformer.*`` and ``query_tokens`` tensors are read from its safetensors
shards, never the 7B language model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import InstructBlipQFormerConfig, InstructBlipQFormerModel

from lit_bvllm.backbones import eager_attention


class TextQFormer(nn.Module):
    """``num_queries`` learned queries that read visual tokens, conditioned on a tokenized question.

    Args:
        encoder_width: width D of the visual tokens it cross-attends to.
        num_queries: learned queries (a caller may use only the first k of them).
        hidden_size: Q-Former width.
        num_layers: Q-Former layers.
        num_heads: attention heads.
        vocab_size: size of the question tokenizer's vocabulary (30523 for InstructBLIP's BERT).
        cross_attention_frequency: a cross-attention block every this many layers (InstructBLIP: 2).
        max_text_length: longest question (position embeddings).
        pretrained: local InstructBLIP checkpoint folder to initialise from (queries, Q-Former weights).
    """

    def __init__(
        self,
        encoder_width: int,
        num_queries: int = 32,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        vocab_size: int = 30523,
        cross_attention_frequency: int = 2,
        max_text_length: int = 512,
        pretrained: str | None = None,
    ):
        super().__init__()
        if pretrained is not None:
            config = _pretrained_config(pretrained)
        else:
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
        if config.encoder_hidden_size != encoder_width:
            raise ValueError(
                f"Q-Former checkpoint '{pretrained}' cross-attends to width {config.encoder_hidden_size}, but the vision "
                f"tower gives {encoder_width}: use the matching tower (EVA ViT-g: 1408) or random initialisation"
            )
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
        return queries_out, out.cross_attentions[-1][:, :, :num_queries].float().mean(1)  # (R, heads, Q, L) -> (R, Q, L)

    def _load(self, path: str, num_queries: int) -> None:
        from safetensors import safe_open

        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in Q-Former checkpoint folder '{path}'")
        state = {}
        for f in files:
            with safe_open(str(f), "pt") as sf:
                for k in sf.keys():
                    if k.startswith("qformer."):
                        state[k[len("qformer.") :]] = sf.get_tensor(k)
                    elif k == "query_tokens":
                        state_q = sf.get_tensor(k)
                        if state_q.shape[1] < num_queries:
                            raise ValueError(f"'{path}' has {state_q.shape[1]} queries; {num_queries} requested")
                        self.query_tokens.data.copy_(state_q[:, :num_queries])
        missing, unexpected = self.qformer.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"Q-Former checkpoint '{path}' does not match: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _pretrained_config(path: str) -> InstructBlipQFormerConfig:
    cfg = json.loads((Path(path) / "config.json").read_text())
    return InstructBlipQFormerConfig(**cfg.get("qformer_config", cfg))
