"""The data side's half of the backbones: the LLM's tokenizer and the vision tower's image processor, from local
folders.

Every loader goes through the Hugging Face ``from_pretrained(local_path)`` path, so the tiny backbones written by
``lit_bvllm make-tiny`` and a real checkpoint (Qwen2-7B-Instruct, CLIP, SigLIP) load the same way. Nothing here
reaches a model hub: a path that is not a local folder is an error, not a download.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transformers import AutoImageProcessor, AutoTokenizer, PreTrainedTokenizerBase

from datamodules.conversation import VIDEO_TOKEN

log = logging.getLogger(__name__)



def local_dir(path: str | Path, what: str, flag: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(
            f"{what} folder '{p}' does not exist. lit_bvllm only loads local checkpoints (no hub downloads): "
            f"set {flag} to a folder written by `save_pretrained`, or run `lit_bvllm make-tiny --out DIR`."
        )
    return p


def load_tokenizer(path: str | Path, video_token: str | None = VIDEO_TOKEN,
                   flag: str = "--model.llm") -> PreTrainedTokenizerBase:
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
    return AutoImageProcessor.from_pretrained(local_dir(path, "vision tower", "--model.vision_tower"),
                                              local_files_only=True)


def _core_share(processes_per_node: int) -> int:
    """The CPU cores this process may count on: the ones it is bound to (``srun --cpus-per-task``, a container) or,
    when it may run on every core of the node, its share beside the node's other training processes."""
    total = os.cpu_count() or 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    return cores if cores < total else max(1, cores // max(1, processes_per_node))


def worker_count(requested: int | str, processes_per_node: int = 1, flag: str = "--data.num_workers") -> int:
    """DataLoader worker processes: ``requested`` as it is, or for ``"auto"`` the CPU cores this process may run on,
    less one for the process itself, at most 8 (decoding at 1 fps saturates well before)."""
    if requested == "auto":
        return max(0, min(8, _core_share(processes_per_node) - 1))
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise ValueError(f"{flag} must be a count >= 0 or 'auto', got {requested!r}")
    return requested


def processes_on_node(trainer=None) -> int:
    """The training processes ``trainer`` runs on this node (they share its cores); 1 without a trainer."""
    return getattr(trainer, "num_devices", 1) if trainer is not None else 1


def share_cores(requested: int | str, trainer) -> None:
    """The thread policy, applied once per process where ``trainer`` starts (a data module's ``setup`` under a
    trainer; never in a loader factory): this process keeps the cores its DataLoader workers leave
    (:func:`leave_cores_to_workers`)."""
    processes = processes_on_node(trainer)
    leave_cores_to_workers(worker_count(requested, processes), processes)


THREADS_CHOSEN = "LIT_BVLLM_THREADS_CHOSEN"
"""Set once per command (``record_thread_choice``, at ``lit_bvllm``'s start, inherited by the processes Lightning
starts): "1" when ``OMP_NUM_THREADS`` came from the user or their launcher, "0" when it did not."""


def record_thread_choice() -> None:
    """Remember whether the thread count was chosen before Lightning's launchers set ``OMP_NUM_THREADS`` themselves
    (cores // processes for every process they start, before any loader exists)."""
    os.environ.setdefault(THREADS_CHOSEN, "1" if "OMP_NUM_THREADS" in os.environ else "0")


def leave_cores_to_workers(workers: int, processes_per_node: int = 1) -> None:
    """Lower this process's intra-op threads to the cores its ``workers`` leave free (at least 1).

    torch starts with a thread per core (Lightning's launchers: cores // processes); next to DataLoader workers
    decoding video, those threads and the decoders fight for the same cores, and OpenMP threads that wait on a busy
    core stall every op (measured on the demo's 2 cores: benchmarks/RESULTS.md, "Where a training step of the demo
    goes"). A thread count the user (or torchrun, which sets 1 for several processes per node)
    chose with ``OMP_NUM_THREADS`` is left as it is."""
    chosen = os.environ.get(THREADS_CHOSEN)
    if workers <= 0 or (chosen == "1" if chosen is not None else "OMP_NUM_THREADS" in os.environ):
        return
    import torch

    threads = max(1, _core_share(processes_per_node) - workers)
    if threads < torch.get_num_threads():
        log.info("torch intra-op threads %d -> %d: %d DataLoader worker(s) decode on the other cores "
                 "(set OMP_NUM_THREADS to choose)", torch.get_num_threads(), threads, workers)
        torch.set_num_threads(threads)
