"""What the sharding strategies need to know about the model, found in the loaded model rather than named in a config.

``experiments/strategies/fsdp.yaml`` shards with FSDP2 (``torch.distributed.fsdp.fully_shard``, Lightning's
``ModelParallelStrategy``), from ``VideoLLMModule.configure_model`` (:func:`shard`): one unit per decoder layer of
the LLM, its class read from the loaded model (``Qwen2DecoderLayer``, or whatever the checkpoint's is), the
reducer, projector and embeddings in the root unit, and the frozen vision tower replicated (left out of FSDP).
A unit gathers its parameters from every rank each time it runs, so every rank must run it equally often. The
LLM's layers run once per step everywhere; the tower runs once per chunk of 64 frames, a count that differs from
rank to rank, and a batch of images or text alone skips the reducer: as units of their own they would pair one
rank's gather with another's and hang. FSDP2 shards parameter by parameter (DTensor), so a frozen LLM layer and the
LoRA tensors inside it share a unit as they are; its sharded checkpoints are torch.distributed.checkpoint folders;
and it runs on CPU processes too (FSDP1 refuses them), so the suite's tests shard, save, resume and consolidate for
real. :class:`ShardedStrategy` reads back the checkpoints ``VideoLLMModule`` writes (trainable and
reducer/projector tensors only). Activation checkpointing wraps every layer of every stack (:func:`layer_classes`):
the LLM's, the reducer's Q-Former / TTM, the tower's.

``experiments/strategies/fsdp1.yaml`` keeps the FSDP1 path (``FSDPStrategy``) with :class:`ModelLayers` as its wrap
policy (the LLM's decoder layers, for the same reason) and checkpointing policy (every stack's layers).

``clean_name``: a parameter's name without the wrappers' segments (``_fsdp_wrapped_module.``,
``_checkpoint_wrapped_module.``, ``_orig_mod.``), i.e. as the state dict names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from datamodules.io import atomic_file, remove, replace_folder

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


def llm_layer_classes(root: nn.Module) -> set[type[nn.Module]]:
    """The layer classes of the LLM inside ``root`` (the module with a ``llm`` beside a ``vision``: a
    :class:`~lit_bvllm.model.VideoLLM`): the layers that run exactly once per step on every rank. Every stack's when
    ``root`` holds no such model."""
    for module in root.modules():
        if isinstance(getattr(module, "llm", None), nn.Module) and hasattr(module, "vision"):
            return layer_classes(module.llm)
    return layer_classes(root)


class ModelLayers(ModuleWrapPolicy):
    """Wrap (or checkpoint) every module of the model's layer classes, found at wrap time: the LLM's
    (:func:`llm_layer_classes`, ``units: llm``: FSDP units) or every stack's (:func:`layer_classes`, ``units: all``:
    activation checkpointing).

    FSDP calls ``_run_policy`` with the module it wraps; ``apply_activation_checkpointing`` calls the policy on
    each module top-down (``recurse=True`` first on the root), so the classes are read from the first module it
    is called on and kept for that module's tree.
    """

    def __init__(self, units: str = "llm"):
        if units not in ("llm", "all"):
            raise ValueError(f"ModelLayers: units must be 'llm' or 'all', got {units!r}")
        super().__init__(set())
        self.units = units
        self._tree: set[int] = set()  # ids of the modules of the tree the classes were read from

    def _read(self, root: nn.Module) -> None:
        self._module_classes = llm_layer_classes(root) if self.units == "llm" else layer_classes(root)
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
    """FSDP2 over ``mesh`` of a :class:`~lit_bvllm.model.VideoLLM`: one unit per LLM layer
    (:func:`llm_layer_classes`), the reducer, projector and embeddings in the root unit, the frozen tower replicated
    (see the module docstring for why); with ``checkpointing``, every stack's layers in torch's activation-checkpoint
    wrapper first. Returns the classes given a unit each."""
    from torch.distributed.fsdp import fully_shard

    if checkpointing:
        checkpoint_layers(model)
    classes = tuple(llm_layer_classes(model))
    for module in [m for m in model.llm.modules() if isinstance(m, classes)]:
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh, ignored_params=set(model.vision.parameters()))
    return set(classes)


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
        tmp = path.with_name(path.name + ".tmp")
        if self.global_rank == 0:
            remove(tmp)
        self.barrier("sharded_checkpoint_tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        self.barrier("sharded_checkpoint_written")
        if self.global_rank == 0:
            replace_folder(tmp, path)
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
            return self._load_file(path, weights_only)
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

    def _load_file(self, path: Path, weights_only: bool | None) -> dict[str, Any]:
        """A single-file checkpoint (DDP's, ``lit_bvllm consolidate``'s) into the sharded model. The stock loader
        matches names through ``named_modules``, which keep the activation-checkpoint wrapper's segment the file's
        names lack, and with non-strict loading it skipped every tensor of a wrapped layer without a word; here the
        file is checked (``check_state``) and its tensors placed by their state-dict names."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        checkpoint = torch.load(path, map_location="cpu", weights_only=True if weights_only is None else weights_only)
        state = checkpoint.pop("state_dict", None)
        if not isinstance(state, dict):
            raise ValueError(f"--ckpt_path '{path}' has no state_dict: not a checkpoint written by lit_bvllm fit")
        self.lightning_module.check_state(state, f"--ckpt_path '{path}'")
        full = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(self.model, state, options=full)
        optimizers = checkpoint.pop("optimizer_states", [])
        for optimizer, optim_state in zip(self.optimizers, optimizers):
            set_optimizer_state_dict(self.model, optimizer, options=full,
                                     optim_state_dict=_by_name(optim_state, optimizer, self.model))
        return checkpoint


def _by_name(optim_state: dict, optimizer, model: nn.Module) -> dict:
    """An optimizer state keyed by parameter position (``Optimizer.state_dict()``, DDP's checkpoints) keyed by the
    parameters' state-dict names instead, as ``set_optimizer_state_dict`` reads a full one; as it is when it is
    keyed by name already (``lit_bvllm consolidate``'s)."""
    groups = optim_state.get("param_groups", [])
    if not groups or not all(isinstance(i, int) for g in groups for i in g["params"]):
        return optim_state
    names = {id(p): clean_name(n) for n, p in model.named_parameters()}
    position = {i: names[id(p)] for saved, live in zip(groups, optimizer.param_groups)
                for i, p in zip(saved["params"], live["params"])}
    return {"state": {position[i]: v for i, v in optim_state.get("state", {}).items() if i in position},
            "param_groups": [{**g, "params": [position[i] for i in g["params"]]} for g in groups]}


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
    optimizers = sorted((k for k in checkpoint if re.fullmatch(r"optimizer_\d+", k)),
                        key=lambda k: int(k.split("_")[1]))
    if optimizers:
        checkpoint["optimizer_states"] = [checkpoint.pop(k) for k in optimizers]
    target = Path(out) if out else path.with_name(path.name + ".consolidated")
    with atomic_file(target) as f:
        torch.save(checkpoint, f)
    print(f"{len(checkpoint.get('state_dict', {}))} tensors of {path} -> {target}")
    return str(target)


