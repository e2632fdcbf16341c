"""Export an artifact's network to ONNX (and dynamic INT8) and check it on validation windows.

Writes ``<version>/backends/``: ``model.onnx`` (fp32, dynamic batch axis), optionally
``model.int8.onnx``, ``exports.json`` (each file's sha256 and the sha256 of the weights it
came from; checked whenever a back-end loads the file) and ``export_report.json`` (parity
with the float model on the validation split: the largest probability difference, the
share of windows with the same predicted class, and both accuracies). The folder is
written aside and renamed into place, so a failed export leaves the previous one intact.
The validation split only: checking a back-end must not peek at the test split.
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
from stocktrend.evaluation.report import artifact_dataset
from stocktrend.inference.artifact import WEIGHTS
from stocktrend.inference.backends import EXPORT_DIR, EXPORT_RECORD, ONNX_FILES, OnnxBackend, write_onnx_files
from stocktrend.inference.predictor import Predictor

log = logging.getLogger(__name__)

FORMATS = {"onnx": ("onnx",), "int8": ("onnx", "onnx-int8")}
PARITY_TOLERANCE = 1e-4  # largest probability difference accepted for fp32 ONNX
INT8_AGREEMENT_GOAL = 0.99


def _parity(ref: np.ndarray, got: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {
        "max_abs_prob_diff": float(np.abs(ref - got).max()),
        "class_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
        "accuracy_float": float((ref.argmax(1) == y).mean()),
        "accuracy_backend": float((got.argmax(1) == y).mean()),
    }


def export_backends(model: str | Path, fmt: str = "int8", dataset_dir: str | Path | None = None,
                    threads: int = 2) -> dict[str, Any]:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    predictor = Predictor.from_artifact(model)
    version_dir = predictor.version_dir
    data = artifact_dataset(predictor.training, predictor.preprocessing, dataset_dir)
    x = np.load(data / "val_X.npy")
    y = np.load(data / "val_y.npy").argmax(1)
    ref = predictor.predict_windows(x).probs

    tmp = Path(tempfile.mkdtemp(dir=version_dir, prefix=f".{EXPORT_DIR}.tmp-"))
    try:
        files = write_onnx_files(predictor.model, predictor.seq_len, predictor.n_features, tmp)
        kept = FORMATS[fmt]
        for name, path in files.items():
            if name not in kept:
                path.unlink()
        report: dict[str, Any] = {
            "model": f"{predictor.name}/{predictor.version}",
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "split": "val", "n_windows": int(len(x)), "backends": {},
        }
        for name in kept:
            got = OnnxBackend(files[name], name, threads)(x)[0]
            report["backends"][name] = _parity(ref, got, y)
        fp32 = report["backends"]["onnx"]
        fp32["within_tolerance"] = fp32["max_abs_prob_diff"] <= PARITY_TOLERANCE
        if "onnx-int8" in report["backends"]:
            q = report["backends"]["onnx-int8"]
            q["meets_agreement_goal"] = q["class_agreement"] >= INT8_AGREEMENT_GOAL
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
