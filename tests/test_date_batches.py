"""Whole cross-sections as training batches (``training.date_batches``) and the rank-IC loss
beside cross-entropy: each batch is one date's windows of a real panel dataset (built from a
synthetic market's files), each DDP rank draws from its own dates, the sampler's memory does
not grow with the split, and the loss is what its formula says."""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from stocktrend.config_io import ConfigError
from stocktrend.data.config import load_data_config
from stocktrend.data.panel_build import build_panel_dataset
from stocktrend.data.synthetic import MarketSpec, generate
from stocktrend.data.synthetic_files import write_market
from stocktrend.data.windows import cut_windows
from stocktrend.models.config import model_config_from_metadata
from stocktrend.training import date_batches
from stocktrend.training.config import TrainConfig, recipe
from stocktrend.training.datamodule import TrendDataModule
from stocktrend.training.date_batches import DateSampler, date_runs
from stocktrend.training.fit_local import fit_local
from stocktrend.training.loss import rank_ic_loss

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def panel(tmp_path_factory) -> Path:
    """A balanced panel dataset of 8 instruments, some listing late (dates with few windows)."""
    root = tmp_path_factory.mktemp("dates")
    write_market(generate(MarketSpec(instruments=8, days=700, churn=0.3, plant="linear", ic=0.2, seed=4)),
                 root / "market", ("close_panel",))
    cfg = load_data_config(root / "market" / "close_panel.yaml")
    cfg = dataclasses.replace(cfg, seq_len=10, n_features=6, panel=dataclasses.replace(cfg.panel, min_days=300))
    build_panel_dataset(cfg, root / "dataset")
    return root / "dataset"


def originals(panel: Path) -> np.ndarray:
    meta = json.loads((panel / "metadata.json").read_text())
    return np.load(panel / "train_index.npy")[:sum(meta["splits"]["train"]["class_counts_before_balancing"])]


def test_date_runs_are_where_each_date_starts_read_a_block_at_a_time(monkeypatch):
    rows = np.repeat(np.array([3, 4, 9, 10, 11]), [2, 1, 5, 3, 4])
    expected = np.r_[np.flatnonzero(np.diff(rows, prepend=-1)), len(rows)]
    monkeypatch.setattr(date_batches, "BLOCK", 4)  # runs that cross blocks
    assert date_runs(rows).tolist() == expected.tolist() == [0, 2, 3, 8, 11, 15]
    with pytest.raises(ValueError, match="not in date order at row 5"):
        date_runs(np.r_[rows[:5], 2, rows[5:]])


def test_each_batch_is_one_dates_original_windows_and_each_rank_has_its_own_dates(panel):
    index = originals(panel)
    runs = date_runs(index[:, 1])
    batches = {}
    for rank in (0, 1):
        sampler = DateSampler(runs, max_windows=5, seed=3, rank=rank, world_size=2)
        batches[rank] = list(sampler)
        assert len(batches[rank]) == len(sampler) == sampler.shard
        for rows in batches[rank]:
            assert 2 <= len(rows) <= 5 and len(np.unique(index[rows, 1])) == 1  # one date, no copy
            assert len(np.unique(index[rows, 0])) == len(rows) and rows.max() < len(index)
    dates = {r: {int(index[rows[0], 1]) for rows in b} for r, b in batches.items()}
    assert len(dates[0] & dates[1]) <= 1  # disjoint shards (the shorter one wraps a date round)
    sizes = np.diff(runs)
    assert dates[0] | dates[1] == {int(index[s, 1]) for s, n in zip(runs[:-1], sizes) if n >= 2}
    lone = DateSampler(np.array([0, 1, 4, 5, 9]), max_windows=5, seed=0)  # dates of 1, 3, 1 and 4 windows
    assert sorted(r.tolist() for r in lone) == [[1, 2, 3], [5, 6, 7, 8]]  # a lone window is no cross-section
    sampler = DateSampler(runs, max_windows=5, seed=3, budget=7)
    first = [r.tolist() for r in sampler]
    assert len(first) == 7 and first == [r.tolist() for r in sampler]  # the same epoch, the same draw
    sampler.set_epoch(1)
    assert first != [r.tolist() for r in sampler]


def test_the_dataset_gives_a_dates_windows_labels_and_forward_returns(panel):
    dm = TrendDataModule(panel, batch_size=6, seed=1, batches="dates", epoch_dates=5)
    loader = dm.train_dataloader()
    assert len(loader) == dm.train_batches_per_epoch() == 5
    index, features = originals(panel), np.load(panel / "features.npy")
    returns, labels = np.load(panel / "forward_returns.npy"), np.load(panel / "train_y.npy").argmax(axis=1)
    for (x, y, *rest), rows in zip(loader, loader.sampler):
        ret = rest[-1]
        at = index[rows]
        assert torch.equal(x, torch.from_numpy(cut_windows(features, at, dm.seq_len)))
        assert torch.equal(y, torch.from_numpy(labels[rows]))
        assert np.array_equal(ret.numpy(), returns[at[:, 0], at[:, 1]])
        assert np.isfinite(ret.numpy()).all()  # a labelled window has its forward return


def test_under_ddp_each_rank_draws_its_dates_from_its_own_shard(panel):
    """Where Lightning's DDP strategies (Ray Train's included) would inject a DistributedSampler,
    the date sampler is one: left in place, sharded by the rank the trainer gives."""
    from types import SimpleNamespace

    index, seen = originals(panel), []
    for rank in range(2):
        dm = TrendDataModule(panel, 8, seed=3, batches="dates", epoch_dates=20)
        dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        sampler = dm.train_dataloader().sampler
        assert isinstance(sampler, DateSampler) and (sampler.rank, sampler.num_replicas, len(sampler)) == (rank, 2, 20)
        seen.append({int(index[rows[0], 1]) for rows in sampler})
    assert not seen[0] & seen[1]


def test_a_panel_splits_labels_are_read_from_its_file_as_they_are_asked_for(panel):
    import pickle

    from stocktrend.training.datamodule import MappedLabels

    dm = TrendDataModule(panel, 8)
    dm.setup("fit")
    labels, y = dm.datasets["train"].labels, np.load(panel / "train_y.npy")
    assert isinstance(labels, MappedLabels) and len(labels) == len(y)
    rows = np.array([0, 5, len(y) - 1])
    assert torch.equal(labels[rows], torch.from_numpy(y[rows].argmax(axis=1)))
    assert labels[3].ndim == 0 and int(labels[3]) == int(y[3].argmax())
    assert dm.class_counts_train() == np.bincount(y.argmax(axis=1), minlength=2).tolist()
    assert len(pickle.dumps(labels)) < 1_000  # a worker's copy reopens the file, it carries no rows
    assert torch.equal(labels.to("cpu"), torch.from_numpy(y.argmax(axis=1)))


def test_loaders_fetch_whole_batches_not_one_window_at_a_time(panel, monkeypatch):
    """One read per batch (``__getitems__``): per-window reads fragmented the heap, and a validation
    pass over a 3,000-name panel's windows kept about 1 GB in each Train worker."""
    from stocktrend.training.datamodule import VAL_BATCH, PanelWindowDataset

    dm = TrendDataModule(panel, 8, seed=2)
    dm.setup("fit")
    n = min(VAL_BATCH, len(dm.datasets["val"]))
    expected = [dm.datasets["val"][i] for i in range(n)]  # one at a time, as before
    monkeypatch.setattr(PanelWindowDataset, "__getitem__", lambda self, i: pytest.fail("a window fetched alone"))
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape[0] == n > 8 and torch.equal(x, torch.stack([e[0] for e in expected]))
    assert torch.equal(y, torch.stack([e[1] for e in expected]))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, dm.seq_len, dm.n_features) and y.shape == (8,)


def test_the_date_sampler_holds_a_few_numbers_per_date_not_per_window(tmp_path):
    n = 20_000_000  # 20 million windows over 5,000 dates, memory-mapped as a dataset's index is
    rows = np.lib.format.open_memmap(tmp_path / "rows.npy", "w+", np.int32, (n,))
    rows[:] = np.repeat(np.arange(5_000, dtype=np.int32), n // 5_000)
    rows.flush()
    column = np.load(tmp_path / "rows.npy", mmap_mode="r")
    tracemalloc.start()
    runs = date_runs(column)
    sampler = DateSampler(runs, max_windows=512, seed=0, budget=100)
    assert sum(len(b) for b in sampler) == 100 * 512
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(runs) == 5_001 and peak < 40e6, peak  # the column itself is 80 MB


def test_the_rank_loss_by_hand():
    ret = torch.tensor([0.03, -0.01, 0.02, float("nan"), 0.00])
    assert rank_ic_loss(torch.tensor([3.0, 0.0, 2.0, 9.0, 1.0]), ret).item() == pytest.approx(0.0, abs=1e-6)
    assert rank_ic_loss(torch.tensor([0.0, 3.0, 1.0, 9.0, 2.0]), ret).item() == pytest.approx(2.0, abs=1e-6)
    score = torch.tensor([1.0, 2.0, 0.0, 5.0, 3.0], requires_grad=True)  # ranks of the known: 3 0 2 1
    loss = rank_ic_loss(score, ret)
    s, r = np.array([1.0, 2.0, 0.0, 3.0]), np.array([3.0, 0.0, 2.0, 1.0])
    assert loss.item() == pytest.approx(1 - np.corrcoef(s, r)[0, 1], abs=1e-6)
    loss.backward()
    assert score.grad[3] == 0 and score.grad.abs().sum() > 0  # the window without a return adds nothing
    assert rank_ic_loss(torch.tensor([1.0]), torch.tensor([0.1])).item() == 0.0


def test_the_config_ties_the_rank_loss_and_the_date_budget_to_date_batches(tiny_dataset_dir):
    for bad, match in (({"rank_weight": 1.0}, "rank_weight goes with batches: dates"),
                       ({"epoch_dates": 5}, "epoch_dates goes with batches: dates"),
                       ({"batches": "dates", "epoch_windows": 100}, "epoch_windows goes with batches: windows")):
        with pytest.raises((ValueError, ConfigError), match=match):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="single-instrument dataset"):
        TrendDataModule(tiny_dataset_dir, batches="dates")


def test_a_fit_on_date_batches_with_the_rank_loss_learns_the_cross_section(panel, tmp_path):
    cfg = recipe("default", max_epochs=2, batch_size=8, accumulate_grad_batches=1, seed=0, batches="dates",
                 rank_weight=1.0, epoch_dates=60)
    model_cfg = model_config_from_metadata("tiny", json.loads((panel / "metadata.json").read_text()))
    fit = fit_local(panel, model_cfg, cfg, tmp_path / "run", progress=False, enable_model_summary=False)
    history = fit["history"]
    assert len(history) == 2 and all(np.isfinite(h["train_loss"]) for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]  # cross-entropy + the rank term, falling


def test_a_gpu_plan_keeps_a_date_batch_at_the_configs_size():
    """On a GPU the plan folds accumulation into one big step for window batches; a date batch
    is one cross-section of at most batch_size windows there too."""
    from stocktrend.training.device import plan_for

    windows = plan_for("cuda", TrainConfig(batch_size=16, accumulate_grad_batches=4))
    dates = plan_for("cuda", TrainConfig(batch_size=16, accumulate_grad_batches=4, batches="dates"))
    assert (windows.micro_batch, windows.accumulate) == (64, 1)
    assert (dates.micro_batch, dates.accumulate) == (16, 4)
