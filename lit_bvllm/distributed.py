"""What the sharding strategies need to know about the model, found in the loaded model rather than named in a config.

``experiments/strategies/fsdp.yaml`` shards with FSDP2 (``torch.distributed.fsdp.fully_shard``, Lightning's
``ModelParallelStrategy``): :func:`shard` gives every layer of the LLM, the tower and the reducer its own unit,
called from ``VideoLLMModule.configure_model``. FSDP2 shards parameter by parameter (DTensor), so a frozen layer
and the trainable LoRA tensors inside it share a unit without flattening them together, which is what a frozen
LLM with LoRA needs; its sharded checkpoints are torch.distributed.checkpoint folders; and it runs on CPU processes
too (FSDP1 refuses them), so the suite's tests shard, save, resume and consolidate for real.
:class:`ShardedStrategy` reads back the checkpoints ``VideoLLMModule`` writes (trainable and reducer/projector
tensors only). ``experiments/strategies/fsdp1.yaml`` keeps the FSDP1 path (``FSDPStrategy``) with the same layers
as its wrap policy (:class:`ModelLayers`).

``ModelLayers`` is the FSDP auto-wrap and activation-checkpointing policy of ``experiments/strategies/fsdp.yaml``:
one FSDP unit per repeated layer of every stack in the model: the LLM's decoder layers (``Qwen2DecoderLayer``, or
whatever the checkpoint's class is), the vision tower's encoder layers (``CLIPEncoderLayer``,
``SiglipEncoderLayer``, ...) and the reducer's Q-Former or TTM layers. The classes are read from the module FSDP
wraps, when it wraps it (``configure_model`` has loaded the checkpoints by then), so one config serves every
backbone. A frozen LLM or tower layer that holds trainable LoRA tensors shares its unit with them: the config
sets ``use_orig_params`` for that.

``clean_name``: a parameter's name without the wrappers' segments (``_fsdp_wrapped_module.``,
``_checkpoint_wrapped_module.``, ``_orig_mod.``), i.e. as the state dict names it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def clean_name(name: str) -> str:
    """``model.llm._fsdp_wrapped_module.layers.0...`` -> ``model.llm.layers.0...``: the name the state dict uses."""
    for segment in WRAPPER_SEGMENTS:
        name = name.replace(segment, "")
    return name


def layer_classes(root: nn.Module) -> set[type[nn.Module]]:
    """The layer classes of every stack in ``root``: the class of the entries of each outermost ``nn.ModuleList``
    whose entries share one class and hold parameters (a transformer's decoder or encoder layers, a Q-Former's
    layers, a TTM's blocks). Nothing inside a layer is looked at, so a layer is never split."""
    found: set[type[nn.Module]] = set()

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if (isinstance(child, nn.ModuleList) and len(child) > 0 and len({type(c) for c in child}) == 1
                    and any(True for _ in child.parameters())):
                found.add(type(child[0]))
            else:
                visit(child)

    visit(root)
    return found


class ModelLayers(ModuleWrapPolicy):
    """Wrap (or checkpoint) every module of the model's layer classes (:func:`layer_classes`), found at wrap time.

    FSDP calls ``_run_policy`` with the module it wraps; ``apply_activation_checkpointing`` calls the policy on
    each module top-down (``recurse=True`` first on the root), so the classes are read from the first module it
    is called on and kept for that module's tree.
    """

    def __init__(self):
        super().__init__(set())
        self._tree: set[int] = set()  # ids of the modules of the tree the classes were read from

    def _read(self, root: nn.Module) -> None:
        self._module_classes = layer_classes(root)
        self._module_classes_str = str(sorted(c.__name__ for c in self._module_classes))
        self._tree = {id(m) for m in root.modules()}

    def _run_policy(self, root_module: nn.Module, ignored_modules: set[nn.Module],
                    root_kwargs: dict[str, Any]) -> dict[nn.Module, dict[str, Any]]:
        self._read(root_module)
        return super()._run_policy(root_module, ignored_modules, root_kwargs)

    def __call__(self, module: nn.Module, recurse: bool, *args, **kwargs) -> bool:
        if id(module) not in self._tree:  # a new tree: its root
            self._read(module)
        return super().__call__(module, recurse, *args, **kwargs)


def checkpoint_layers(model: nn.Module) -> set[type[nn.Module]]:
    """Wrap every layer of :func:`layer_classes` in torch's activation-checkpoint wrapper (non-reentrant): its
    activations are recomputed in backward instead of kept. Returns the layer classes."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )

    classes = tuple(layer_classes(model))
    apply_activation_checkpointing(model, checkpoint_wrapper_fn=checkpoint_wrapper,
                                   check_fn=lambda m: isinstance(m, classes))
    return set(classes)


def shard(model: nn.Module, mesh, checkpointing: bool = False) -> set[type[nn.Module]]:
    """FSDP2 over ``mesh``: one unit per layer of :func:`layer_classes` (wrapped first in torch's activation-
    checkpoint wrapper when ``checkpointing``), and the rest (embeddings, projector, heads) in the root unit.
    Returns the layer classes."""
    from torch.distributed.fsdp import fully_shard

    classes = checkpoint_layers(model) if checkpointing else layer_classes(model)
    for module in [m for m in model.modules() if isinstance(m, tuple(classes))]:
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.sharded = True
    return classes


class ShardedStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` (FSDP2 data parallel) that resumes from the sharded checkpoints
    ``VideoLLMModule`` writes. Those hold the trainable and reducer/projector tensors only (the frozen backbones come
    back from their folders, already loaded when the checkpoint is read); the stock loader asks the checkpoint for
    every tensor of the model and fails on the first frozen one. This one reads the tensors the checkpoint has,
    refuses it when a tensor this model needs is not among them (``VideoLLMModule.check_state``), and restores the
    optimizer and the metadata as the stock loader does.

    Args:
        data_parallel_size: processes that shard the model among them; ``"auto"``: every process of the run (the
            stock strategy's ``"auto"`` is the number of nodes, meant for tensor parallelism within a node).
        tensor_parallel_size: 1; the suite applies no tensor parallelism.
        save_distributed_checkpoint: sharded checkpoints (a folder, one file per rank); False: one file, gathered
            on rank 0.
    """

    def __init__(self, data_parallel_size: int | str = "auto", tensor_parallel_size: int = 1,
                 save_distributed_checkpoint: bool = True, **kwargs):
        if tensor_parallel_size != 1:
            raise ValueError("--trainer.strategy.tensor_parallel_size must be 1: the suite shards data-parallel only")
        super().__init__(data_parallel_size, 1, save_distributed_checkpoint, **kwargs)

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        """Every rank writes its shard into ``<path>.tmp``; once all have, rank 0 puts the folder in the place of
        the previous checkpoint (a rename), so a crash while writing leaves that one whole."""
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(str(filepath)))
        tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
        if self.global_rank == 0:
            _remove(tmp)
        self.barrier("sharded_checkpoint_tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        self.barrier("sharded_checkpoint_written")
        if self.global_rank == 0:
            _remove(old)
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        self.barrier("sharded_checkpoint_in_place")

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        from lightning.fabric.strategies.model_parallel import _is_sharded_checkpoint
        from lightning.fabric.utilities.load import _METADATA_FILENAME
        from torch.distributed.checkpoint import FileSystemReader, load
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        path = Path(self.broadcast(checkpoint_path))
        if not _is_sharded_checkpoint(path):
            return super().load_checkpoint(checkpoint_path, weights_only)
        stored = {k.split(".", 1)[1] for k in FileSystemReader(path).read_metadata().state_dict_metadata
                  if k.startswith("state_dict.")}
        own = get_model_state_dict(self.model)
        self.lightning_module.check_state({k: own.get(k) for k in stored}, f"--ckpt_path '{path}'")  # names only
        state = {"state_dict": {k: v for k, v in own.items() if k in stored}}
        load(state, checkpoint_id=path)
        self.model.load_state_dict(state["state_dict"], strict=False)
        for i, optimizer in enumerate(self.optimizers):
            optim = {f"optimizer_{i}": get_optimizer_state_dict(self.model, optimizer)}
            load(optim, checkpoint_id=path)
            set_optimizer_state_dict(self.model, optimizer, optim_state_dict=optim[f"optimizer_{i}"],
                                     options=StateDictOptions(cpu_offload=True))
        return torch.load(path / _METADATA_FILENAME, weights_only=True if weights_only is None else weights_only)


def consolidate(ckpt_path: str, out: str | None = None) -> str:
    """Gather a sharded checkpoint (a ``ShardedStrategy`` folder) into one file that loads like any other checkpoint
    (``--ckpt_path``, ``lit_bvllm export``, ``torch.load(..., weights_only=True)``), on one process, without the
    model. Lightning's ``consolidate_checkpoint`` utility reads FSDP1's layout (``model``), not this one
    (``state_dict``).

    Args:
        ckpt_path: the sharded checkpoint folder (``runs/<name>/<version>/checkpoints/last.ckpt``).
        out: the file to write (default: ``<ckpt_path>.consolidated``).
    Returns:
        the written file's path.
    """
    import re

    from lightning.fabric.utilities.load import _load_distributed_checkpoint

    path = Path(ckpt_path)
    if not (path.is_dir() and (path / ".metadata").is_file()):
        raise ValueError(f"--ckpt_path '{path}' is not a sharded checkpoint folder (no .metadata in it): a single-file "
                         "checkpoint needs no consolidation")
    checkpoint = _load_distributed_checkpoint(path)
    optimizers = sorted((k for k in checkpoint if re.fullmatch(r"optimizer_\d+", k)), key=lambda k: int(k.split("_")[1]))
    if optimizers:
        checkpoint["optimizer_states"] = [checkpoint.pop(k) for k in optimizers]
    target = Path(out) if out else path.with_name(path.name + ".consolidated")
    torch.save(checkpoint, target)
    print(f"{len(checkpoint.get('state_dict', {}))} tensors of {path} -> {target}")
    return str(target)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
