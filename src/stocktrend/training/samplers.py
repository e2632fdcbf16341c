"""The orders in which a training epoch visits a split's windows, besides a DataLoader's own:
``EpochOrder`` (a DataLoader's shuffle, or a DistributedSampler's shard, as indices for
device-resident batches) and ``BudgetSampler`` (an epoch of a fixed number of windows drawn
from this process's shard, without listing the others). Date batches have theirs in
``training.date_batches``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class EpochOrder:
    """The row order of one epoch, as the DataLoader it replaces would draw it.

    One process: a DataLoader(shuffle=True) with a generator seeded once, which each epoch
    draws one number (its workers' base seed), the epoch's permutation, and one more
    permutation (RandomSampler's, for the num_samples % n = 0 rows left over): the same order,
    epoch after epoch, as today's loader. Sharded (``world_size`` given, as Lightning's DDP would inject a
    DistributedSampler): permutation seeded by seed + epoch, padded by repeating its start to a
    multiple of the world size, every world_size-th row from ``rank``. Lightning calls
    ``set_epoch`` through the loader's ``sampler`` attribute.
    """

    def __init__(self, n: int, shuffle: bool, seed: int, rank: int = 0, world_size: int | None = None):
        if world_size is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.n, self.shuffle, self.seed, self.rank, self.world_size = n, shuffle, seed, rank, world_size
        self.epoch = 0
        self._generator = torch.Generator().manual_seed(seed) if shuffle and world_size is None else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n if self.world_size is None else math.ceil(self.n / self.world_size)

    def indices(self) -> torch.Tensor:
        if self.world_size is None:
            if not self.shuffle:
                return torch.arange(self.n)
            torch.empty((), dtype=torch.int64).random_(generator=self._generator)  # the DataLoader's base seed
            order = torch.randperm(self.n, generator=self._generator)
            torch.randperm(self.n, generator=self._generator)  # RandomSampler's empty remainder
            return order
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        total = len(self) * self.world_size
        if total > self.n:  # pad with the order's own start, as DistributedSampler does
            order = torch.cat([order, order.repeat(math.ceil((total - self.n) / self.n))[: total - self.n]])
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())


class BudgetSampler(DistributedSampler):
    """An epoch of at most ``budget`` windows, drawn afresh each epoch without replacement from
    this process's shard (every ``world_size``-th window from ``rank``, the last ones wrapped
    so every shard has the same size, as DistributedSampler pads).

    Memory grows with the budget, not the dataset: RandomSampler and DistributedSampler list a
    permutation of every window as Python ints each epoch, in each process (some 1 GiB per
    worker at 16.6 million windows), only for the trainer to stop after the budget. A
    DistributedSampler to Lightning, so its DDP strategies leave it in place rather than wrap
    it (which would list it again); ``set_epoch`` is DistributedSampler's."""

    def __init__(self, n: int, budget: int, seed: int, rank: int = 0, world_size: int = 1):
        # Not DistributedSampler.__init__: it wants a dataset, and a process group unless told both.
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.n, self.seed, self.rank, self.num_replicas, self.epoch = n, seed, rank, world_size, 0
        self.shard = math.ceil(n / world_size)
        self.num_samples = min(budget, self.shard)
        self.shuffle, self.drop_last = True, False

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        picks = rng.choice(self.shard, self.num_samples, replace=False)  # Floyd's draw when the budget is small
        return iter(((self.rank + self.num_replicas * picks) % self.n).tolist())
