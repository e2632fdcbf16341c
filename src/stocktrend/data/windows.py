"""Windows, cut one way everywhere: from a (day x feature) matrix and window end rows.

A window ending on row e holds rows e - L + 1 .. e. The single-stock builder cuts its
``{split}_X.npy`` files with ``cut_windows`` (that layout stays: the reference's format,
small, and what users and tests read); a panel dataset stores the matrices and the ends and
is cut when a batch is drawn, by the same function; so are the windows of the Predictor,
batch scoring and serving. ``split_arrays`` gives any split of either layout as arrays.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


def cut_windows(matrix: np.ndarray, ends: np.ndarray, seq_len: int) -> np.ndarray:
    """(n, seq_len, K) float32 windows. ``matrix``: (days, K) with ``ends`` (n,) rows, or
    (instruments, days, K) with ``ends`` (n, 2) (instrument, row) pairs."""
    offsets = np.arange(-seq_len + 1, 1)
    ends = np.asarray(ends)
    if matrix.ndim == 2:
        return np.asarray(matrix[ends[:, None] + offsets], dtype=np.float32)
    return np.asarray(matrix[ends[:, 0:1], ends[:, 1:2] + offsets], dtype=np.float32)


def full_windows(complete: np.ndarray, seq_len: int) -> np.ndarray:
    """Bool mask over the last axis (days): the ``seq_len`` days ending here are all complete."""
    c = np.cumsum(np.concatenate([np.zeros(complete.shape[:-1] + (1,), np.int64), complete.astype(np.int64)], axis=-1),
                  axis=-1)
    full = np.zeros(complete.shape, bool)
    full[..., seq_len - 1:] = (c[..., seq_len:] - c[..., :-seq_len]) == seq_len
    return full


def layout(dataset_dir: Path) -> str:
    return json.loads((Path(dataset_dir) / "metadata.json").read_text()).get("layout", "windows")


def split_arrays(dataset_dir: str | Path, split: str, mmap: bool = True) -> dict[str, np.ndarray]:
    """{"X", "y", "dates"} of a split, and for panels "index" (instrument, end row) too."""
    d = Path(dataset_dir)
    out = {k: np.load(d / f"{split}_{k}.npy") for k in ("y", "dates")}
    if layout(d) == "panel":
        seq_len = json.loads((d / "metadata.json").read_text())["seq_len"]
        out["index"] = np.load(d / f"{split}_index.npy")
        out["X"] = cut_windows(np.load(d / "features.npy", mmap_mode="r" if mmap else None), out["index"], seq_len)
    else:
        out["X"] = np.load(d / f"{split}_X.npy", mmap_mode="r" if mmap else None)
    return out


def window_batches(dataset_dir: str | Path, split: str, size: int = 4096) -> Iterator[np.ndarray]:
    """A split's windows in file order, ``size`` at a time, each batch cut when it is reached:
    a universe's validation split (1.9 million windows at 3,000 names, 11 GB cut) is never
    whole in memory."""
    d = Path(dataset_dir)
    if layout(d) == "panel":
        index, features = np.load(d / f"{split}_index.npy"), np.load(d / "features.npy", mmap_mode="r")
        seq_len = json.loads((d / "metadata.json").read_text())["seq_len"]
        for i in range(0, len(index), size):
            yield cut_windows(features, index[i:i + size], seq_len)
        return
    x = np.load(d / f"{split}_X.npy", mmap_mode="r")
    for i in range(0, len(x), size):
        yield np.array(x[i:i + size], np.float32)  # a copy: torch takes writable arrays


def window_keys(dataset_dir: str | Path, split: str) -> np.ndarray:
    """What identifies a window: its end date (one stock) or (instrument, end row) pair;
    oversampling repeats keys, so unique keys are the distinct windows."""
    d = Path(dataset_dir)
    return np.load(d / f"{split}_index.npy") if layout(d) == "panel" else np.load(d / f"{split}_dates.npy")


def distinct_windows(dataset_dir: str | Path, split: str, last_day_only: bool = False,
                     sample: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(windows, or their last days; class labels; end dates) of the distinct windows of a
    split, in file order, which is date order (oversampled copies follow the originals);
    ``sample``: a seeded subset of that many. Only what is returned is cut, so a panel's 100k
    training windows never need their ~0.5 GB materialised for a last-day fit."""
    d = Path(dataset_dir)
    _, first = np.unique(window_keys(d, split), axis=0, return_index=True)
    rows = np.sort(first)
    if sample is not None and sample < len(rows):
        rows = np.sort(np.random.default_rng(seed).choice(rows, size=sample, replace=False))
    y = np.load(d / f"{split}_y.npy")[rows].argmax(1)
    dates = np.load(d / f"{split}_dates.npy")[rows]
    if layout(d) == "panel":
        index = np.load(d / f"{split}_index.npy")[rows]
        features = np.load(d / "features.npy", mmap_mode="r")
        seq_len = 1 if last_day_only else json.loads((d / "metadata.json").read_text())["seq_len"]
        x = cut_windows(features, index, seq_len)
    else:
        x = np.asarray(np.load(d / f"{split}_X.npy", mmap_mode="r")[rows][:, -1:] if last_day_only
                       else np.load(d / f"{split}_X.npy", mmap_mode="r")[rows], np.float32)
    return (x[:, -1, :] if last_day_only else x), y, dates


def distinct_last_days(dataset_dir: str | Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(last-day feature rows, their dates) of a split's distinct windows, in date order
    (each (instrument, day) once): what drift is measured against. ``limit``: at most that
    many, a seeded subset still in date order (a universe's training split has millions)."""
    x, _, dates = distinct_windows(dataset_dir, split, last_day_only=True, sample=limit)
    return np.asarray(x, np.float64), dates
