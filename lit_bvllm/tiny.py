"""Tiny local backbones: the suite's embedded default, built offline.

``lit_bvllm make-tiny --out DIR`` writes

- ``DIR/vision``: a CLIP-style vision tower with a [CLS] token (``CLIPVisionModel``) and its image processor;
- ``DIR/llm``: a Qwen2 causal LM and, beside it as in a real Qwen2 checkpoint, a byte-level BPE tokenizer trained
  here with the ``tokenizers`` library, with a ChatML chat template and the special tokens the suite needs.

Everything is written with ``save_pretrained`` and is meant to be read back with the loaders of
:mod:`lit_bvllm.backbones` — the same ``from_pretrained(local_path)`` path a real checkpoint takes.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from lit_bvllm.backbones import VIDEO_TOKEN

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END, VIDEO_TOKEN]

# ChatML as Qwen2-Instruct renders it: a default system turn when the conversation brings none.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_WORDS = """
a an the is are was were what which who where when how many much does do did it its this that these those there
video image frame frames second seconds first last before after then next during while between and or of in on at
to from with without by for about into over under left right up down moving moves move still static appears appear
appeared briefly shape shapes colour color colours background object objects count times once twice thrice order
circle square triangle star cross diamond ring heart ball box red green blue yellow orange purple pink cyan magenta
white black gray grey brown gradient dark light bright zero one two three four five six seven eight nine ten
eleven twelve plus minus equals answer question option options letter best choose select describe briefly
caption summary watch carefully you are helpful assistant user system yes no true false only directly give
""".split()


def _corpus(num_lines: int = 4000) -> list[str]:
    """Deterministic training text for the tiny tokenizer: the words the synthetic data uses, in varied phrases."""
    lines = [" ".join(_WORDS)]
    for i, (a, b, c) in enumerate(itertools.product(_WORDS[:60], _WORDS[60:120], _WORDS[120:])):
        if i >= num_lines:
            break
        lines.append(f"What {a} {b}? The {c} {b} {a}. {i} {i * 7 % 100}s, A. {b} B. {c}\n")
    return lines


def build_tokenizer(vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (Qwen2's kind: any text encodes, no unknown token) with a ChatML template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START, VIDEO_TOKEN],
        model_max_length=4096,
        padding_side="right",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def make_tiny(
    out: str | Path,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    vision_width: int = 64,
    llm_width: int = 64,
    num_layers: int = 2,
) -> dict[str, str]:
    """Write the tiny vision tower, LLM and tokenizer under ``out`` and return their folders.

    Args:
        out: output folder; ``out/vision`` and ``out/llm`` are created (overwritten if present).
        seed: seed of the random initialisation.
        image_size: input resolution of the vision tower (square).
        patch_size: ViT patch size; the tower emits ``(image_size/patch_size)**2`` patch tokens plus [CLS].
        vision_width: hidden size of the vision tower.
        llm_width: hidden size of the LLM.
        num_layers: transformer layers in each backbone.
    """
    if image_size % patch_size:
        raise ValueError(f"--image_size {image_size} must be a multiple of --patch_size {patch_size}")
    out = Path(out)
    vision_dir, llm_dir = out / "vision", out / "llm"
    torch.manual_seed(seed)

    vision_cfg = CLIPVisionConfig(
        hidden_size=vision_width,
        intermediate_size=2 * vision_width,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_width,
    )
    CLIPVisionModel(vision_cfg).save_pretrained(vision_dir)
    CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    ).save_pretrained(vision_dir)

    tokenizer = build_tokenizer()
    vocab = -(-len(tokenizer) // 64) * 64  # pad the embedding table to a multiple of 64, as Qwen2 does
    llm_cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=llm_width,
        intermediate_size=3 * llm_width,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    llm = Qwen2ForCausalLM(llm_cfg)
    llm.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    llm.save_pretrained(llm_dir)
    tokenizer.save_pretrained(llm_dir)
    return {"vision": str(vision_dir), "llm": str(llm_dir), "tokenizer": str(llm_dir)}
