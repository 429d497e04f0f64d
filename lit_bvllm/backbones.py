"""Loading the vision tower and the LLM from local folders (the tokenizer and image processor: :mod:`datamodules.loading`).

Every loader goes through the Hugging Face ``from_pretrained(local_path)`` path, so the tiny backbones written by
``lit_bvllm make-tiny`` and a real checkpoint (Qwen2-7B-Instruct, CLIP, SigLIP) load the same way. Nothing here
reaches a model hub: a path that is not a local folder is an error, not a download.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedModel

from datamodules.loading import VIDEO_TOKEN, load_image_processor, load_tokenizer, local_dir

__all__ = ["VIDEO_TOKEN", "eager_attention", "load_image_processor", "load_llm", "load_tokenizer", "load_vision_tower"]


def load_vision_tower(path: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """An HF vision model (CLIP / SigLIP vision tower) from a local folder.

    A full CLIP checkpoint (text + vision) loads its vision half; a vision-only folder loads as is.
    """
    p = local_dir(path, "vision tower", "--model.vision_tower")
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
    p = local_dir(path, "LLM", "--model.llm")
    return AutoModelForCausalLM.from_pretrained(p, dtype=dtype, local_files_only=True)
