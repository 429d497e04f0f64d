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

from typing import Any

from torch import nn
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from lit_bvllm.model import VideoLLM

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
    """The layer classes of the LLM of the :class:`~lit_bvllm.model.VideoLLM` inside ``root``: the layers that run
    exactly once per step on every rank. Every stack's when ``root`` holds no such model."""
    for module in root.modules():
        if isinstance(module, VideoLLM):
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
