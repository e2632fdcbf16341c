"""Turn the best training checkpoint into a self-contained model artifact.

The artifact holds everything serving and evaluation need (see
``stocktrend.inference.artifact``), so they never import training code or Ray.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stocktrend.data.store import atomic_write_text, read_metadata
from stocktrend.data.windows import distinct_last_days, window_batches
from stocktrend.inference.artifact import LATEST, MANIFEST, WEIGHTS, file_sha256
from stocktrend.inference.drift import block_null

log = logging.getLogger(__name__)
DRIFT_BINS = 10
DRIFT_ROWS = 200_000  # drift's reference rows: a seeded subset, in date order, past this (a universe's millions)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def feature_distribution(dataset_dir: Path, names: list[str]) -> dict[str, Any]:
    """Training distribution of each selected feature (its value on each window's last day,
    one per trading day): decile edges and bin shares, the reference for drift (PSI), and
    the drift thresholds per sample size from a block bootstrap over those days."""
    last_day, days = distinct_last_days(dataset_dir, "train", DRIFT_ROWS)  # (N, K), each day once, in date order
    features = []
    for k, name in enumerate(names):
        col = last_day[:, k]
        edges = np.unique(np.quantile(col, np.linspace(0, 1, DRIFT_BINS + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, col, side="right"), minlength=len(edges) + 1)
        features.append({
            "name": name, "mean": float(col.mean()), "std": float(col.std()),
            "edges": edges.tolist(), "shares": (counts / counts.sum()).tolist(),
        })
    null = block_null(last_day, [np.asarray(f["edges"]) for f in features], [np.asarray(f["shares"]) for f in features])
    unit = "(instrument, day) rows" if read_metadata(dataset_dir).get("layout") == "panel" else "trading days"
    sampled = f", a seeded subset of {DRIFT_ROWS:,} in date order" if len(last_day) == DRIFT_ROWS else ""
    return {"source": f"train split, last day of each window, scaled: one per {unit}{sampled}", "n": int(len(last_day)),
            "start": str(days[0])[:10], "end": str(days[-1])[:10], "features": features, "drift_null": null}


def validation_outputs(dataset_dir: Path, model_cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """How the exported model answers on its validation split: the reference levels that
    serving's monitoring compares live traffic against (share predicted up, confidence)."""
    from stocktrend.config_io import config_from_dict
    from stocktrend.models.config import ModelConfig
    from stocktrend.models.network import build_network

    model = build_network(config_from_dict(ModelConfig, model_cfg, "model config"))
    model.load_state_dict(state)
    model.eval()
    with torch.inference_mode():  # in batches cut as they are reached: a universe's split is millions of windows
        parts = [model(torch.from_numpy(x)).softmax(-1) for x in window_batches(dataset_dir, "val", 256)]
    if not parts:
        return {}
    probs = torch.cat(parts).numpy()
    return {"n": int(len(probs)), "share_up": float((probs.argmax(1) == 1).mean()),
            "mean_confidence": float(probs.max(1).mean())}


def _state_dict_of_network(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}


def export_artifact(
    checkpoint_path: str | Path,
    dataset_dir: str | Path,
    models_root: str | Path,
    name: str,
    history: list[dict[str, Any]] | None = None,
    version: str | None = None,
    extra: dict[str, Any] | None = None,
    make_latest: bool = True,
) -> Path:
    """Write ``models_root/name/version/`` atomically and point ``latest`` at it (unless
    ``make_latest`` is False: a retrained challenger is not the champion until promoted)."""
    dataset_dir = Path(dataset_dir).resolve()
    # Our own checkpoint, just written by our training run: full unpickling is safe here;
    # the artifact's weights file is then loadable with weights_only=True.
    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    meta = read_metadata(dataset_dir)
    history = history if history is not None else ckpt.get("history", [])
    metric = hp["train_cfg"]["selection_metric"]
    best_epoch = int(ckpt["epoch"])
    best = next((h for h in history if h.get("epoch") == best_epoch), {})
    version = version or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    selected = meta["features"]["selected"]

    parts = {
        "model": hp["model_cfg"],
        "preprocessing": {
            "data_config": meta["config"],
            "features": selected,
            "scaler": {"mean": meta["scaler"]["mean"], "std": meta["scaler"]["std"]},
            "seq_len": meta["seq_len"],
            "horizon": meta["horizon"],
            "n_classes": meta["n_classes"],
            "class_edges": meta["class_edges"],
            "bars_needed": meta["bars_needed"],
            "label": meta.get("label", "direction"),
            "label_rule": meta["label_rule"],
            "layout": meta.get("layout", "windows"),
            **({"tickers": meta["tickers"]} if meta.get("tickers") else {}),
            # The multi-task model's second target and its training-window standardisation:
            # what turns the network's output back into a volatility.
            **({"auxiliary": meta["auxiliary"]} if meta.get("auxiliary") and hp["model_cfg"].get("volatility_head")
               else {}),
        },
        "training": {
            "name": name,
            "version": version,
            "created": created,
            "git_commit": git_commit(),
            "train_config": hp["train_cfg"],
            "class_counts": hp["class_counts"],
            "selection_metric": metric,
            "best_epoch": best_epoch,
            "val_metrics": {k: v for k, v in best.items() if k.startswith("val_")},
            "val_outputs": validation_outputs(dataset_dir, hp["model_cfg"], _state_dict_of_network(ckpt)),
            "history": history,
            "dataset": {
                "fingerprint": meta["fingerprint"],
                "protocol": meta["protocol"],
                "splits": meta["splits"],
                "boundaries": meta["boundaries"],
                "sources": {k: {"sha256": v["sha256"], "start": v["start"], "end": v["end"],
                                **({"columns": v["columns"]} if "columns" in v else {})}
                            for k, v in meta["sources"].items()},
            },
            **(extra or {}),
        },
        "feature_distribution": feature_distribution(dataset_dir, selected),
    }

    model_dir = Path(models_root).resolve() / name
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / version
    if final.exists():
        raise FileExistsError(f"{final} already exists; artifacts are immutable, pick another version")
    tmp = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".{version}.tmp-"))
    tmp.chmod(0o755)
    try:
        torch.save(_state_dict_of_network(ckpt), tmp / WEIGHTS)
        for part, content in parts.items():
            (tmp / f"{part}.json").write_text(json.dumps(content, indent=2, default=float))
        files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps({"name": name, "version": version, "files": files}, indent=2))
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_latest:
        atomic_write_text(model_dir / LATEST, version + "\n")
    log.info("exported model artifact %s", final)
    return final


def publish_artifact(version_dir: Path, models_location: str) -> str:
    """Copy a finished artifact (with any reports written since) to object storage as
    ``<models_location>/<name>/<version>/``, then point that model's ``latest`` at it: a
    reader that follows ``latest`` never finds a version half-uploaded."""
    from stocktrend import storage

    version_dir = Path(version_dir)
    target = storage.join(models_location, version_dir.parent.name, version_dir.name)
    if storage.exists(storage.join(target, MANIFEST)):
        raise FileExistsError(f"{target} already exists; artifacts are immutable, pick another version")
    storage.upload_dir(version_dir, target, last=MANIFEST)
    storage.write_text(storage.join(models_location, version_dir.parent.name, LATEST), version_dir.name + "\n")
    log.info("published model artifact %s", target)
    return target
