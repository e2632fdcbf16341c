"""TrendDataModule: train/val loaders over a dataset folder written by the dataset builder.

Folder layouts: a single stock's ``{split}_X.npy`` float32 (N, L, K); a panel's
``features.npy`` (instruments, days, K) with ``{split}_index.npy`` (instrument, end row)
pairs, windows cut per item by ``data.windows.cut_windows``. Both have ``{split}_y.npy``
one-hot (N, C), ``{split}_dates.npy`` window end dates (datetime64[D]) and
``metadata.json`` (seq_len, horizon, n_classes, features.selected, splits...).

The test split is deliberately never opened here: it belongs to the evaluation
command only (the reference picked its models on test results).

``device_resident=True`` (a GPU's DevicePlan) copies each split to the device once and
indexes batches there (DeviceBatches): the dataset is tens of MB, and a DataLoader would
collate on the host and copy every batch across.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from stocktrend.data.store import read_metadata
from stocktrend.data.windows import cut_windows
from stocktrend.training.date_batches import CrossSectionDataset, DateSampler, date_runs
from stocktrend.training.samplers import BudgetSampler, EpochOrder  # noqa: F401  (BudgetSampler: re-exported)

logger = logging.getLogger(__name__)

TRAINING_SPLITS = ("train", "val")
# Validation windows per batch, at least: no gradient and BatchNorm in eval mode, so the size
# changes no output, and a universe's millions of validation windows go faster in fewer batches.
VAL_BATCH = 512


def _load_npy(path: Path, **kw) -> np.ndarray:
    """np.load with the file named in the error: a truncated or foreign file says which."""
    try:
        return np.load(path, allow_pickle=False, **kw)
    except FileNotFoundError:
        raise ValueError(f"{path}: missing; rebuild the dataset") from None
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npy array (truncated or corrupted?): {err}") from None


class MappedLabels:
    """A panel split's class labels, read from its memory-mapped one-hot ``{split}_y.npy`` as
    rows are asked for: a worker holds none of the split's millions (as int64 they were 133 MB
    per worker at 3,000 names). Indexed like the tensor it stands for; opened lazily in each
    process, never pickled with its pages."""

    BLOCK = 1 << 20  # rows per read when counting

    def __init__(self, path: Path):
        self.path = Path(path)
        self._y: np.ndarray | None = None

    @property
    def y(self) -> np.ndarray:
        if self._y is None:
            self._y = _load_npy(self.path, mmap_mode="r")
        return self._y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, rows) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.y[rows]).argmax(axis=-1), dtype=torch.long)

    def counts(self) -> list[int]:
        """Windows per class, a block of rows at a time."""
        total = np.zeros(self.y.shape[1])
        for a in range(0, len(self.y), self.BLOCK):
            total += np.asarray(self.y[a:a + self.BLOCK], np.float64).sum(axis=0)
        return [int(round(c)) for c in total]

    def to(self, device) -> torch.Tensor:
        return self[slice(None)].to(device)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_y": None}


class WindowDataset(Dataset):
    """Windows from a memory-mapped ``{split}_X.npy``; labels as int64 class indices.

    The memmap is opened lazily per process, so a DataLoader worker (or a Ray worker)
    that unpickles this object maps the file itself instead of receiving a copy.
    """

    def __init__(self, x_path: Path, labels: np.ndarray | MappedLabels, aux: np.ndarray | None = None):
        """``aux``: the standardised volatility target per window (then items are (x, y, vol))."""
        self.x_path = Path(x_path)
        self.labels = labels if isinstance(labels, MappedLabels) else torch.as_tensor(labels, dtype=torch.long)
        self.aux = None if aux is None else torch.as_tensor(aux, dtype=torch.float32)
        self._x: np.ndarray | None = None

    @property
    def x(self) -> np.ndarray:
        if self._x is None:
            self._x = np.load(self.x_path, mmap_mode="r")
        return self._x

    def __len__(self) -> int:
        return len(self.labels)

    def item(self, i, window: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(window(s), label(s)[, volatility target(s)]) of row ``i``, or of rows (an array)."""
        return (window, self.labels[i]) if self.aux is None else (window, self.labels[i], self.aux[i])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        # np.array copies the window out of the read-only map (torch wants writable memory).
        return self.item(i, torch.from_numpy(np.array(self.x[i], dtype=np.float32)))  # (L, K)

    def __getitems__(self, rows: list[int]) -> tuple[torch.Tensor, ...]:
        """A whole batch at once, as a DataLoader's fetcher asks for it (``collate_batch`` then
        passes it on): one read and one allocation, not one per window. Per-window reads
        fragmented the heap: a validation pass over 160,000 windows of a 3,000-name panel kept
        0.9 GB (bench/panel_train_scale.py found the Train worker growing with the universe)."""
        rows = np.asarray(rows)
        return self.item(rows, torch.from_numpy(np.asarray(self.x[rows], dtype=np.float32)))  # (B, L, K)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_x": None}  # never pickle the mapped array

    def to_device(self, device: torch.device | str) -> DeviceSplit:
        x = torch.from_numpy(np.array(self.x, dtype=np.float32)).to(device)  # (N, L, K), read out of the map
        return DeviceSplit(x, self.labels.to(device), None if self.aux is None else self.aux.to(device))


class PanelWindowDataset(WindowDataset):
    """Windows of a panel, cut from the memory-mapped ``features.npy`` at (instrument, end row)."""

    def __init__(self, features_path: Path, index: np.ndarray, labels: np.ndarray | MappedLabels, seq_len: int,
                 aux: np.ndarray | None = None):
        super().__init__(features_path, labels, aux)
        self.index, self.seq_len = np.asarray(index), seq_len

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        window = cut_windows(self.x, self.index[i : i + 1], self.seq_len)[0]  # (L, K), a copy
        return self.item(i, torch.from_numpy(window))

    def __getitems__(self, rows: list[int]) -> tuple[torch.Tensor, ...]:
        rows = np.asarray(rows)
        return self.item(rows, torch.from_numpy(cut_windows(self.x, self.index[rows], self.seq_len)))  # (B, L, K)

    def to_device(self, device: torch.device | str) -> DeviceSplit:
        # The panel's feature matrix goes across, not its windows: they overlap seq_len-fold.
        features = torch.from_numpy(np.array(self.x, dtype=np.float32)).to(device)  # (I, D, K)
        return DeviceSplit(features, self.labels.to(device), None if self.aux is None else self.aux.to(device),
                           index=torch.as_tensor(self.index, dtype=torch.long).to(device), seq_len=self.seq_len)


def collate_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The DataLoader's collate step for datasets that fetch whole batches (``__getitems__``)."""
    return batch


class DeviceSplit:
    """A split's tensors on one device; ``take(rows)`` is a batch, cut there.

    ``x``: the windows (N, L, K), or with ``index`` a panel's features (I, D, K) whose windows
    are cut at (instrument, end row) pairs as ``cut_windows`` does."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, aux: torch.Tensor | None = None,
                 index: torch.Tensor | None = None, seq_len: int = 0):
        self.x, self.labels, self.aux, self.index = x, labels, aux, index
        self.offsets = None if index is None else torch.arange(-seq_len + 1, 1, device=x.device)  # (L,)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.index is None:
            x = self.x[rows]  # (B, L, K)
        else:
            at = self.index[rows]  # (B, 2)
            x = self.x[at[:, 0:1], at[:, 1:2] + self.offsets]  # (B, L, K)
        return (x, self.labels[rows]) if self.aux is None else (x, self.labels[rows], self.aux[rows])


class DeviceBatches:
    """Batches of a DeviceSplit in an EpochOrder: what a DataLoader over the split would yield,
    already on the device. ``batch_sampler`` is None and ``sampler`` the order, which is what
    Lightning looks for to call set_epoch and to tell a shuffled loader."""

    def __init__(self, split: DeviceSplit, order: EpochOrder, batch_size: int, drop_last: bool = False):
        self.split, self.sampler, self.batch_size, self.drop_last = split, order, batch_size, drop_last
        self.batch_sampler = None

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        rows = self.sampler.indices().to(self.split.device, non_blocking=True)  # one small copy per epoch
        for b in range(len(self)):
            yield self.split.take(rows[b * self.batch_size : (b + 1) * self.batch_size])


class TrendDataModule(pl.LightningDataModule):
    def __init__(self, dataset_dir: str | Path, batch_size: int = 16, num_workers: int = 0, seed: int = 42,
                 device_resident: bool = False, epoch_windows: int | None = None, batches: str = "windows",
                 epoch_dates: int | None = None):
        """``device_resident``: batches come from copies of the splits on the Trainer's device
        (the CPU when no Trainer is attached) instead of a DataLoader (num_workers unused).
        ``epoch_windows``: each process's training epoch, a fresh draw of that many windows
        (``BudgetSampler``; None: every window). Device-resident runs keep their EpochOrder
        over every window (an index tensor, not a list) and stop at the trainer's budget.
        ``batches="dates"``: each training batch one date's cross-section of a panel (at most
        ``batch_size`` windows, with their forward returns; ``training.date_batches``), an epoch
        ``epoch_dates`` dates (None: all), through a DataLoader on any device."""
        super().__init__()
        self.dataset_dir = Path(dataset_dir).expanduser().resolve()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.device_resident = device_resident
        self.epoch_windows = epoch_windows
        self.batches, self.epoch_dates = batches, epoch_dates
        self.device_splits: dict[str, DeviceSplit] = {}
        self.metadata = read_metadata(self.dataset_dir)
        self.n_classes = int(self.metadata["n_classes"])
        self.seq_len = int(self.metadata["seq_len"])
        self.n_features = len(self.metadata["features"]["selected"])
        self.datasets: dict[str, WindowDataset] = {}
        self.dates: dict[str, np.ndarray] = {}
        if batches == "dates" and self.metadata.get("layout") != "panel":
            raise ValueError(f"{self.dataset_dir}: batches: dates draws a date's cross-section of a panel; this is a "
                             "single-instrument dataset (use batches: windows)")
        self._date_runs: np.ndarray | None = None

    # -- loading -------------------------------------------------------------
    def _load_split(self, split: str) -> None:
        assert split in TRAINING_SPLITS, "the test split is for evaluation only"
        d = self.dataset_dir
        if self.metadata.get("layout") == "panel":
            return self._load_panel_split(split)
        x = _load_npy(d / f"{split}_X.npy", mmap_mode="r")
        y = _load_npy(d / f"{split}_y.npy", mmap_mode="r")
        dates = _load_npy(d / f"{split}_dates.npy")
        expected = (self.seq_len, self.n_features)
        if x.ndim != 3 or x.shape[1:] != expected:
            raise ValueError(f"{split}_X.npy has shape {x.shape}; metadata says (N, {expected[0]}, {expected[1]})")
        if y.shape != (x.shape[0], self.n_classes):
            raise ValueError(f"{split}_y.npy has shape {y.shape}; expected ({x.shape[0]}, {self.n_classes})")
        if len(dates) != x.shape[0]:
            raise ValueError(f"{split}_dates.npy has {len(dates)} dates for {x.shape[0]} windows")
        if x.dtype != np.float32:
            logger.warning("%s_X.npy is %s, converting windows to float32 on read", split, x.dtype)
        y = np.asarray(y)
        if not np.allclose(y.sum(axis=1), 1.0):
            raise ValueError(f"{split}_y.npy rows must be one-hot (each row sums to 1)")
        self.datasets[split] = WindowDataset(d / f"{split}_X.npy", y.argmax(axis=1), self._aux(split, len(y)))
        self.dates[split] = dates.astype("datetime64[D]")

    def _aux(self, split: str, n: int) -> np.ndarray | None:
        """The standardised volatility target of a split (None: the dataset has none), with
        the standardisation the builder fitted on training windows (metadata ``auxiliary``)."""
        aux = self.metadata.get("auxiliary")
        if not aux:
            return None
        path = self.dataset_dir / aux["file"].format(split=split)
        vol = np.asarray(_load_npy(path))
        if vol.shape != (n, len(aux["columns"])):
            raise ValueError(f"{path} has shape {vol.shape}; expected ({n}, {len(aux['columns'])}) for {n} windows")
        target = vol[:, 0].astype(np.float64)
        if not np.isfinite(target).all():
            raise ValueError(f"{path}: row {int(np.flatnonzero(~np.isfinite(target))[0])} has no volatility target")
        return ((target - aux["mean"]) / aux["std"]).astype(np.float32)

    def _load_panel_split(self, split: str) -> None:
        d = self.dataset_dir
        # Memory-mapped, as the features are: a universe's split is millions of windows, and each
        # worker reads its index through the page cache the node shares instead of its own copy.
        features = _load_npy(d / "features.npy", mmap_mode="r")
        index = _load_npy(d / f"{split}_index.npy", mmap_mode="r")
        y = _load_npy(d / f"{split}_y.npy", mmap_mode="r")
        dates = _load_npy(d / f"{split}_dates.npy", mmap_mode="r")
        if features.ndim != 3 or features.shape[2] != self.n_features:
            raise ValueError(f"{d / 'features.npy'} has shape {features.shape}; metadata says (instruments, days, "
                             f"{self.n_features})")
        if index.ndim != 2 or index.shape[1] != 2 or len(index) != len(y) or len(dates) != len(y):
            raise ValueError(f"{split}_index.npy {index.shape}, {split}_y.npy {y.shape}, {split}_dates.npy "
                             f"{dates.shape} do not describe the same windows")
        if len(index) and ((index[:, 1] < self.seq_len - 1).any() or (index[:, 1] >= features.shape[1]).any()
                           or (index[:, 0] >= features.shape[0]).any() or (index < 0).any()):
            raise ValueError(f"{split}_index.npy points outside features.npy {features.shape[:2]}")
        if y.ndim != 2 or y.shape[1] != self.n_classes:
            raise ValueError(f"{split}_y.npy has shape {y.shape}; expected ({len(y)}, {self.n_classes})")
        self.datasets[split] = PanelWindowDataset(d / "features.npy", index, MappedLabels(d / f"{split}_y.npy"),
                                                  self.seq_len, self._aux(split, len(y)))
        # Only the first and last end dates are checked (chronological, purged): not a copy of every one.
        self.dates[split] = np.array([dates.min(), dates.max()], "datetime64[D]") if len(dates) else np.array(
            [], "datetime64[D]")

    def setup(self, stage: str | None = None) -> None:
        """Load train and val (idempotent, so callers may call it before the Trainer does)."""
        for split in TRAINING_SPLITS:
            if split not in self.datasets:
                self._load_split(split)
        # A chronological, purged split is the first defence against leakage (the reference
        # shuffled overlapping windows across its splits): refuse windows of two splits closer than the purge gap the metadata
        # states (at least seq_len + horizon - 1 rows), unless the dataset says it
        # reproduces the reference's leaky protocol on purpose (the leakage audit trains on
        # it to measure the inflation).
        if self.metadata.get("leaky"):
            logger.warning("training on a dataset marked LEAKY (%s protocol)", self.metadata.get("protocol"))
            return
        self.check_purge(("train", "val"))

    def check_purge(self, order: tuple[str, ...]) -> None:
        """Consecutive splits in ``order`` must be chronological with the purge gap between
        their window end dates. Counted in business days, which are at least the trading
        days: a gap short by rows is refused; one short only by holidays is the builder's
        to refuse (it counts trading rows)."""
        need = max(int((self.metadata.get("boundaries") or {}).get("purge_rows") or 0),
                   self.seq_len + int(self.metadata.get("horizon", 1)) - 1)
        for before, after in zip(order, order[1:]):
            if not (len(self.dates.get(before, ())) and len(self.dates.get(after, ()))):
                continue
            last, first = self.dates[before].max(), self.dates[after].min()
            if first <= last:
                raise ValueError(f"{after} windows start {first}, on or before the last {before} window {last}: "
                                 f"the split is not chronological")
            gap = int(np.busday_count(last, first)) - 1  # rows strictly between the two end dates
            if gap < need:
                raise ValueError(f"{before} windows end {last} and {after} windows start {first}: {gap} rows between "
                                 f"them, fewer than the purge gap of {need} rows (seq_len + horizon - 1) that keeps "
                                 f"every day of a window and its label in one split")

    # -- facts the module needs ----------------------------------------------
    def class_counts_train(self) -> list[int]:
        self.setup("fit")
        labels = self.datasets["train"].labels
        if isinstance(labels, MappedLabels):
            return labels.counts()
        return np.bincount(labels.numpy(), minlength=self.n_classes).tolist()

    def _drop_last(self) -> bool:
        # A final batch of one sample breaks BatchNorm in training mode; drop only that case.
        return len(self.datasets["train"]) % self.batch_size == 1

    def date_runs(self) -> np.ndarray:
        """Where each date's original training windows start (``date_batches.date_runs``): the
        first windows of the split, before oversampling's copies."""
        if self._date_runs is None:
            self.setup("fit")
            originals = sum(self.metadata["splits"]["train"]["class_counts_before_balancing"])
            self._date_runs = date_runs(self.datasets["train"].index[:originals, 1])
        return self._date_runs

    def _date_sampler(self, rank: int = 0, world_size: int = 1) -> DateSampler:
        return DateSampler(self.date_runs(), self.batch_size, self.seed, self.epoch_dates, rank, world_size)

    def train_batches_per_epoch(self) -> int:
        self.setup("fit")
        if self.batches == "dates":
            return len(self._date_sampler())
        n = len(self.datasets["train"])
        return n // self.batch_size if self._drop_last() else -(-n // self.batch_size)

    # -- loaders -------------------------------------------------------------
    def _date_loader(self) -> DataLoader:
        shard = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        sampler = self._date_sampler(shard["rank"], shard["num_replicas"]) if shard else self._date_sampler()
        return DataLoader(CrossSectionDataset(self.datasets["train"], self.dataset_dir / "forward_returns.npy"),
                          batch_size=None, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup("fit")
        # Seeded generator: the shuffle order depends on the seed only, run after run.
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        sampler = None
        if shuffle and self.epoch_windows is not None:  # the epoch's budget, drawn from this process's shard
            shard = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
            sampler = BudgetSampler(len(self.datasets[split]), self.epoch_windows, self.seed,
                                    rank=shard["rank"] if shard else 0, world_size=shard["num_replicas"] if shard else 1)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if shuffle else max(self.batch_size, VAL_BATCH),
            collate_fn=collate_batch,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            # A last batch of one sample breaks BatchNorm: dropped, of the split or of the budget's draw.
            drop_last=shuffle and (self._drop_last() if sampler is None else len(sampler) % self.batch_size == 1),
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _device_loader(self, split: str, shuffle: bool) -> DeviceBatches:
        self.setup("fit")
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if split not in self.device_splits or self.device_splits[split].device != device:
            self.device_splits[split] = self.datasets[split].to_device(device)
            logger.info("%s split on %s: %d windows", split, device, len(self.device_splits[split]))
        # Where Lightning would inject a DistributedSampler (a DDP strategy, Ray's included),
        # shard as it would; it leaves non-DataLoader iterables alone.
        shard = trainer.distributed_sampler_kwargs if trainer is not None else None
        n = len(self.datasets[split])
        order = (EpochOrder(n, shuffle, self.seed, rank=shard["rank"], world_size=shard["num_replicas"]) if shard
                 else EpochOrder(n, shuffle, self.seed))
        return DeviceBatches(self.device_splits[split], order, self.batch_size if shuffle else max(self.batch_size, VAL_BATCH),
                             drop_last=shuffle and self._drop_last())

    def train_dataloader(self) -> DataLoader | DeviceBatches:
        if self.batches == "dates":
            self.setup("fit")
            return self._date_loader()
        if self.device_resident:
            return self._device_loader("train", shuffle=True)
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        if self.device_resident:
            return self._device_loader("val", shuffle=False)
        return self._loader("val", shuffle=False)
