"""Windows, cut one way everywhere: from a (day x feature) matrix and window end rows.

A window ending on row e holds rows e - L + 1 .. e. The single-stock builder cuts its
``{split}_X.npy`` files with ``cut_windows`` (that layout stays: the reference's format,
small, and what users and tests read); a panel dataset stores the matrices and the ends and
is cut when a batch is drawn, by the same function; so are the windows of the Predictor,
batch scoring and serving. ``split_arrays`` gives any split of either layout as arrays.
"""

from __future__ import annotations

import json
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


def distinct_last_days(dataset_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(last-day feature rows, their dates) of a split's windows, each (instrument, day) once
    (oversampling duplicated some), ordered by date: what drift is measured against."""
    d = Path(dataset_dir)
    dates = np.load(d / f"{split}_dates.npy")
    if layout(d) == "panel":
        index = np.unique(np.load(d / f"{split}_index.npy"), axis=0)
        index = index[np.lexsort((index[:, 0], index[:, 1]))]
        features = np.load(d / "features.npy", mmap_mode="r")
        calendar = np.load(d / "calendar.npy")
        return np.asarray(features[index[:, 0], index[:, 1]], np.float64), calendar[index[:, 1]]
    days, first = np.unique(dates, return_index=True)
    x = np.load(d / f"{split}_X.npy", mmap_mode="r")
    return np.asarray(x[first, -1, :], np.float64), days
