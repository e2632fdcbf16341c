"""Training batches that are whole cross-sections: each batch the windows of one date (every
instrument's window ending that day, at most ``max_windows`` of them drawn at random), what a
cross-sectional objective (``loss.rank_ic_loss``) compares within.

A panel's training index is sorted by end date, then instrument, and oversampling appends its
copies after the originals (``data.fitting.oversample``), so a date's original windows are one
run of rows: the sampler keeps only where each run starts (a few thousand numbers), never a
list of the windows, and its memory does not grow with the universe. Copies are left out: a
window twice in one cross-section would count twice in its ranking. Each DDP process takes its
own shard of dates (every ``world_size``-th, from its rank) and draws its epoch from it afresh
each epoch; a date with a single window has no order to learn and is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from stocktrend.data.windows import cut_windows

BLOCK = 1 << 20  # index rows read at a time when finding the dates


def date_runs(end_rows: np.ndarray) -> np.ndarray:
    """Where each date's run of windows starts in a column of end rows sorted by date, and its
    length at the end (a memory-mapped column is read a block at a time)."""
    starts: list[int] = []
    previous = None
    for a in range(0, len(end_rows), BLOCK):
        rows = np.asarray(end_rows[a:a + BLOCK])
        step = np.diff(rows, prepend=rows[0] - 1 if previous is None else previous)  # the first row starts a run
        if (step < 0).any():
            raise ValueError(f"the training windows are not in date order at row {a + int(np.argmax(step < 0))}: "
                             "rebuild the dataset")
        starts += (a + np.flatnonzero(step)).tolist()
        previous = rows[-1]
    return np.asarray(starts + [len(end_rows)], np.int64)


class DateSampler(DistributedSampler):
    """Each epoch, ``budget`` dates of this process's shard (None: all of them), in a fresh
    random order; it yields each date's window rows (at most ``max_windows``, a random subset
    in row order). A DistributedSampler to Lightning, so DDP leaves it in place."""

    def __init__(self, runs: np.ndarray, max_windows: int, seed: int, budget: int | None = None, rank: int = 0,
                 world_size: int = 1):
        # Not DistributedSampler.__init__: it wants a dataset, and a process group unless told both.
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        sizes = np.diff(runs)
        kept = np.flatnonzero(sizes >= 2)
        if not len(kept):
            raise ValueError("no date has two or more training windows: a cross-section needs two instruments")
        self.starts, self.sizes = runs[:-1][kept], sizes[kept]
        self.max_windows, self.seed, self.rank, self.num_replicas = max(2, max_windows), seed, rank, world_size
        self.epoch = 0
        self.shard = math.ceil(len(kept) / world_size)  # the last dates wrapped, so every shard is this long
        self.num_samples = min(budget or self.shard, self.shard)
        self.shuffle, self.drop_last = True, False

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        picks = rng.choice(self.shard, self.num_samples, replace=False)
        for k in (self.rank + self.num_replicas * picks) % len(self.starts):
            start, size = int(self.starts[k]), int(self.sizes[k])
            if size <= self.max_windows:
                yield np.arange(start, start + size)
            else:
                yield start + np.sort(rng.choice(size, self.max_windows, replace=False))


class CrossSectionDataset(Dataset):
    """A panel split's windows fetched a date at a time: ``dataset[rows]`` is the batch (windows,
    labels[, volatility target], forward returns) of those rows, for a DataLoader with
    ``batch_size=None`` over a ``DateSampler``. The feature matrix and the returns are memory-
    mapped (opened lazily in each process, never pickled): a node's workers share its pages."""

    def __init__(self, windows, returns_path: Path):
        self.windows, self.returns_path = windows, Path(returns_path)  # a PanelWindowDataset
        self._returns: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        if self._returns is None:
            self._returns = np.load(self.returns_path, mmap_mode="r")
        at = np.asarray(self.windows.index[rows])  # (B, 2) instrument, end row
        x = torch.from_numpy(cut_windows(self.windows.x, at, self.windows.seq_len))  # (B, L, K)
        ret = torch.from_numpy(np.asarray(self._returns[at[:, 0], at[:, 1]], np.float32))  # (B,)
        aux = () if self.windows.aux is None else (self.windows.aux[rows],)
        return (x, self.windows.labels[rows], *aux, ret)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_returns": None}
