"""Loading the vision tower and the LLM from local folders (the tokenizer and image processor:
:mod:`datamodules.loading`).

Every loader goes through the Hugging Face ``from_pretrained(local_path)`` path, so the tiny backbones written by
``lit_bvllm make-tiny`` and a real checkpoint (Qwen2-7B-Instruct, CLIP, SigLIP) load the same way. The one exception
is an InstructBLIP checkpoint (B-VLLM's EVA ViT-g tower): only its vision model's tensors are read, with
:func:`read_safetensors`, never the language model beside them. Nothing here reaches a model hub: a path that is
not a local folder is an error, not a download.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedModel

from datamodules.loading import VIDEO_TOKEN, load_image_processor, load_tokenizer, local_dir

__all__ = ["VIDEO_TOKEN", "eager_attention", "load_image_processor", "load_llm", "load_tokenizer", "load_vision_tower",
           "read_safetensors"]

VISION_PREFIX = "vision_model."
"""Where InstructBLIP's ``save_pretrained`` puts its vision model's tensors (beside ``qformer.*``, ``query_tokens``,
``language_projection.*`` and ``language_model.*``)."""


def load_vision_tower(path: str | Path, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """An HF vision model (CLIP / SigLIP / InstructBLIP's EVA ViT-g vision tower) from a local folder.

    A full CLIP checkpoint (text + vision) loads its vision half; a vision-only folder loads as is; an InstructBLIP
    checkpoint (config ``model_type`` "instructblip") loads its ``InstructBlipVisionModel`` from its
    ``vision_model.*`` tensors alone (:func:`_instructblip_vision`).
    """
    p = local_dir(path, "vision tower", "--model.vision_tower")
    config = AutoConfig.from_pretrained(p, local_files_only=True)
    if config.model_type == "instructblip":
        return _instructblip_vision(p, config, dtype)
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


def _instructblip_vision(path: Path, config, dtype: torch.dtype | None) -> PreTrainedModel:
    """The ``InstructBlipVisionModel`` of an InstructBLIP folder, from its ``vision_model.*`` tensors only.

    ``from_pretrained`` would build the whole model, the 7B language model included; here the vision model is
    built on the meta device and takes the folder's tensors as they are read (cast to ``dtype``, default float32).
    Every tensor must be there with its shape: a folder holding only the Q-Former's part (what a reducer's
    ``qformer:`` reads) is refused as a tower.
    """
    from transformers import InstructBlipVisionModel

    read = read_safetensors(path, lambda k: k.startswith(VISION_PREFIX))
    state = {k[len(VISION_PREFIX) :]: v for k, v in read.items()}
    with torch.device("meta"):
        model = InstructBlipVisionModel(config.vision_config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    mismatched = [f"{VISION_PREFIX}{k} {tuple(state[k].shape)}, config {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    unexpected = sorted(set(state) - set(expected))
    if missing or mismatched or unexpected:
        # a Q-Former-only folder holds no vision tensor but the LayerNorm before the Q-Former (post_layernorm)
        qformer_only = not set(state) - {"post_layernorm.weight", "post_layernorm.bias"}
        hint = (" (a Q-Former-only folder: it serves --model.reducer.init_args.qformer, not as a tower)"
                if qformer_only else "")
        found = [f"{what} {len(keys)} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})" for what, keys in
                 (("missing", [VISION_PREFIX + k for k in missing]), ("mis-shaped", mismatched),
                  ("unexpected", [VISION_PREFIX + k for k in unexpected])) if keys]
        raise ValueError(f"vision tower '{path}' (instructblip) lacks the weights of its vision model: "
                         f"{'; '.join(found)}{hint}; set --model.vision_tower to a full InstructBLIP checkpoint folder "
                         "(save_pretrained layout)")
    dtype = dtype or torch.get_default_dtype()
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    return model.eval()


def read_safetensors(path: str | Path, keep: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """The tensors of a ``save_pretrained`` folder whose names ``keep`` accepts, read one by one with safetensors'
    ``safe_open``: the others (an InstructBLIP folder's language model) are never read. With a shard index
    (``model.safetensors.index.json``) only the shards holding a wanted tensor are opened."""
    from safetensors import safe_open

    p = Path(path)
    index = p / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({p / f for k, f in weight_map.items() if keep(k)})
    else:
        files = sorted(p.glob("*.safetensors"))
    state = {}
    for f in files:
        with safe_open(str(f), "pt") as sf:
            for k in sf.keys():
                if keep(k):
                    state[k] = sf.get_tensor(k)
    return state


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
