"""Loading backbones, tokenizers and image processors from local folders.

Every loader goes through the Hugging Face ``from_pretrained(local_path)`` path, so the tiny backbones written by
``lit_bvllm make-tiny`` and a real checkpoint (Qwen2-7B-Instruct, CLIP, SigLIP) load the same way. Nothing here
reaches a model hub: a path that is not a local folder is an error, not a download.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

VIDEO_TOKEN = "<video>"
"""The placeholder the suite splices visual tokens at. Media tags in annotations (``<video>``, ``<image>``) map to it."""


def _local_dir(path: str | Path, what: str, flag: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"{what} folder '{p}' does not exist. lit_bvllm only loads local checkpoints (no hub downloads): "
            f"set {flag} to a folder written by `save_pretrained`, or run `lit_bvllm make-tiny --out DIR`."
        )
    return p


def load_tokenizer(path: str | Path, video_token: str | None = VIDEO_TOKEN, flag: str = "--data.tokenizer") -> PreTrainedTokenizerBase:
    """Load the LLM's tokenizer from a local folder and make sure it has the video placeholder and a pad token.

    A real checkpoint's tokenizer (Qwen2) does not know ``video_token``; it is added as a special token, so
    ``len(tokenizer)`` grows by one and the model must resize its embeddings to ``len(tokenizer)``.
    ``video_token=None`` loads the tokenizer as it is (e.g. BERT's, for a Q-Former's question input).
    """
    tok = AutoTokenizer.from_pretrained(_local_dir(path, "tokenizer", flag), local_files_only=True)
    if video_token is None:
        return tok
    if video_token not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [video_token]}, replace_extra_special_tokens=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        raise ValueError(
            f"tokenizer at '{path}' has no chat template; use a chat checkpoint (e.g. Qwen2-7B-Instruct) "
            "or set --data.template=plain"
        )
    return tok


def load_image_processor(path: str | Path):
    """The vision tower's own ``AutoImageProcessor`` (resize, crop, normalise), from a local folder."""
    return AutoImageProcessor.from_pretrained(_local_dir(path, "vision tower", "--model.vision_tower"), local_files_only=True)


def load_vision_tower(path: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """An HF vision model (CLIP / SigLIP vision tower) from a local folder.

    A full CLIP checkpoint (text + vision) loads its vision half; a vision-only folder loads as is.
    """
    p = _local_dir(path, "vision tower", "--model.vision_tower")
    config = AutoConfig.from_pretrained(p, local_files_only=True)
    vision_config = getattr(config, "vision_config", None)
    if vision_config is None:
        return AutoModel.from_pretrained(p, dtype=dtype, local_files_only=True)
    # a full CLIP/SigLIP checkpoint (as released, and as make-tiny writes it): load its vision half. The text
    # tower's weights are expected leftovers, so transformers' load report is silenced; a missing vision weight
    # would leave a randomly initialised tower, so that is an error instead.
    from transformers import CLIPVisionModel, SiglipVisionModel
    from transformers.utils import logging as hf_logging

    cls = SiglipVisionModel if "siglip" in config.model_type else CLIPVisionModel
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = cls.from_pretrained(p, dtype=dtype, local_files_only=True, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    if info["missing_keys"] or info["mismatched_keys"]:
        raise ValueError(f"vision tower '{p}' ({config.model_type}) lacks weights of its vision model: "
                         f"missing {sorted(info['missing_keys'])[:5]}, mismatched {list(info['mismatched_keys'])[:5]}; "
                         "check --model.vision_tower")
    return model


@contextmanager
def eager_attention(model: PreTrainedModel, enabled: bool = True):
    """Run ``model`` with eager attention inside the block (fused kernels return no attention weights), then
    restore the implementation it had."""
    if not enabled:
        yield
        return
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def load_llm(path: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """An HF causal LM (Qwen2 by default) from a local folder."""
    p = _local_dir(path, "LLM", "--model.llm")
    return AutoModelForCausalLM.from_pretrained(p, dtype=dtype, local_files_only=True)
