# NOTE: `tiny_dataset_dir` writes a synthetic dataset folder in the layout of our
# dataset builder (train/val/test X, y, dates .npy + metadata.json). It stands in
# for the real builder in the training tests and may be replaced by a call to the
# builder on a small fixture once that exists.
"""Shared pytest fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

# One intra-op thread: these models are tiny, and on a busy 2-core machine two OpenMP
# threads spin-wait for each other (measured 5x slower than one thread under load).
torch.set_num_threads(1)

TINY_SEQ_LEN = 20
TINY_FEATURES = 8
TINY_SPLITS = {"train": 200, "val": 64, "test": 64}
TINY_HORIZON = 5


def write_synthetic_dataset(root: Path, seed: int = 0, sizes: dict[str, int] = TINY_SPLITS) -> Path:
    """Random windows whose label is learnable: class 1 iff feature 0's window mean > 0."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    # Business days, one window ending per day; splits are chronological with a
    # horizon-sized gap between them (as a purged builder would leave).
    day = np.datetime64("2015-01-02")
    meta_splits = {}
    for split, n in sizes.items():
        x = rng.standard_normal((n, TINY_SEQ_LEN, TINY_FEATURES)).astype(np.float32)
        label = (x[:, :, 0].mean(axis=1) > 0).astype(np.int64)
        y = np.eye(2, dtype=np.float32)[label]  # one-hot (N, 2)
        dates = np.busday_offset(day, np.arange(n), roll="forward").astype("datetime64[D]")
        day = np.busday_offset(dates[-1], TINY_HORIZON + 1)
        np.save(root / f"{split}_X.npy", x)
        np.save(root / f"{split}_y.npy", y)
        np.save(root / f"{split}_dates.npy", dates)
        meta_splits[split] = {
            "n": int(n),
            "start": str(dates[0]),
            "end": str(dates[-1]),
            "class_counts": np.bincount(label, minlength=2).tolist(),
        }
    metadata = {
        "ticker": "SYNTH",
        "seq_len": TINY_SEQ_LEN,
        "horizon": TINY_HORIZON,
        "n_classes": 2,
        "classes": ["down", "up"],
        "features": {"selected": [f"f{i}" for i in range(TINY_FEATURES)]},
        "splits": meta_splits,
    }
    (root / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return root


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture
def write_dataset():
    """The writer itself, for tests that need a variant (other sizes, broken files)."""
    return write_synthetic_dataset


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray for the whole test session (starting one costs ~10 s).

    ``address="local"`` always starts a fresh instance, so the suite never attaches to a
    head a user left running; 2 CPUs like the CI machine.
    """
    import os

    import ray

    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def small_real_dataset(tmp_path_factory, repo_root) -> Path:
    """A small dataset built by the real builder from the committed CSVs (2008-2017)."""
    import datetime as dt

    from stocktrend.config_io import with_overrides
    from stocktrend.data.build import build_dataset
    from stocktrend.data.config import load_data_config

    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml")
    cfg = with_overrides(cfg, {"start": dt.date(2008, 1, 2), "seq_len": 10, "n_features": 8})
    out = tmp_path_factory.mktemp("small_real") / "npy"
    build_dataset(cfg, out)
    return out
