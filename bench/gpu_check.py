"""GPU check stages, run one at a time by bench/gpu_check.sh (PYTHONPATH=src, no Ray needed).

    python bench/gpu_check.py train_steps [--epochs 3] [--dataset DIR] [--allow-cpu]
    python bench/gpu_check.py inference [--allow-cpu]

``train_steps`` (bench/results/gpu_train.json), in one process on one GPU:
- the bare eager loop (AdamW, cross-entropy, clipping) at batch 16 and 64, fp32 with TF32
  matmuls and bf16 autocast: the measured reason behind the DevicePlan's precision;
- the same step captured in one CUDA graph (training/graph_step.py), or the miss's reason,
  and what torch.compile's tracer makes of the network (its graph breaks);
- the project's fit (fit_local) three ways, training and validation timed apart:
  today's path at 16 x 4 (DataLoader, per-step metrics, plain AdamW), the GPU plan keeping
  16 x 4, and the GPU plan's single step of 64; the validation loss of the last two is the
  measured effect of dropping the accumulation.
``inference``: eager batched inference of the v2 network (bench/results/gpu_inference.json).

Data: ``--dataset``, else datasets/npy when built, else random data of the real shape (5,400
training windows of 30 x 50; on random labels the validation-loss comparison shows only that
both fits behave alike). Without CUDA a stage refuses (exit 1) unless ``--allow-cpu``, a dry
run at tiny sizes that checks the script, not the card. Each stage rewrites its JSON as
each part finishes, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402


def random_dataset(root: Path, n_train=5400, n_val=630, seq_len=30, k=50) -> Path:
    rng = np.random.default_rng(0)
    day = np.datetime64("2000-01-03")
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        x = rng.standard_normal((n, seq_len, k)).astype(np.float32)
        y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, n)]
        dates = np.busday_offset(day, np.arange(n), roll="forward").astype("datetime64[D]")
        day = np.busday_offset(dates[-1], 40)
        for name, arr in (("X", x), ("y", y), ("dates", dates)):
            np.save(root / f"{split}_{name}.npy", arr)
        splits[split] = {"n": n, "class_counts": y.sum(0).astype(int).tolist()}
    meta = {"seq_len": seq_len, "horizon": 5, "n_classes": 2, "features": {"selected": [f"f{i}" for i in range(k)]},
            "splits": splits}
    (root / "metadata.json").write_text(json.dumps(meta))
    return root


def write_json(path: Path, out: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2, default=str))
    os.replace(tmp, path)


def device_or_refuse(allow_cpu: bool) -> torch.device | None:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if allow_cpu:
        print("no CUDA device: dry run on the CPU at tiny sizes (checks the script, measures nothing)", file=sys.stderr)
        return torch.device("cpu")
    print("no CUDA device visible (torch.cuda.is_available() is False): this check needs an NVIDIA GPU; "
          "--allow-cpu runs a tiny dry run on the CPU instead", file=sys.stderr)
    return None


def header(dev: torch.device, stage: str) -> dict[str, Any]:
    return {"stage": stage, "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu (dry run)",
            "dry_run": dev.type != "cuda", "machine": machine_info()}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def rate(run: Callable[[], object], batch: int, steps: int, warmup: int, dev: torch.device) -> dict[str, float]:
    for _ in range(warmup):
        run()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    sync(dev)
    dt = (time.perf_counter() - t0) / steps
    return {"ms_per_step": round(dt * 1e3, 3), "samples_per_s": round(batch / dt, 1)}


# -- train_steps -----------------------------------------------------------------------


class EpochClock:
    """Lightning callback: each epoch's wall time in three parts, the device synchronised at
    every boundary: training batches (epoch start to validation start), validation, and the
    rest (checkpoint writing, epoch-end metrics; validation's end to the next epoch's start)."""

    def __init__(self, dev: torch.device):
        import lightning.pytorch as pl

        clock = self

        class _Clock(pl.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                clock._close_epoch()
                clock._marks = {"start": clock._now()}

            def on_validation_start(self, trainer, pl_module):
                if not trainer.sanity_checking and clock._marks:
                    clock._marks["val_start"] = clock._now()

            def on_validation_end(self, trainer, pl_module):
                if not trainer.sanity_checking and clock._marks:
                    clock._marks["val_end"] = clock._now()

            def on_train_end(self, trainer, pl_module):
                clock._close_epoch()

        self.dev, self.callback = dev, _Clock()
        self.train_s: list[float] = []
        self.val_s: list[float] = []
        self.rest_s: list[float] = []
        self._marks: dict[str, float] = {}

    def _now(self) -> float:
        sync(self.dev)
        return time.perf_counter()

    def _close_epoch(self) -> None:
        if not self._marks:
            return
        end = self._now()
        m, self._marks = self._marks, {}
        val_start, val_end = m.get("val_start", end), m.get("val_end", end)
        self.train_s.append(val_start - m["start"])
        self.val_s.append(val_end - val_start)
        self.rest_s.append(end - val_end)


def bare_loop(model_cfg, dev: torch.device, batches: tuple[int, ...], steps: int, warmup: int) -> dict[str, Any]:
    from stocktrend.models.network import build_network
    from stocktrend.training.graph_step import bare_step

    out: dict[str, Any] = {}
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    for precision in ("fp32-tf32", "bf16-autocast"):
        for batch in batches:
            torch.manual_seed(0)
            model = build_network(model_cfg).to(dev).train()
            opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=5e-3, fused=dev.type == "cuda")
            step = bare_step(model, loss_fn, opt, clip=1.0)
            x = torch.randn(batch, model_cfg.seq_len, model_cfg.n_features, device=dev)
            y = torch.randint(0, model_cfg.n_classes, (batch,), device=dev)
            autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16-autocast"
                        else contextlib.nullcontext())

            def run(step=step, x=x, y=y, autocast=autocast):
                with autocast:
                    return step(x, y)

            out[f"{precision}_batch_{batch}"] = rate(run, batch, steps, warmup, dev)
    return out


def captured_step(model_cfg, dev: torch.device, batches: tuple[int, ...], steps: int) -> dict[str, Any]:
    from stocktrend.models.network import build_network
    from stocktrend.training.graph_step import capture_train_step, explain_compile

    out: dict[str, Any] = {}
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    for batch in batches:
        torch.manual_seed(0)
        model = build_network(model_cfg).to(dev).train()
        x = torch.randn(batch, model_cfg.seq_len, model_cfg.n_features, device=dev)
        y = torch.randint(0, model_cfg.n_classes, (batch,), device=dev)
        cap = capture_train_step(model, loss_fn, x, y, lr=2e-4, clip=1.0, weight_decay=5e-3)
        entry: dict[str, Any] = {"captured": cap.captured, "reason": cap.reason}
        if cap.step is not None:
            entry.update(rate(lambda step=cap.step, x=x, y=y: step(x, y), batch, steps, 3, dev))
        out[f"batch_{batch}"] = entry
    torch.manual_seed(0)
    model = build_network(model_cfg).to(dev).train()
    x = torch.randn(batches[0], model_cfg.seq_len, model_cfg.n_features, device=dev)
    y = torch.randint(0, model_cfg.n_classes, (batches[0],), device=dev)
    out["torch_compile_trace"] = explain_compile(lambda a, b: torch.nn.functional.cross_entropy(model(a), b), x, y)
    return out


def project_fits(dataset: Path, model_cfg, dev: torch.device, epochs: int, work: Path,
                 save: Callable[[str, dict], None]) -> dict[str, Any]:
    from stocktrend.data.store import read_metadata
    from stocktrend.training.config import TrainConfig
    from stocktrend.training.device import plan_for
    from stocktrend.training.fit_local import fit_local

    n_train = read_metadata(dataset)["splits"]["train"]["n"]
    recipe = TrainConfig(max_epochs=epochs)  # 16 x 4, fp32: the recipe
    plans = {
        "today_16x4": plan_for("cpu", recipe),  # the config as written, DataLoader, per-step metrics
        "planned_16x4": plan_for("cuda", TrainConfig(max_epochs=epochs, gpu_single_step=False)),
        "planned_single_step": plan_for("cuda", recipe),
    }
    results: dict[str, Any] = {}
    for name, plan in plans.items():
        if dev.type != "cuda":  # the dry run: TF32 is a CUDA setting, leave the CPU's matmuls alone
            plan = dataclasses.replace(plan, matmul_precision=None)
        # Today's path never set the matmul precision: measure it at PyTorch's default.
        torch.set_float32_matmul_precision(plan.matmul_precision or "highest")
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        clock = EpochClock(dev)
        t0 = time.perf_counter()
        res = fit_local(dataset, model_cfg, recipe, work / name, progress=False, plan=plan,
                        extra_callbacks=[clock.callback], accelerator=dev.type, devices=1)
        wall = time.perf_counter() - t0
        steady = clock.train_s[1:] or clock.train_s  # epoch 0 pays cuDNN planning and warm-up
        entry = {
            "micro_batch": plan.micro_batch, "accumulate": plan.accumulate, "precision": plan.precision,
            "fused_optimizer": plan.fused_optimizer, "device_data": plan.device_data,
            "deferred_metrics": plan.deferred_metrics, "matmul_precision": plan.matmul_precision,
            "epochs": len(clock.train_s), "wall_s": round(wall, 2),
            "train_s_per_epoch": [round(t, 3) for t in clock.train_s],
            "val_s_per_epoch": [round(t, 3) for t in clock.val_s],
            "epoch_end_s_per_epoch": [round(t, 3) for t in clock.rest_s],  # checkpoints, epoch metrics
            "train_samples_per_s": round(n_train * len(steady) / sum(steady), 1) if sum(steady) else None,
            "val_ce_per_epoch": [h.get("val_ce") for h in res["history"]],
            "best_val_ce": res["best_score"], "best_epoch": res["best_epoch"],
        }
        if dev.type == "cuda":
            entry["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        results[name] = entry
        save(name, entry)
    a, b = results["planned_16x4"], results["planned_single_step"]
    results["val_loss_effect"] = {
        "best_val_ce_16x4": a["best_val_ce"], "best_val_ce_single_step": b["best_val_ce"],
        "single_minus_16x4": b["best_val_ce"] - a["best_val_ce"],
        "final_val_ce_16x4": a["val_ce_per_epoch"][-1], "final_val_ce_single_step": b["val_ce_per_epoch"][-1],
        "speedup_train": (round(b["train_samples_per_s"] / a["train_samples_per_s"], 2)
                          if a["train_samples_per_s"] and b["train_samples_per_s"] else None),
    }
    return results


def train_steps(args: argparse.Namespace) -> int:
    dev = device_or_refuse(args.allow_cpu)
    if dev is None:
        return 1
    work = Path(tempfile.mkdtemp(prefix="gpu_train_"))
    try:
        return _train_steps(args, dev, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # random data and the fits' checkpoints (v2: ~100 MB a fit)


def _train_steps(args: argparse.Namespace, dev: torch.device, work: Path) -> int:
    from stocktrend.data.store import read_metadata
    from stocktrend.models.config import model_config_from_metadata

    dry = dev.type != "cuda"
    real = ROOT / "datasets" / "npy"
    if args.dataset:
        dataset, kind = Path(args.dataset), "given"
    elif (real / "metadata.json").is_file() and not dry:
        dataset, kind = real, "datasets/npy"
    else:
        sizes = {"n_train": 256, "n_val": 64, "seq_len": 12, "k": 6} if dry else {}
        dataset, kind = random_dataset(work, **sizes), "random"
    epochs = 1 if dry else args.epochs
    model_cfg = model_config_from_metadata("tiny" if dry else "v2", read_metadata(dataset))
    path = Path(args.out or RESULTS / "gpu_train.json")
    out = header(dev, "train_steps")
    out.update({"dataset": kind, "dataset_dir": str(dataset) if kind != "random" else None, "preset": "tiny" if dry else "v2",
                "n_train": read_metadata(dataset)["splits"]["train"]["n"], "epochs": epochs})
    write_json(path, out)

    if dev.type == "cuda":
        torch.set_float32_matmul_precision("high")  # the plan's TF32, for the bare loop as for the fits
    steps, warmup = (3, 1) if dry else (50, 10)
    out["bare_loop"] = bare_loop(model_cfg, dev, (16, 64), steps, warmup)
    write_json(path, out)
    out["captured_step"] = captured_step(model_cfg, dev, (16, 64), steps)
    write_json(path, out)

    out["fit"] = {}

    def save(name: str, entry: dict) -> None:
        out["fit"][name] = entry
        write_json(path, out)

    out["fit"] = project_fits(dataset, model_cfg, dev, epochs, work, save)
    write_json(path, out)
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2, default=str))
    return 0


# -- inference -------------------------------------------------------------------------


def inference(args: argparse.Namespace) -> int:
    from stocktrend.models.config import preset
    from stocktrend.models.network import TrendNet

    dev = device_or_refuse(args.allow_cpu)
    if dev is None:
        return 1
    dry = dev.type != "cuda"
    cfg = preset("tiny" if dry else "v2", seq_len=30, n_features=50)
    model = TrendNet(cfg).to(dev).eval()
    path = Path(args.out or RESULTS / "gpu_inference.json")
    out = header(dev, "inference")
    for batch in (1, 64) if dry else (1, 64, 1024):
        x = torch.randn(batch, cfg.seq_len, cfg.n_features, device=dev)
        with torch.inference_mode():
            r = rate(lambda x=x: model(x), batch, 3 if dry else 50, 1 if dry else 10, dev)
        out[f"eager_batch_{batch}"] = {"latency_ms": r["ms_per_step"], "samples_per_s": r["samples_per_s"]}
        write_json(path, out)
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=2))
    return 0


STAGES = {"train_steps": train_steps, "inference": inference}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].isdigit():  # the older call, ``gpu_check.py EPOCHS``: both stages
        return main(["train_steps", "--epochs", argv[0], *argv[1:]]) or main(["inference", *argv[1:]])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each fit in train_steps (default 3)")
    parser.add_argument("--dataset", help="a built dataset folder (default: datasets/npy, else random data)")
    parser.add_argument("--out", help="the JSON to write (default: bench/results/gpu_<stage>.json)")
    parser.add_argument("--allow-cpu", action="store_true", help="without CUDA, a tiny dry run instead of refusing")
    args = parser.parse_args(argv)
    return STAGES[args.stage](args)


if __name__ == "__main__":
    sys.exit(main())
