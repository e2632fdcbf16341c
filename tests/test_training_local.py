"""Local (no Ray) training: config, loss weights, data module, one Lightning run, LR schedule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping

from stocktrend.config_io import ConfigError, config_from_dict, config_to_dict
from stocktrend.models.config import model_config_from_metadata
from stocktrend.training.callbacks import build_callbacks, build_trainer, early_stopping
from stocktrend.training.config import TrainConfig, recipe, recorded_config, selection_mode, warmup_epochs
from stocktrend.training.datamodule import VAL_BATCH, BudgetSampler, TrendDataModule, read_metadata
from stocktrend.training.fit_local import fit_local
from stocktrend.training.loss import build_loss, resolve_class_weights
from stocktrend.training.module import TrendClassifier

TINY_SPLITS = {"train": 200, "val": 64, "test": 64}  # what conftest's tiny_dataset_dir writes (step counting)


@pytest.mark.timeout(10)
def test_class_weights_resolution():
    assert torch.equal(resolve_class_weights("auto", [100, 100]), torch.tensor([1.0, 1.0]))
    w = resolve_class_weights("auto", [30, 70])  # N / (C * n_c)
    assert torch.allclose(w, torch.tensor([100 / 60, 100 / 140]))
    assert resolve_class_weights("none", [30, 70]) is None
    # An explicit list is used as given (this one reproduces the reference).
    assert torch.allclose(resolve_class_weights([1.15, 0.87], [50, 50]), torch.tensor([1.15, 0.87]))
    with pytest.raises(ValueError, match="entries"):
        resolve_class_weights([1.0, 1.0, 1.0], [50, 50])
    with pytest.raises(ValueError, match="no training labels"):
        resolve_class_weights("auto", [0, 50])
    loss = build_loss("auto", [30, 70], label_smoothing=0.1)
    assert loss.label_smoothing == 0.1 and torch.allclose(loss.weight, w)


@pytest.mark.timeout(10)
def test_train_config_validation():
    cfg = TrainConfig()
    assert (cfg.batch_size, cfg.accumulate_grad_batches, cfg.max_lr, cfg.selection_metric) == (16, 4, 1e-3, "val_auroc")
    with pytest.raises(ConfigError, match="learning_rate"):
        config_from_dict(TrainConfig, {"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="selection_metric"):
        config_from_dict(TrainConfig, {"selection_metric": "test_acc"})
    with pytest.raises(ConfigError, match="class_weights"):
        config_from_dict(TrainConfig, {"class_weights": "balanced"})
    assert selection_mode("val_ce") == "min" and selection_mode("val_auroc") == "max"


@pytest.mark.timeout(60)
def test_datamodule_train_and_val_only(small_real_dataset, monkeypatch):
    opened: list[str] = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda f, *a, **k: (opened.append(Path(f).name), real_load(f, *a, **k))[1])

    dm = TrendDataModule(str(small_real_dataset), batch_size=16, seed=7)
    n = {k: v["n"] for k, v in dm.metadata["splits"].items()}
    counts = dm.class_counts_train()
    assert sum(counts) == n["train"] and len(counts) == 2 and min(counts) > 0
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, dm.seq_len, dm.n_features) and x.dtype == torch.float32 and y.dtype == torch.long
    assert dm.train_batches_per_epoch() == len(dm.train_dataloader()) == math.ceil(n["train"] / 16)
    # Seeded shuffling: a fresh module with the same seed yields the same first batch.
    x2, _ = next(iter(TrendDataModule(small_real_dataset, 16, seed=7).train_dataloader()))
    assert torch.equal(x, x2)
    # Validation in order, in batches of at least VAL_BATCH windows (no gradient: the size changes no output).
    xv, yv = next(iter(dm.val_dataloader()))
    val_x = real_load(small_real_dataset / "val_X.npy")
    assert len(xv) == min(len(val_x), VAL_BATCH) > 16
    assert torch.equal(xv, torch.from_numpy(val_x[:len(xv)]))
    assert torch.equal(yv, torch.from_numpy(real_load(small_real_dataset / "val_y.npy")[:len(xv)].argmax(1)))
    assert not any(name.startswith("test_") for name in opened)
    assert not hasattr(dm, "test_dataloader") or "test" not in dm.datasets


@pytest.mark.timeout(20)
def test_datamodule_refuses_a_non_chronological_split(tmp_path, write_dataset):
    root = write_dataset(tmp_path / "ds", sizes={"train": 40, "val": 20, "test": 20})
    np.save(root / "val_dates.npy", np.load(root / "train_dates.npy")[:20])  # val inside train
    with pytest.raises(ValueError, match="chronological"):
        TrendDataModule(root).setup("fit")


@pytest.mark.timeout(20)
def test_datamodule_refuses_splits_closer_than_the_purge_gap(tmp_path, write_dataset):
    root = write_dataset(tmp_path / "ds", sizes={"train": 40, "val": 20, "test": 20})
    TrendDataModule(root).setup("fit")  # as written: purged
    train_end = np.load(root / "train_dates.npy").max()
    purge = read_metadata(root)["boundaries"]["purge_rows"]
    # Validation moved one row closer than the purge gap: its first window would share a day with training.
    too_close = np.busday_offset(train_end, np.arange(20) + purge).astype("datetime64[D]")
    np.save(root / "val_dates.npy", too_close)
    with pytest.raises(ValueError, match=f"fewer than the purge gap of {purge} rows"):
        TrendDataModule(root).setup("fit")
    np.save(root / "val_dates.npy", np.busday_offset(too_close, 1).astype("datetime64[D]"))
    TrendDataModule(root).setup("fit")  # one row more: accepted


@pytest.mark.timeout(120)
def test_one_epoch_fit_local(small_real_dataset, tmp_path):
    model_cfg = model_config_from_metadata("tiny", read_metadata(small_real_dataset))
    train_cfg = TrainConfig(batch_size=64, accumulate_grad_batches=2, max_epochs=50, milestone_every=1)
    result = fit_local(small_real_dataset, model_cfg, train_cfg, tmp_path / "run", max_epochs=1,
                       progress=False, accelerator="cpu")
    assert len(result["history"]) == 1
    epoch = result["history"][0]
    for key in ("train_loss", "train_acc", "val_ce", "val_loss", "val_acc", "val_f1", "val_auroc", "val_mcc",
                "val_precision_c0", "val_recall_c1", "lr"):
        assert isinstance(epoch[key], float) and math.isfinite(epoch[key]), key
    assert np.array(epoch["val_confmat"]).sum() == read_metadata(small_real_dataset)["splits"]["val"]["n"]
    assert result["best_score"] == pytest.approx(epoch["val_auroc"], rel=1e-5)
    assert result["val_metrics"]["val_ce"] == epoch["val_ce"]
    ckpt = Path(result["best_checkpoint"])
    assert ckpt.is_file() and "=" not in ckpt.name
    assert [p.name for p in (ckpt.parent / "milestones").iterdir()] == ["epoch000.ckpt"]
    assert json.loads((tmp_path / "run" / "fit_summary.json").read_text())["train_config"]["max_epochs"] == 1

    # The checkpoint alone rebuilds the model (hyperparameters are plain dicts).
    restored = TrendClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    assert restored.model_cfg == model_cfg and restored.history == result["history"]
    x = torch.from_numpy(np.load(small_real_dataset / "val_X.npy")[:4])
    logits, attn = restored(x, return_attention=True)
    assert logits.shape == (4, 2) and attn.shape == (4, model_cfg.seq_len)


class LrRecorder(pl.Callback):
    """The LR each real optimizer step used (this hook fires only on stepping batches)."""

    def __init__(self):
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.lrs.append(optimizer.param_groups[0]["lr"])


@pytest.mark.timeout(120)
def test_one_cycle_spans_the_optimizer_steps_taken(tiny_dataset_dir, tmp_path):
    train_cfg = TrainConfig(batch_size=16, accumulate_grad_batches=3, max_epochs=2, lr=2e-4, max_lr=1e-3)
    dm = TrendDataModule(tiny_dataset_dir, train_cfg.batch_size, seed=train_cfg.seed)
    model_cfg = model_config_from_metadata("tiny", dm.metadata)
    module = TrendClassifier(model_cfg, train_cfg, dm.class_counts_train(), dm.train_batches_per_epoch())
    recorder = LrRecorder()
    trainer = build_trainer(train_cfg, tmp_path, accelerator="cpu", callbacks=[recorder], logger=False,
                            with_progress=False, enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)

    batches = math.ceil(TINY_SPLITS["train"] / 16)  # 13 batches, 3 accumulated per step
    expected = math.ceil(batches / 3) * 2  # 5 steps per epoch (the last one partial)
    scheduler = module.lr_schedulers()
    assert scheduler.total_steps == trainer.global_step == len(recorder.lrs) == expected
    assert module.total_optimizer_steps() == expected  # also without a trainer's help:
    assert TrendClassifier(model_cfg, train_cfg, [1, 1], batches).total_optimizer_steps() == expected
    # The cycle starts at lr, peaks at max_lr and its last step uses the final LR.
    assert recorder.lrs[0] == pytest.approx(2e-4)
    assert max(recorder.lrs) == pytest.approx(1e-3)
    assert recorder.lrs[-1] == pytest.approx(2e-4 / 1e4)
    assert len(module.history) == 2


@pytest.mark.timeout(10)
def test_the_reference_recipe_stays_available_by_name():
    ref, default = recipe("reference"), recipe("default")
    assert (ref.max_epochs, ref.early_stopping_patience, ref.selection_metric, ref.stop_after_warmup) == (
        150, 15, "val_ce", False)
    assert default == TrainConfig() and default.selection_metric == "val_auroc"
    assert recipe("reference", seed=3).seed == 3 and recipe("reference", seed=3).max_epochs == 150
    with pytest.raises(ValueError, match="unknown training recipe 'fast'.*reference"):
        recipe("fast")
    # Early stopping may end a default run only after its warm-up (OneCycle's rising LR).
    assert warmup_epochs(default) == math.ceil(default.pct_start * default.max_epochs) == 9
    assert warmup_epochs(ref) == 0
    # A recipe an artifact recorded before the warm-up wait existed reads back as it ran.
    old = {k: v for k, v in config_to_dict(ref).items() if k != "stop_after_warmup"}
    assert recorded_config(old, "training.json").stop_after_warmup is False
    assert recorded_config(config_to_dict(default), "training.json") == default


@pytest.mark.timeout(120)
def test_an_epoch_budget_and_the_warm_up_reach_the_trainer_and_its_schedule(tiny_dataset_dir, tmp_path):
    # Patience 1 may stop a run at its second epoch; early stopping starts counting when the
    # warm-up (3 of 4 epochs) ends, so all 4 run. The budget makes each epoch 3 micro-batches
    # of 16 (48 of the 200 windows).
    cfg = TrainConfig(batch_size=16, accumulate_grad_batches=1, max_epochs=4, pct_start=0.75, early_stopping_patience=1,
                      epoch_windows=48, lr=2e-4, max_lr=1e-3)
    dm = TrendDataModule(tiny_dataset_dir, cfg.batch_size, seed=cfg.seed, epoch_windows=cfg.epoch_windows)
    module = TrendClassifier(model_config_from_metadata("tiny", dm.metadata), cfg, dm.class_counts_train(),
                             dm.train_batches_per_epoch())
    recorder = LrRecorder()
    callbacks = build_callbacks(cfg, tmp_path / "ckpt", with_progress=False, with_lr_monitor=False)
    (stopper,) = [c for c in callbacks if isinstance(c, EarlyStopping)]
    assert stopper.start_epoch == 3 and stopper.patience == 1
    trainer = build_trainer(cfg, tmp_path, accelerator="cpu", callbacks=[recorder, *callbacks], logger=False,
                            with_progress=False, num_sanity_val_steps=0)
    assert trainer.limit_train_batches == 3
    trainer.fit(module, datamodule=dm)
    assert len(module.history) == 4  # patience counted from the warm-up's end
    assert isinstance(trainer.train_dataloader.sampler, BudgetSampler) and len(trainer.train_dataloader.sampler) == 48
    assert module.lr_schedulers().total_steps == 3 * 4  # the schedule spans the budgeted epochs
    assert max(recorder.lrs) == pytest.approx(1e-3)
    ref = recipe("reference")
    assert early_stopping(ref).start_epoch == 0  # the reference counts from its first epoch
    plain = build_trainer(ref, tmp_path / "ref", accelerator="cpu", logger=False, with_progress=False)
    assert plain.limit_train_batches == 1.0


def test_the_epoch_budget_draws_its_windows_without_listing_the_dataset():
    """Each process's epoch: a fresh draw of the budget from its own shard, without
    replacement; its memory grows with the budget, not with the windows (100 million here:
    a permutation of them would be 800 MB as an array, some 3.6 GB as Python ints)."""
    import tracemalloc

    n, budget = 1001, 48
    draws = {}
    for rank in range(2):
        s = BudgetSampler(n, budget, seed=7, rank=rank, world_size=2)
        first = list(s)
        assert len(first) == len(s) == budget and len(set(first)) == budget
        assert all(0 <= i < n and (i % 2 == rank or i == 0) for i in first)  # its shard (rank 1's last wraps to 0)
        assert list(s) == first  # the same epoch, the same draw
        s.set_epoch(1)
        assert list(s) != first
        draws[rank] = set(first)
    assert len(draws[0] & draws[1]) <= 1  # disjoint shards, but for the one wrapped window
    assert len(BudgetSampler(10, 48, seed=7)) == 10  # a budget past the windows: every window once
    assert sorted(BudgetSampler(10, 48, seed=7)) == list(range(10))
    tracemalloc.start()
    big = BudgetSampler(100_000_000, 4096, seed=7, rank=1, world_size=2)
    got = list(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(set(got)) == 4096 and peak < 20 * 2**20, peak


def test_under_ddp_each_rank_draws_its_budget_from_its_own_shard(tiny_dataset_dir):
    """Where Lightning's DDP strategies (Ray Train's included) would inject a
    DistributedSampler, the budget's sampler is one, so it is left in place, sharded by rank."""
    from types import SimpleNamespace

    seen = []
    for rank in range(2):
        dm = TrendDataModule(tiny_dataset_dir, 16, seed=3, epoch_windows=40)
        dm.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        sampler = dm.train_dataloader().sampler
        assert isinstance(sampler, BudgetSampler) and (sampler.rank, sampler.num_replicas, len(sampler)) == (rank, 2, 40)
        seen.append(set(sampler))
    assert not seen[0] & seen[1]
    assert not isinstance(TrendDataModule(tiny_dataset_dir, 16).train_dataloader().sampler, BudgetSampler)
    # A draw one more than a multiple of the batch: its last batch of one is dropped (BatchNorm needs two).
    odd = TrendDataModule(tiny_dataset_dir, 16, seed=3, epoch_windows=33).train_dataloader()
    assert [len(b[1]) for b in odd] == [16, 16]
