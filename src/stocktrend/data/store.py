"""Writing dataset artifacts atomically, their metadata and fingerprints (the build cache is ``cache``)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from stocktrend.config_io import config_to_dict
from stocktrend.data.config import DataConfig
from stocktrend.data.sources import sha256_of
from stocktrend.storage import RemotePath, is_remote

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
# Longest look-back of any feature (250-day return, 250-day range) plus slack; EWM-based
# features also need a burn-in before values computed from a short history match those
# computed from the full history to ~1e-8.
FEATURE_LOOKBACK = 260
EWM_BURN_IN = 500


PACKAGE = Path(__file__).resolve().parents[1]  # src/stocktrend
# Modules of the data package that a build never runs: the synthetic-market writers (they
# write input files, which are hashed as inputs), the bundle shipping files to trials, the
# summary printer. tests/test_data_build.py checks that a build imports nothing else of ours.
NOT_BUILD_CODE = ("data/bundle.py", "data/summary.py", "data/synthetic.py", "data/synthetic_files.py")


def build_code_files(package: Path = PACKAGE) -> list[Path]:
    """The source files whose code decides a dataset's contents."""
    files = [package / "config_io.py", package / "storage.py", *sorted((package / "data").glob("*.py"))]
    return [f for f in files if f.relative_to(package).as_posix() not in NOT_BUILD_CODE]


@functools.lru_cache(maxsize=4)
def code_fingerprint(package: Path = PACKAGE) -> str:
    """Hash of the build code's source: a change to features, labels, splits or fitting makes
    a new dataset (no version constant for anyone to forget to bump)."""
    h = hashlib.sha256()
    for f in build_code_files(package):
        h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _file_name(path: str) -> str:
    """A source's file name: where it lies is not what it holds (an object-storage URI's query,
    its endpoint, left out too)."""
    return RemotePath(path).name if is_remote(path) else Path(path).name


def fingerprint(cfg: DataConfig) -> str:
    """Hash of the config, the input files' contents and the build code's source."""
    conf = config_to_dict(cfg)
    conf.pop("base_dir")
    # Keys added with panels, at their defaults, are left out: single-stock fingerprints
    # (and so cached datasets and the datasets artifacts record) stay what they were.
    for key, default in (("panel", None), ("label", "direction"), ("index", None), ("auxiliary", "none")):
        if conf.get(key) == default:
            conf.pop(key, None)
    conf["sources"] = {k: {**v, "path": _file_name(v["path"])} for k, v in conf["sources"].items()}
    inputs = {k: sha256_of(cfg.source_path(k)) for k in sorted(cfg.sources)}
    if cfg.panel is not None:  # a files/folder panel's member files are inputs too
        from stocktrend.data.panel import member_files

        inputs |= {f"panel:{t}": sha256_of(p) for t, p in sorted(member_files(cfg).items())}
        if conf["panel"].get("folder"):
            conf["panel"]["folder"] = Path(conf["panel"]["folder"]).name
        conf["panel"]["files"] = {t: Path(p).name for t, p in conf["panel"]["files"].items()}
        for how in ("build", "chunk"):  # how it is built, not what: every build writes the same dataset
            conf["panel"].pop(how, None)
        if conf["panel"].get("membership"):  # the table's contents, not where it lies
            from stocktrend.data.membership import membership_path

            inputs["panel:membership"] = sha256_of(membership_path(cfg))
            conf["panel"]["membership"] = Path(conf["panel"]["membership"]).name
    payload = {"config": conf, "inputs": inputs, "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _day(ts) -> str:
    return str(pd.Timestamp(ts).date())


def _split_facts(ctx: dict, name: str) -> dict:
    cfg, p = ctx["cfg"], ctx["prepared"]
    rows = np.unique(ctx["parts"][name])
    cal = p.calendar
    last_label = min(int(rows.max()) + cfg.horizon, len(cal) - 1)
    return {
        "start": _day(cal[rows.min()]),
        "end": _day(cal[rows.max()]),
        "window_start": _day(cal[rows.min() - cfg.seq_len + 1]),
        "label_end": _day(cal[last_label]),
        "n": int(len(ctx["parts"][name])),
        "n_unique_windows": int(len(rows)),
        "class_counts_before_balancing": ctx["counts_before"][name],
        "class_counts": np.bincount(ctx["y"][ctx["parts"][name]], minlength=cfg.n_classes).tolist(),
    }


def build_metadata(ctx: dict) -> dict:
    cfg, p, plan = ctx["cfg"], ctx["prepared"], ctx["plan"]
    chosen, names, scaler = ctx["chosen"], ctx["names"], ctx["scaler"]
    fit_rows = ctx["fit_rows"]
    leaky = cfg.protocol == "seed"
    return {
        "name": cfg.name,
        "ticker": cfg.ticker,
        "protocol": cfg.protocol,
        "leaky": leaky,
        "protocol_note": (
            "LEAKY on purpose: reproduces the reference (scaler and selection fitted on all rows "
            "and labels, oversampling before a shuffled split). For the leakage audit only."
            if leaky
            else "Chronological split with purge gap; scaler, selection and oversampling fitted on "
            "the training window only; validation and test never resampled."
        ),
        "seq_len": cfg.seq_len,
        "horizon": cfg.horizon,
        "n_classes": cfg.n_classes,
        "label": cfg.label,
        "label_rule": (
            f"{cfg.n_classes} bins of the {cfg.horizon}-day return, edges from training rows" if cfg.n_classes != 2
            else f"1 (up) if close[t+{cfg.horizon}] > close[t] else 0, on adjusted closes" if cfg.label == "direction"
            else f"1 if the {cfg.horizon}-day return beats {cfg.index}'s over the same days, on adjusted closes"
        ),
        "class_edges": ctx["edges"],
        "features": {
            "selected": [names[i] for i in chosen],
            "selection": cfg.selection,
            "n_candidates": len(names),
            "candidates": [{"name": n, "score": float(s)} for n, s in zip(names, ctx["scores"])],
        },
        "scaler": {
            "fit_start": _day(p.calendar[fit_rows.min()]),
            "fit_end": _day(p.calendar[fit_rows.max()]),
            "fit_rows": int(len(fit_rows)),
            "mean": [float(scaler.mean_[i]) for i in chosen],
            "std": [float(scaler.scale_[i]) for i in chosen],
        },
        "boundaries": {
            "val_start": str(plan.val_start),
            "test_start": str(plan.test_start),
            "end": str(plan.end) if plan.end else None,
            "purge_rows": cfg.purge_rows,
        },
        "splits": {s: _split_facts(ctx, s) for s in SPLITS},
        "bars_needed": FEATURE_LOOKBACK + EWM_BURN_IN + cfg.seq_len,
        "sources": ctx["prepared"].sources,
        "config": {k: v for k, v in config_to_dict(cfg).items() if k != "base_dir"},
        "code_fingerprint": code_fingerprint(),
        "fingerprint": fingerprint(cfg),
        **({"auxiliary": ctx["auxiliary"]} if ctx.get("auxiliary") else {}),
    }


def analysis_table(ctx: dict) -> pd.DataFrame:
    y, parts, scaled = ctx["y"], ctx["parts"], ctx["scaled"]
    train = np.unique(parts["train"])
    rank = np.empty(len(ctx["names"]), dtype=int)
    order = np.lexsort((np.arange(len(ctx["scores"])), -ctx["scores"]))
    rank[order] = np.arange(1, len(order) + 1)
    chosen = set(ctx["chosen"].tolist())
    table = {
        "feature": ctx["names"],
        "score": ctx["scores"],
        "rank": rank,
        "selected": [i in chosen for i in range(len(ctx["names"]))],
        "scaler_mean": ctx["scaler"].mean_,
        "scaler_std": ctx["scaler"].scale_,
    }
    for c in range(ctx["cfg"].n_classes):
        rows = train[y[train] == c]
        table[f"train_mean_class{c}"] = scaled[rows].mean(axis=0)
    return pd.DataFrame(table).sort_values("rank")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def swap_dir(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the fully written ``tmp`` (a failed build never reaches here)."""
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        old.rmdir()
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def write_dataset(out_dir: str | Path, arrays: Iterable[tuple[str, np.ndarray]], metadata: dict, *,
                  fill: Callable[[Path], None] | None = None, texts: dict[str, str] | None = None) -> None:
    """The one dataset writer (single-stock and panel builds alike): every (name, array) as
    ``name.npy``, any ``texts`` (file name -> contents) and ``metadata.json`` into a temporary
    folder beside ``out_dir``, then swapped in whole (``fill``: first writes what is already on
    its way there, e.g. a streamed build's features). A failure leaves the previous dataset and
    no temporary folder; arrays may come one at a time, so a writer need not hold them all."""
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp creates 0700
    try:
        if fill is not None:
            fill(tmp)
        for name, arr in arrays:
            np.save(tmp / f"{name}.npy", arr)
        for name, text in (texts or {}).items():
            (tmp / name).write_text(text)
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2))
        swap_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_metadata(dataset_dir: str | Path) -> dict:
    path = Path(dataset_dir) / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"no dataset at {dataset_dir}: {path} is missing (run ray_jobs/build_dataset.py)")
    return json.loads(path.read_text())
