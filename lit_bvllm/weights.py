"""Reading checkpoints safely, and the trained visual part (reducer + projector) they carry between stages.

- :func:`read_checkpoint` loads a checkpoint with ``torch.load(weights_only=True)``: a pickle that would run code
  (or any object that is not tensors and plain containers) is refused, and a corrupt or foreign file is named with
  the flag that passed it. Every checkpoint the suite reads goes through it.
- :func:`load_visual_weights` starts a model from every reducer and projector tensor of an earlier stage, and
  :func:`check_visual` refuses a source where any is missing or mis-shaped: no silent re-initialisation.

No Lightning here: an export loads without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

VISUAL_PREFIXES = ("reducer.", "projector.")
"""The trained visual part: what a stage hands to the next and what an export's ``visual.safetensors`` holds."""


def read_checkpoint(path: str | os.PathLike, flag: str) -> dict:
    """A checkpoint file's contents, loaded with ``weights_only=True``.

    Raises ``FileNotFoundError`` (no file) or ``ValueError`` (unreadable, corrupt, or holding objects that only an
    unsafe load would build), naming ``path`` and ``flag``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{flag} '{path}' does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError, RuntimeError (zip), EOFError, ...: all mean "not ours"
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"{flag} '{path}' is not a checkpoint this suite can read safely ({type(err).__name__}: {first[:300]}). "
            "Checkpoints load with weights_only=True, so a file holding anything but tensors and plain containers is "
            "refused (it could run code); pass a checkpoint written by lit_bvllm fit."
        ) from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{flag} '{path}' holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def visual_state(path: str | os.PathLike, flag: str = "--model.init_from") -> dict[str, torch.Tensor]:
    """Reducer and projector tensors of a Lightning checkpoint file (keys under ``model.``) or an exported folder,
    named as in :class:`~lit_bvllm.model.VideoLLM`."""
    path = Path(path)
    if path.is_dir():
        from safetensors.torch import load_file

        if not (path / "visual.safetensors").is_file():
            raise FileNotFoundError(f"{flag} '{path}' is a folder without visual.safetensors (not a lit_bvllm export)")
        return load_file(str(path / "visual.safetensors"))
    state = read_checkpoint(path, flag).get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"{flag} '{path}' has no state_dict: not a checkpoint written by lit_bvllm fit")
    return {k.removeprefix("model."): v for k, v in state.items()
            if k.removeprefix("model.").startswith(VISUAL_PREFIXES)}


def check_tensors(own: dict[str, torch.Tensor], src: dict[str, torch.Tensor], required: set[str],
                  prefixes: tuple[str, ...], source: str, what: str) -> None:
    """Raise ``ValueError`` naming the tensors if ``src`` lacks one of ``required`` (keys of ``own``), has one of
    another shape, or holds a tensor under ``prefixes`` that ``own`` does not (a different reducer configuration).
    Checkpoints hold only some tensors, so loading is not strict: this is what keeps a missing one from silently
    staying as initialised."""
    missing = sorted(required - set(src))
    shapes = sorted(k for k in required & set(src) if own[k].shape != src[k].shape)
    extra = sorted(k for k in src if k.startswith(prefixes) and k not in own)
    if missing or shapes or extra:
        raise ValueError(
            f"{source} {what}: missing {missing[:8]} ({len(missing)} in all), unexpected {extra[:8]}, shape mismatch "
            f"{shapes[:8]}. Use the config of the run that wrote it (its config.yaml)."
        )


def check_visual(own: dict[str, torch.Tensor], src: dict[str, torch.Tensor], source: str,
                 unused: set[str] = frozenset()) -> None:
    """:func:`check_tensors` over the reducer and projector tensors; ``unused`` (:func:`unused_names`) may be
    missing."""
    required = {k for k in own if k.startswith(VISUAL_PREFIXES)} - set(unused)
    check_tensors(own, src, required, VISUAL_PREFIXES, source, "does not match this model's reducer/projector")


def unused_names(model: nn.Module) -> set[str]:
    """Names of the parameters no output reads (flagged ``unused_output`` by their module, e.g. the text feed-forward
    of a Q-Former's last layer; frozen): a checkpoint may leave them out (DeepSpeed's ``exclude_frozen_parameters``
    does), and they keep their initial values, which change nothing."""
    return {n for n, p in model.named_parameters() if getattr(p, "unused_output", False)}


def load_visual_weights(model: nn.Module, path: str | os.PathLike, flag: str = "--model.init_from") -> int:
    """Copy every ``reducer.*`` and ``projector.*`` tensor of ``path`` into ``model`` (a
    :class:`~lit_bvllm.model.VideoLLM`); returns how many. Refuses a mismatch (:func:`check_visual`)."""
    src = visual_state(path, flag)
    check_visual(model.state_dict(), src, f"{flag} '{path}'", unused_names(model))
    model.load_state_dict(src, strict=False)
    return len(src)
