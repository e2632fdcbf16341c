"""Training on a GPU, checked on the CPU: the device plan per device type, the out-of-memory
fallback (with a real OutOfMemoryError), device-resident batches against the DataLoader and
DistributedSampler they replace, metrics gathered on the device, the fused optimizer choice,
the per-trial memory bound and the step capture's honest miss. The card itself is measured by
bench/gpu_check.py (train_steps)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from stocktrend.models.config import model_config_from_metadata, preset
from stocktrend.models.network import build_network
from stocktrend.training.callbacks import build_trainer
from stocktrend.training.config import TrainConfig
from stocktrend.training.datamodule import DeviceBatches, EpochOrder, PanelWindowDataset, TrendDataModule
from stocktrend.training.device import (
    DeviceMemoryFloorError,
    apply_backend_settings,
    bound_gpu_memory,
    fit_with_oom_fallback,
    plan_after_oom,
    plan_for,
    resolve_device_type,
)
from stocktrend.training.fit_local import fit_local
from stocktrend.training.graph_step import capture_train_step, explain_compile
from stocktrend.training.module import StageMetrics, TrendClassifier

pytestmark = pytest.mark.timeout(120)
HAS_CUDA = torch.cuda.is_available()


def cuda_plan_on_cpu(train_cfg: TrainConfig):
    """The CUDA plan, run on the CPU: everything but the TF32 switch (a CUDA setting)."""
    return dataclasses.replace(plan_for("cuda", train_cfg), matmul_precision=None)


# -- the plan -------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [TrainConfig(), TrainConfig(batch_size=64, accumulate_grad_batches=2,
                                                             precision="bf16-mixed", gpu_single_step=False)])
def test_the_cpu_plan_is_the_config_as_written(cfg):
    plan = plan_for("cpu", cfg)
    assert (plan.micro_batch, plan.accumulate, plan.precision) == (cfg.batch_size, cfg.accumulate_grad_batches,
                                                                    cfg.precision)
    assert not (plan.fused_optimizer or plan.device_data or plan.deferred_metrics) and plan.matmul_precision is None


def test_the_cuda_plan_runs_the_effective_batch_in_one_fused_step_in_fp32_for_a_measured_reason():
    plan = plan_for("cuda", TrainConfig())
    assert (plan.micro_batch, plan.accumulate, plan.effective_batch, plan.precision) == (64, 1, 64, "32-true")
    assert plan.fused_optimizer and plan.device_data and plan.deferred_metrics and plan.matmul_precision == "high"
    assert "2,186" in plan.reason and "bf16" in plan.reason  # the H100 table it rests on
    assert "not captured" in plan.reason  # the step capture's miss, with its reason
    kept = plan_for("cuda", TrainConfig(gpu_single_step=False))
    assert (kept.micro_batch, kept.accumulate) == (16, 4) and kept.fused_optimizer
    bf16 = plan_for("cuda", TrainConfig(precision="bf16-mixed"))
    assert bf16.precision == "bf16-mixed" and "config says so" in bf16.reason  # the config's precision wins


def test_the_mps_plan_is_fp32_in_one_step_without_fused_or_tf32():
    plan = plan_for("mps", TrainConfig())
    assert (plan.micro_batch, plan.accumulate, plan.precision) == (64, 1, "32-true")
    assert not plan.fused_optimizer and plan.matmul_precision is None and plan.device_data


def test_device_types_are_resolved_or_refused():
    assert resolve_device_type("cpu") == "cpu"
    mps = torch.backends.mps.is_available()
    assert resolve_device_type("auto") == ("cuda" if HAS_CUDA else "mps" if mps else "cpu")
    with pytest.raises(ValueError, match="knows cpu, cuda"):
        resolve_device_type("tpu")
    with pytest.raises(ValueError, match="no training plan"):
        plan_for("xla", TrainConfig())
    if not (HAS_CUDA or mps):
        with pytest.raises(ValueError, match="neither CUDA nor MPS"):
            resolve_device_type("gpu")


def test_build_trainer_takes_precision_and_accumulation_from_the_plan(tmp_path):
    cfg = TrainConfig()
    quiet = dict(accelerator="cpu", callbacks=[], logger=False, with_progress=False, enable_checkpointing=False)
    assert build_trainer(cfg, tmp_path, **quiet).accumulate_grad_batches == 4
    assert build_trainer(cfg, tmp_path, plan=cuda_plan_on_cpu(cfg), **quiet).accumulate_grad_batches == 1
    before = torch.get_float32_matmul_precision()
    try:
        apply_backend_settings(plan_for("cuda", cfg))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)


# -- out of memory ----------------------------------------------------------------------


def test_after_oom_the_micro_batch_halves_and_the_effective_batch_stays():
    plan = plan_for("cuda", TrainConfig())
    steps = []
    while True:
        try:
            plan = plan_after_oom(plan)
        except DeviceMemoryFloorError as err:
            assert "micro-batch 1 x 64" in str(err)
            break
        steps.append((plan.micro_batch, plan.accumulate))
    assert steps == [(32, 2), (16, 4), (8, 8), (4, 16), (2, 32), (1, 64)]
    assert "out of memory at micro-batch 64, so 32 x 2" in plan.reason
    # An effective batch that is not a power of two: micro-batches stay its divisors.
    plan, sizes = plan_for("cuda", TrainConfig(batch_size=16, accumulate_grad_batches=3)), []
    with pytest.raises(DeviceMemoryFloorError):
        while True:
            plan = plan_after_oom(plan)
            sizes.append((plan.micro_batch, plan.accumulate))
    assert sizes == [(24, 2), (12, 4), (6, 8), (3, 16), (1, 48)]
    with pytest.raises(DeviceMemoryFloorError, match="may not go below micro-batch 64"):
        plan_after_oom(plan_for("cuda", TrainConfig()), min_micro_batch=64)


def oom(micro_batch: int) -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (micro-batch {micro_batch})")


def test_the_fallback_refits_from_scratch_until_it_fits():
    tried = []

    def run(plan):
        tried.append(plan.micro_batch)
        if plan.micro_batch > 16:
            raise oom(plan.micro_batch)
        return "fitted"

    result, plan = fit_with_oom_fallback(run, plan_for("cuda", TrainConfig()))
    assert result == "fitted" and tried == [64, 32, 16] and (plan.micro_batch, plan.accumulate) == (16, 4)
    with pytest.raises(DeviceMemoryFloorError) as info:  # past the floor: a clear error, the OOM as its cause
        fit_with_oom_fallback(run, plan_for("cuda", TrainConfig()), min_micro_batch=32)
    assert isinstance(info.value.__context__, torch.cuda.OutOfMemoryError)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # a DDP rank does not step down alone
        fit_with_oom_fallback(run, plan_for("cuda", TrainConfig()), world_size=2)


class OutOfMemoryAbove(pl.Callback):
    """Raises a real OutOfMemoryError on the first batch larger than ``limit``."""

    def __init__(self, limit: int):
        self.limit, self.sizes = limit, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.sizes.append(len(batch[1]))
        if len(batch[1]) > self.limit:
            raise oom(len(batch[1]))


@pytest.mark.timeout(180)
def test_fit_local_steps_down_on_oom_with_device_resident_data(tiny_dataset_dir, tmp_path):
    """The GPU plan on the CPU through Lightning: device-resident batches, fused AdamW,
    metrics gathered until the epoch ends; the first fit runs out of memory at 64 x 1 and
    the refit at 32 x 2 completes."""
    cfg = TrainConfig(batch_size=32, accumulate_grad_batches=2, max_epochs=2, milestone_every=1)
    model_cfg = model_config_from_metadata("tiny", TrendDataModule(tiny_dataset_dir).metadata)
    guard = OutOfMemoryAbove(32)
    res = fit_local(tiny_dataset_dir, model_cfg, cfg, tmp_path / "run", progress=False, plan=cuda_plan_on_cpu(cfg),
                    extra_callbacks=[guard], accelerator="cpu")
    assert guard.sizes[0] == 64 and set(guard.sizes[1:]) <= {32, 200 % 32}
    assert (res["device_plan"]["micro_batch"], res["device_plan"]["accumulate"]) == (32, 2)
    assert len(res["history"]) == 2 and math.isfinite(res["history"][-1]["val_ce"])
    assert np.array(res["history"][-1]["val_confmat"]).sum() == 64  # every val window scored once
    assert np.array(res["history"][-1]["train_confmat"]).sum() == 200
    ckpt = torch.load(res["best_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["device_plan"]["micro_batch"] == 32


# -- device-resident data ------------------------------------------------------------------


def batches(loader) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(t.clone() for t in b) for b in loader]


def test_device_batches_are_the_dataloaders_batches_in_the_same_order(tiny_dataset_dir):
    plain = TrendDataModule(tiny_dataset_dir, 16, seed=7)
    resident = TrendDataModule(tiny_dataset_dir, 16, seed=7, device_resident=True)
    loaders = plain.train_dataloader(), resident.train_dataloader()
    assert isinstance(loaders[1], DeviceBatches) and len(loaders[0]) == len(loaders[1]) == math.ceil(200 / 16)
    for _epoch in range(2):  # the second epoch's order too (the generator runs on)
        want, got = batches(loaders[0]), batches(loaders[1])
        assert len(want) == len(got)
        for w, g in zip(want, got, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(w, g, strict=True))
    val = batches(plain.val_dataloader()), batches(resident.val_dataloader())
    assert all(torch.equal(a, b) for w, g in zip(*val, strict=True) for a, b in zip(w, g, strict=True))
    # The BatchNorm rule: a last batch of one sample is dropped, as the DataLoader drops it.
    odd = TrendDataModule(tiny_dataset_dir, 199, seed=7, device_resident=True)
    assert len(odd.train_dataloader()) == len(TrendDataModule(tiny_dataset_dir, 199).train_dataloader()) == 1


@pytest.mark.parametrize("n,world,shuffle", [(201, 2, True), (200, 2, False), (3, 8, True), (64, 3, True)])
def test_sharded_order_is_distributed_samplers(n, world, shuffle):
    rows = list(range(n))
    for epoch in range(2):
        covered = []
        for rank in range(world):
            sampler = DistributedSampler(rows, num_replicas=world, rank=rank, shuffle=shuffle, seed=5)
            order = EpochOrder(n, shuffle, seed=5, rank=rank, world_size=world)
            sampler.set_epoch(epoch)
            order.set_epoch(epoch)
            assert list(order) == list(sampler) and len(order) == len(sampler) == math.ceil(n / world)
            covered += list(order)
        assert set(covered) == set(rows)


def test_the_datamodule_shards_where_lightning_would(tiny_dataset_dir):
    """Under a DDP strategy (Ray's too) each rank gets its DistributedSampler shard."""
    counted = []
    for rank in range(2):
        dm = TrendDataModule(tiny_dataset_dir, 64, seed=3, device_resident=True)
        dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")),
                                     distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        got = batches(loader)
        assert len(got) == len(loader) == math.ceil(math.ceil(200 / 2) / 64)
        counted.append(torch.cat([b[1] for b in got]))
        want_sampler = DistributedSampler(range(200), num_replicas=2, rank=rank, shuffle=True, seed=3)
        want_sampler.set_epoch(1)
        want = list(want_sampler)
        labels = dm.datasets["train"].labels
        assert torch.equal(counted[-1], labels[want])
    assert sum(len(c) for c in counted) == 200


def test_panel_windows_are_cut_on_the_device_as_on_the_host(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((3, 40, 5)).astype(np.float32)  # (instruments, days, K)
    np.save(tmp_path / "features.npy", features)
    index = np.array([[0, 9], [2, 39], [1, 20], [0, 30]])
    ds = PanelWindowDataset(tmp_path / "features.npy", index, np.array([0, 1, 1, 0]), seq_len=10,
                            aux=np.array([0.1, 0.2, 0.3, 0.4], np.float32))
    split = ds.to_device("cpu")
    x, y, aux = split.take(torch.tensor([3, 0, 2]))
    assert x.shape == (3, 10, 5)
    for row, i in enumerate([3, 0, 2]):
        want = ds[i]
        assert torch.equal(x[row], want[0]) and y[row] == want[1] and aux[row] == want[2]


# -- metrics, optimizer --------------------------------------------------------------------


@pytest.mark.parametrize("n_classes,vol", [(2, False), (3, True)])
def test_metrics_gathered_on_the_device_equal_the_per_step_ones(n_classes, vol):
    torch.manual_seed(0)
    eager, deferred = StageMetrics(n_classes, vol), StageMetrics(n_classes, vol, deferred=True)
    for size in (16, 16, 7):
        logits, target = torch.randn(size, n_classes), torch.randint(0, n_classes, (size,))
        loss = torch.rand(())
        v = (torch.randn(size), torch.randn(size)) if vol else None
        eager.update(logits, target, loss, v)
        deferred.update(logits, target, loss, v)
    want, got = eager.compute(), deferred.compute()
    assert want.keys() == got.keys()
    for k in want:
        assert np.allclose(want[k], got[k], rtol=1e-5, atol=1e-6), k
    deferred.reset()
    assert deferred._pending == []


def test_fused_adamw_where_the_plan_says_so(tiny_dataset_dir):
    dm = TrendDataModule(tiny_dataset_dir)
    model_cfg = model_config_from_metadata("tiny", dm.metadata)
    cfg = TrainConfig(max_epochs=3)
    plans = {"none": None, "cpu": plan_for("cpu", cfg), "cuda": cuda_plan_on_cpu(cfg)}
    for name, plan in plans.items():
        module = TrendClassifier(model_cfg, cfg, [100, 100], steps_per_epoch=13, plan=plan)
        opt = module.configure_optimizers()["optimizer"]
        assert opt.defaults["fused"] is (True if name == "cuda" else None), name
        assert module.train_metrics.deferred is (name == "cuda")
        # The schedule without a Trainer counts optimizer steps with the plan's accumulation.
        assert module.total_optimizer_steps() == (13 * 3 if name == "cuda" else math.ceil(13 / 4) * 3)


# -- packed trials, capture ----------------------------------------------------------------


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-GPU answer")
def test_memory_bound_is_a_reported_no_op_without_cuda():
    assert bound_gpu_memory(0.25) == "not bounded: no CUDA device visible to this process"
    with pytest.raises(ValueError, match="> 0"):
        bound_gpu_memory(0)


def test_step_capture_misses_on_the_cpu_with_its_reason_and_compile_breaks_at_the_lstm():
    net = build_network(preset("tiny", n_features=6, seq_len=12)).train()
    x, y = torch.randn(8, 12, 6), torch.randint(0, 2, (8,))
    cap = capture_train_step(net, torch.nn.CrossEntropyLoss(), x, y)
    assert not cap.captured and cap.step is None and cap.reason.startswith("not captured: CUDA graphs need")
    trace = explain_compile(lambda a, b: torch.nn.functional.cross_entropy(net(a), b), x, y)
    assert trace.get("graph_breaks", 0) >= 1 and any("LSTM" in r for r in trace["break_reasons"]), trace


# -- the bench stage -----------------------------------------------------------------------


@pytest.mark.skipif(HAS_CUDA, reason="on a GPU the stage measures the card (minutes)")
def test_gpu_check_refuses_without_a_gpu_and_dry_runs_on_the_cpu(tmp_path, capsys):
    from bench import gpu_check

    out = tmp_path / "gpu_train.json"
    assert gpu_check.main(["train_steps", "--out", str(out)]) == 1
    assert "needs an NVIDIA GPU" in capsys.readouterr().err and not out.exists()
    assert gpu_check.main(["train_steps", "--allow-cpu", "--out", str(out)]) == 0
    res = json.loads(Path(out).read_text())
    assert res["dry_run"] and set(res["fit"]) == {"today_16x4", "planned_16x4", "planned_single_step",
                                                   "val_loss_effect"}
    assert res["fit"]["planned_single_step"]["micro_batch"] == 64
    assert not res["captured_step"]["batch_64"]["captured"]
