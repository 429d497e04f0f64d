"""The peak of live tensor bytes over a piece of code, for the benchmarks (CPU or GPU alike).

``torch.distributed._tools.mem_tracker.MemTracker`` sees every tensor the code allocates (a ``TorchDispatchMode``)
and those handed to it up front (the model, its optimizer, the inputs). As shipped it installs a gradient hook on
every parameter of every module it enters, which a frozen parameter refuses (``requires_grad=False``: the vision
tower, the LLM under LoRA); here no such hooks are installed, so gradients count as the tensors they are (their
category reads "temp") and the total is unchanged. A top-level module may run twice (``_FrozenSafeTracker``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributed._tools.mem_tracker import MemTracker

MIB = 2**20


class _FrozenSafeTracker(MemTracker):
    def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
        return super()._track_module_params_and_buffers(module, install_grad_hooks=False)

    def _pre_fw_hook(self, module, inputs):
        """A top-level module called twice in one measured call (the vision tower's two evaluation passes) reads
        to MemTracker as a second iteration, which it refuses; the per-module stats start afresh instead (the peak
        over every allocation, which is what is reported, is kept)."""
        try:
            super()._pre_fw_hook(module, inputs)
        except NotImplementedError:
            self.reset_mod_stats()
            super()._pre_fw_hook(module, inputs)


def peak_memory(fn: Callable[[], object], *external, device: str = "cpu") -> tuple[object, dict[str, float]]:
    """Run ``fn()``; return its result and the peak on ``device`` (its type: cpu, cuda) in MiB: ``{"total": ...,
    <category>: ...}`` at the peak.

    ``external``: modules, optimizers and tensors made before ``fn`` runs that belong to the count (parameters,
    optimizer state, inputs)."""
    tracker = _FrozenSafeTracker()
    tracker.track_external(*external)
    with tracker:
        out = fn()
    kind = torch.device(device).type
    snap = next((v for k, v in tracker.get_tracker_snapshot("peak").items() if torch.device(k).type == kind), {})
    peak = {"total": snap.get("Total", 0) / MIB}
    peak.update({str(k).split(".")[-1].lower(): v / MIB for k, v in snap.items() if k != "Total" and v})
    return out, peak


def tensors(batch: dict) -> list[torch.Tensor]:
    return [v for v in batch.values() if isinstance(v, torch.Tensor)]
