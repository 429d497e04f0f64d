"""The FSDP2 strategy of ``experiments/strategies/fsdp.yaml`` (:class:`ShardedStrategy`): sharded checkpoints written
whole or not at all, and read back with only the tensors ``VideoLLMModule`` saves; its wrapping:
:mod:`lit_bvllm.training.wrapping`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from datamodules.io import remove, replace_folder
from lit_bvllm.training.wrapping import clean_name


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
