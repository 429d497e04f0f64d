"""The data side's half of the backbones: the LLM's tokenizer and the vision tower's image processor, from local
folders.

Every loader goes through the Hugging Face ``from_pretrained(local_path)`` path, so the tiny backbones written by
``lit_bvllm make-tiny`` and a real checkpoint (Qwen2-7B-Instruct, CLIP, SigLIP) load the same way. Nothing here
reaches a model hub: a path that is not a local folder is an error, not a download.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import AutoImageProcessor, AutoTokenizer, PreTrainedTokenizerBase

VIDEO_TOKEN = "<video>"
"""The placeholder the suite splices visual tokens at. Media tags in annotations (``<video>``, ``<image>``) map to it."""


def local_dir(path: str | Path, what: str, flag: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"{what} folder '{p}' does not exist. lit_bvllm only loads local checkpoints (no hub downloads): "
            f"set {flag} to a folder written by `save_pretrained`, or run `lit_bvllm make-tiny --out DIR`."
        )
    return p


def load_tokenizer(path: str | Path, video_token: str | None = VIDEO_TOKEN, flag: str = "--model.llm") -> PreTrainedTokenizerBase:
    """Load the LLM's tokenizer from a local folder and make sure it has the video placeholder and a pad token.

    A real checkpoint's tokenizer (Qwen2) does not know ``video_token``; it is added as a special token, so
    ``len(tokenizer)`` grows by one and the model must resize its embeddings to ``len(tokenizer)``.
    ``video_token=None`` loads the tokenizer as it is (e.g. BERT's, for a Q-Former's question input).
    """
    tok = AutoTokenizer.from_pretrained(local_dir(path, "tokenizer", flag), local_files_only=True)
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
    return AutoImageProcessor.from_pretrained(local_dir(path, "vision tower", "--model.vision_tower"), local_files_only=True)


def worker_count(requested: int | str, processes_per_node: int = 1, flag: str = "--data.num_workers") -> int:
    """DataLoader worker processes: ``requested`` as it is, or for ``"auto"`` the CPU cores this process may run on,
    less one for the process itself, at most 8 (decoding at 1 fps saturates well before). A process bound to its
    own cores (``srun --cpus-per-task``, a container) has them to itself; one that may run on every core of the
    node shares them with the node's other ``processes_per_node`` training processes."""
    if requested == "auto":
        total = os.cpu_count() or 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
        share = cores if cores < total else cores // max(1, processes_per_node)
        return max(0, min(8, share - 1))
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ValueError(f"{flag} must be a count >= 0 or 'auto', got {requested!r}")
    return requested
