"""``ResumableSampler``: a seeded, per-epoch shuffle sharded across ranks that can start mid-epoch.

Lightning restores the step, optimizer and scheduler from a checkpoint but restarts a plain DataLoader at the
beginning of its epoch. This sampler's order depends only on (seed, epoch, rank), so after a resume it skips the
samples the interrupted epoch had already consumed and the run continues on the data it had not seen yet.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Indices ``0..n-1``: shuffled per epoch with ``seed``, strided over ``num_replicas`` ranks, padded to equal
    length.

    Args:
        n: dataset size.
        shuffle: shuffle each epoch (a fresh permutation of ``torch.Generator().manual_seed(seed + epoch)``).
        seed: base seed.
        rank: this process's rank.
        num_replicas: number of ranks.
    """

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, rank: int = 0, num_replicas: int = 1):
        self.n, self.shuffle, self.seed, self.rank, self.num_replicas = n, shuffle, seed, rank, num_replicas
        self.epoch = 0
        self.skip = 0  # samples of the current epoch to skip once (set when resuming)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0  # a resume offset only applies to the epoch it was saved in
        self.epoch = epoch

    def resume(self, epoch: int, samples: int) -> None:
        """Continue epoch ``epoch`` after its first ``samples`` samples (per rank)."""
        self.epoch, self.skip = epoch, samples

    def _indices(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.n))
        per_rank = -(-self.n // self.num_replicas)
        order += order[: per_rank * self.num_replicas - self.n]  # pad so every rank gets the same count
        return order[self.rank :: self.num_replicas]

    def __iter__(self):
        indices = self._indices()[self.skip :]
        self.skip = 0
        return iter(indices)

    def __len__(self) -> int:
        # the whole epoch: Lightning keeps counting a resumed epoch's batches from where it stopped
        return -(-self.n // self.num_replicas)
