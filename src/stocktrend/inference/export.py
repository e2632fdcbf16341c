"""Export an artifact's network to ONNX (and INT8) and check it on validation windows.

Writes ``<version>/backends/``: ``model.onnx`` (fp32, dynamic batch axis), optionally
``model.int8.onnx`` (calibrated on training windows: ``inference/quantize.py``),
``exports.json`` (each file's sha256 and the sha256 of the weights it came from; checked
whenever a back-end loads the file) and ``export_report.json`` (fidelity against the float
model on the validation split: the largest probability difference, the class agreement on
the windows whose float margin |p - 0.5| exceeds that difference, the overall agreement,
and both accuracies). A model with no signal keeps many windows at p = 0.5, where any
rounding flips the class; the margin agreement is the one that says whether INT8 changed a
decision that was a decision. The folder is written aside and renamed into place, so a
failed export leaves the previous one intact. Calibration uses training windows only and
checking uses validation only: a back-end must not peek at the test split.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stocktrend.data.sources import sha256_of
from stocktrend.data.windows import distinct_windows, split_arrays
from stocktrend.evaluation.report import artifact_dataset
from stocktrend.inference.artifact import WEIGHTS
from stocktrend.inference.backends import EXPORT_DIR, EXPORT_RECORD, ONNX_FILES, OnnxBackend
from stocktrend.inference.predictor import Predictor
from stocktrend.inference.quantize import STATIC_RECIPES, quantize_onnx_int8, write_onnx_files

log = logging.getLogger(__name__)

FORMATS = {"onnx": ("onnx",), "int8": ("onnx", "onnx-int8")}
PARITY_TOLERANCE = 1e-4  # largest probability difference accepted for fp32 ONNX
INT8_MAX_PROB_DIFF = 0.01  # fidelity goals of the INT8 graph on validation
INT8_MARGIN_AGREEMENT = 0.999
CALIBRATION_WINDOWS = 512


def _parity(ref: np.ndarray, got: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    diff = float(np.abs(ref - got).max())
    same = ref.argmax(1) == got.argmax(1)
    beyond = np.abs(ref[:, 1] - 0.5) > diff  # float decisions no rounding of this size can flip
    return {
        "max_abs_prob_diff": diff,
        "class_agreement": float(same.mean()),
        "margin_agreement": float(same[beyond].mean()) if beyond.any() else None,
        "windows_beyond_margin": int(beyond.sum()),
        "accuracy_float": float((ref.argmax(1) == y).mean()),
        "accuracy_backend": float((got.argmax(1) == y).mean()),
    }


def _meets(facts: dict[str, Any]) -> bool:
    return bool(facts["max_abs_prob_diff"] <= INT8_MAX_PROB_DIFF and (
        facts["margin_agreement"] is None or facts["margin_agreement"] >= INT8_MARGIN_AGREEMENT))


def calibration_windows(dataset_dir: Path, n: int = CALIBRATION_WINDOWS, seed: int = 0) -> np.ndarray:
    """A seeded sample of distinct training windows (oversampled copies dropped)."""
    return distinct_windows(dataset_dir, "train", sample=n, seed=seed)[0]


def export_backends(model: str | Path, fmt: str = "int8", dataset_dir: str | Path | None = None,
                    threads: int = 2) -> dict[str, Any]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    predictor = Predictor.from_artifact(model)
    version_dir = predictor.version_dir
    data = artifact_dataset(predictor.training, predictor.preprocessing, dataset_dir)
    val = split_arrays(data, "val")
    x, y = np.asarray(val["X"]), val["y"].argmax(1)
    ref_pred = predictor.predict_windows(x)
    ref = ref_pred.probs

    tmp = Path(tempfile.mkdtemp(dir=version_dir, prefix=f".{EXPORT_DIR}.tmp-"))
    try:
        kept = FORMATS[fmt]
        calibration = calibration_windows(data) if "onnx-int8" in kept else None
        files, recipe = write_onnx_files(predictor.model, predictor.seq_len, predictor.n_features, tmp, calibration,
                                         int8="onnx-int8" in kept)
        tried = []
        if "onnx-int8" in kept:  # the fastest recipe meeting the goals; else the fastest
            for static_ops in STATIC_RECIPES:
                if static_ops != STATIC_RECIPES[0]:
                    recipe = quantize_onnx_int8(files["onnx"], files["onnx-int8"], calibration, static_ops)
                facts = _parity(ref, OnnxBackend(files["onnx-int8"], "onnx-int8", threads)(x)[0], y)
                tried.append({**recipe, **facts, "meets_fidelity_goals": _meets(facts)})
                if tried[-1]["meets_fidelity_goals"]:
                    break
            if not tried[-1]["meets_fidelity_goals"] and len(tried) > 1:
                recipe = quantize_onnx_int8(files["onnx"], files["onnx-int8"], calibration, STATIC_RECIPES[0])
        report: dict[str, Any] = {
            "model": f"{predictor.name}/{predictor.version}",
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "split": "val", "n_windows": int(len(x)), "backends": {},
        }
        for name in kept:
            got = OnnxBackend(files[name], name, threads)(x)
            report["backends"][name] = _parity(ref, got.probs, y)
            if got.volatility is not None:  # a multi-task model: how far its volatility forecast moved (relative)
                report["backends"][name]["max_rel_volatility_diff"] = float(
                    np.max(np.abs(predictor.volatility(got.volatility) / ref_pred.volatility - 1)))
        fp32 = report["backends"]["onnx"]
        fp32["within_tolerance"] = fp32["max_abs_prob_diff"] <= PARITY_TOLERANCE
        if "onnx-int8" in report["backends"]:
            q = report["backends"]["onnx-int8"]
            q.update(recipe)
            q["goals"] = {"max_abs_prob_diff": INT8_MAX_PROB_DIFF, "margin_agreement": INT8_MARGIN_AGREEMENT}
            q["meets_fidelity_goals"] = _meets(q)
            q["recipes_tried"] = tried
        record = {
            "weights_sha256": sha256_of(version_dir / WEIGHTS),
            "files": {n: {"file": ONNX_FILES[n], "sha256": sha256_of(files[n])} for n in kept},
        }
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=2))
        (tmp / "export_report.json").write_text(json.dumps(report, indent=2))
        tmp.chmod(0o755)
        final = version_dir / EXPORT_DIR
        old = None
        if final.exists():
            old = final.rename(version_dir / f".{EXPORT_DIR}.old-{dt.datetime.now().timestamp():.0f}")
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not fp32["within_tolerance"]:
        log.warning("ONNX fp32 differs from torch by %.2e in probability (tolerance %.0e)",
                    fp32["max_abs_prob_diff"], PARITY_TOLERANCE)
    return report
