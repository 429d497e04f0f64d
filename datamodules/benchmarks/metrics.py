"""Metric states every benchmark shares (:class:`ItemScores`) and the means its aggregates are made of.

Per item, the model's output becomes one update of :class:`ItemScores`, a torchmetrics metric whose states are
vectors indexed by the item's position in the benchmark. Summed over ranks, they show every item scored exactly
once (``duplicates`` and ``missing`` are counted, not assumed), and every aggregate is computed from them.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor
from torchmetrics import Metric


class ItemScores(Metric):
    """Per-item sums, synced by summing over ranks: ``seen``, ``correct``, ``parsed``, ``error`` ``(N,)`` and
    ``values`` ``(N, V)`` (open-ended metrics)."""

    full_state_update = False

    def __init__(self, num_items: int, num_values: int = 0):
        super().__init__()
        for name in ("seen", "correct", "parsed", "error"):
            self.add_state(name, torch.zeros(num_items, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("values", torch.zeros(num_items, num_values, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, index: Tensor, correct: Tensor, parsed: Tensor, error: Tensor,
               values: Tensor | None = None) -> None:
        index = index.to(self.seen.device)
        for state, v in ((self.seen, torch.ones_like(correct)), (self.correct, correct), (self.parsed, parsed),
                         (self.error, error)):
            state.index_add_(0, index, v.to(state))
        if values is not None and values.numel():
            self.values.index_add_(0, index, values.to(self.values))

    def compute(self) -> dict[str, Tensor]:
        return {"seen": self.seen, "correct": self.correct, "parsed": self.parsed, "error": self.error,
                "values": self.values}


def mean(x: Tensor) -> float:
    """The mean of ``x`` in float64; 0.0 for no values."""
    return float(x.double().mean()) if x.numel() else 0.0


def mean_per(values: Tensor, known: Tensor, keys: list[str]) -> dict[str, float]:
    """Mean of ``values`` over the ``known`` items, per key (category, duration, ...), keys sorted."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        if known[i]:
            groups[key].append(i)
    return {k: mean(values[torch.tensor(ix)]) for k, ix in sorted(groups.items())}
