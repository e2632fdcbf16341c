"""Training samples/s of one preset: a plain PyTorch loop, plain Lightning, Ray Train (1 worker).

Same data (the real dataset's training split), batch size, accumulation, clipping and
optimizer in all three; each times the same window of batches after a warm-up, in one run,
so the ratios are comparable on a noisy machine. Writes bench/results/train_throughput.json.

    python bench/train_throughput.py [--preset v2] [--batches 60] [--warmup 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402


class BatchTimer(pl.Callback):
    """Wall time of training batches warmup..warmup+n (optimizer work included)."""

    def __init__(self, warmup: int, n: int, out: str | None = None):
        self.warmup, self.n, self.out, self.t0, self.seconds = warmup, n, out, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.warmup + self.n - 1:
            self.seconds = time.perf_counter() - self.t0
            if self.out:
                Path(self.out).write_text(json.dumps({"seconds": self.seconds}))


def plain_loop(dataset, model_cfg, train_cfg, warmup, n) -> float:
    from stocktrend.models.network import TrendNet
    from stocktrend.training.datamodule import TrendDataModule
    from stocktrend.training.loss import build_loss

    dm = TrendDataModule(dataset, train_cfg.batch_size, 0, train_cfg.seed)
    dm.setup("fit")
    model = TrendNet(model_cfg).train()
    loss_fn = build_loss(train_cfg.class_weights, dm.class_counts_train(), train_cfg.label_smoothing)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    acc = train_cfg.accumulate_grad_batches
    t0 = None
    for i, (x, y) in enumerate(dm.train_dataloader()):
        if i == warmup:
            t0 = time.perf_counter()
        loss = loss_fn(model(x), y) / acc
        loss.backward()
        if (i + 1) % acc == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.gradient_clip_val)
            opt.step()
            opt.zero_grad()
        if i == warmup + n - 1:
            return time.perf_counter() - t0
    raise RuntimeError("not enough batches")


def lightning_fit(dataset, model_cfg, train_cfg, warmup, n, out_dir, extra_callbacks=(), **trainer_kw) -> BatchTimer:
    from stocktrend.training.callbacks import build_trainer
    from stocktrend.training.datamodule import TrendDataModule
    from stocktrend.training.module import TrendClassifier

    dm = TrendDataModule(dataset, train_cfg.batch_size, 0, train_cfg.seed)
    module = TrendClassifier(model_cfg, train_cfg, dm.class_counts_train(), dm.train_batches_per_epoch())
    timer = BatchTimer(warmup, n)
    trainer = build_trainer(train_cfg, out_dir, callbacks=[timer, *extra_callbacks], logger=False, with_progress=False,
                            max_epochs=1, limit_train_batches=warmup + n, limit_val_batches=0,
                            enable_checkpointing=False, **trainer_kw)
    trainer.fit(module, datamodule=dm)
    return timer


def ray_worker(config):
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, prepare_trainer  # noqa: F401

    from stocktrend.config_io import config_from_dict
    from stocktrend.models.config import ModelConfig
    from stocktrend.training.config import TrainConfig

    torch.set_num_threads(config["threads"])
    timer = lightning_fit(config["dataset"], config_from_dict(ModelConfig, config["model"]),
                          config_from_dict(TrainConfig, config["train"]), config["warmup"], config["n"],
                          config["out"], strategy=RayDDPStrategy(), plugins=[RayLightningEnvironment()])
    Path(config["out"], "timing.json").write_text(json.dumps({"seconds": timer.seconds}))


def ray_fit(dataset, model_cfg, train_cfg, warmup, n, out_dir, threads) -> float:
    import ray.train
    from ray.train.torch import TorchTrainer

    from stocktrend.cluster.connect import connect
    from stocktrend.config_io import config_to_dict

    connect(num_cpus=os.cpu_count())
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={"dataset": str(dataset), "model": config_to_dict(model_cfg), "train": config_to_dict(train_cfg),
                           "warmup": warmup, "n": n, "out": str(out_dir), "threads": threads},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": threads}),
        run_config=ray.train.RunConfig(name="bench", storage_path=str(Path(out_dir).resolve() / "ray")),
    )
    trainer.fit()
    return json.loads(Path(out_dir, "timing.json").read_text())["seconds"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="v2")
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from stocktrend.data.cache import build_cached
    from stocktrend.data.config import load_data_config
    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata
    from stocktrend.training.config import TrainConfig

    torch.set_num_threads(args.threads)
    dataset = build_cached(load_data_config(ROOT / "datasets" / "msft_v2.yaml"), ROOT / "datasets" / "cache")
    model_cfg = model_config_from_metadata(args.preset, read_metadata(dataset))
    train_cfg = TrainConfig()  # the recipe: batch 16 x accumulate 4, clip 1.0, AdamW
    n, warm, samples = args.batches, args.warmup, args.batches * train_cfg.batch_size
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["plain_pytorch"] = samples / plain_loop(dataset, model_cfg, train_cfg, warm, n)
        results["lightning"] = samples / lightning_fit(dataset, model_cfg, train_cfg, warm, n, Path(tmp) / "l").seconds
        results["ray_train_1_worker"] = samples / ray_fit(dataset, model_cfg, train_cfg, warm, n, Path(tmp) / "r",
                                                          args.threads)
    out = {"benchmark": "train_throughput", "preset": args.preset, "batch_size": train_cfg.batch_size,
           "accumulate_grad_batches": train_cfg.accumulate_grad_batches, "timed_batches": n, "warmup_batches": warm,
           "threads": args.threads, "samples_per_s": results,
           "ratio_to_plain": {k: v / results["plain_pytorch"] for k, v in results.items()}, "machine": machine_info()}
    path = ROOT / "bench" / "results" / "train_throughput.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
