"""Predictor: a model artifact turned back into predictions, with no training code and no Ray.

Two entry points: ``predict_windows`` takes feature windows already scaled and ordered
as the artifact's ``features``; ``predict_bars`` takes raw daily bars for each source and
runs the very same feature code as the dataset builder (``stocktrend.data.features``),
then the artifact's scaler and feature selection.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from stocktrend.config_io import config_from_dict
from stocktrend.data.config import DataConfig
from stocktrend.data.errors import DataError
from stocktrend.data.features import build_features
from stocktrend.data.sources import parse_table
from stocktrend.data.windows import cut_windows, full_windows
from stocktrend.inference.artifact import WEIGHTS, ArtifactError, load_parts
from stocktrend.inference.backends import make_backend
from stocktrend.inference.rows import frame_from_rows, rows_allowed
from stocktrend.models.config import ModelConfig
from stocktrend.models.network import build_network

log = logging.getLogger(__name__)


class InputError(ValueError):
    """A prediction request is unusable; ``field`` names the part of the input at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


TRADING_DAYS = 252  # annualising a daily volatility


@dataclasses.dataclass
class Prediction:
    probs: np.ndarray  # (N, C)
    attention: np.ndarray  # (N, L)
    # A multi-task model's forecast of the annualised realised volatility of the next h
    # days (0.25 = 25%); None for a direction-only model.
    volatility: np.ndarray | None = None  # (N,)
    # The TFT-style model's variable-selection weights per feature (mean over the window's
    # steps; rows sum to 1, columns in the order of ``Predictor.features``); None otherwise.
    feature_weights: np.ndarray | None = None  # (N, F)
    as_of: list[str] | None = None  # window end date per row, when known


class Predictor:
    def __init__(self, version_dir: Path, manifest: dict, parts: dict[str, Any], backend: str = "torch",
                 threads: int | None = None):
        self.version_dir = version_dir
        self.name, self.version = manifest["name"], manifest["version"]
        self.model_cfg = config_from_dict(ModelConfig, parts["model"], f"{version_dir}/model.json")
        pre = parts["preprocessing"]
        self.preprocessing, self.training = pre, parts["training"]
        self.feature_distribution = parts["feature_distribution"]
        self.features: list[str] = pre["features"]
        self.seq_len, self.horizon = int(pre["seq_len"]), int(pre["horizon"])
        self.bars_needed = int(pre["bars_needed"])
        self.mean = np.asarray(pre["scaler"]["mean"], dtype=np.float64)
        self.std = np.asarray(pre["scaler"]["std"], dtype=np.float64)
        self.data_cfg = config_from_dict(DataConfig, {**pre["data_config"], "base_dir": "."}, "preprocessing.json")
        self.model = build_network(self.model_cfg)
        state = torch.load(version_dir / WEIGHTS, map_location="cpu", weights_only=True)
        try:
            self.model.load_state_dict(state)
        except RuntimeError as err:
            raise ArtifactError(f"{version_dir / WEIGHTS}: weights do not fit model.json ({err})") from None
        self.model.eval()
        if self.model_cfg.volatility_head and "auxiliary" not in pre:
            raise ArtifactError(f"{version_dir}/preprocessing.json: the model has a volatility head but no "
                                "auxiliary record (the standardisation of its target)")
        try:
            self.backend = make_backend(backend, self.model, self.seq_len, self.n_features,
                                        threads or torch.get_num_threads(), version_dir, manifest["files"][WEIGHTS])
        except ValueError as err:
            raise ArtifactError(str(err)) from None

    @classmethod
    def from_artifact(cls, path: str | Path, backend: str = "torch", threads: int | None = None) -> Predictor:
        """Load ``models/<name>`` (its latest version) or a version folder, verified,
        to run on ``backend`` (see ``inference/backends.py``)."""
        return cls(*load_parts(path), backend=backend, threads=threads)

    @property
    def n_features(self) -> int:
        return len(self.features)

    # -- windows -------------------------------------------------------------
    def check_windows(self, x: Any, field: str = "windows") -> np.ndarray:
        try:
            arr = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(field, "must be a numeric array of shape (n, seq_len, features)") from None
        if arr.ndim != 3 or arr.shape[0] == 0:
            raise InputError(field, f"expected shape (n>=1, {self.seq_len}, {self.n_features}), got {arr.shape}")
        if arr.shape[1] != self.seq_len:
            raise InputError(field, f"each window needs {self.seq_len} days, got {arr.shape[1]}")
        if arr.shape[2] != self.n_features:
            raise InputError(field, f"each day needs {self.n_features} features, got {arr.shape[2]}")
        if not np.isfinite(arr).all():
            n, day, k = np.argwhere(~np.isfinite(arr))[0]
            raise InputError(f"{field}[{n}][{day}][{k}]", f"NaN or infinite value for feature {self.features[k]}")
        return arr

    def predict_windows(self, x: Any) -> Prediction:
        out = self.backend(self.check_windows(x))
        return Prediction(out.probs, out.attention, self.volatility(out.volatility), out.feature_weights)

    @property
    def has_volatility(self) -> bool:
        return self.model_cfg.volatility_head

    def log_volatility(self, z: np.ndarray | None) -> np.ndarray | None:
        """The network's standardised output as the log daily volatility it forecasts."""
        if z is None:
            return None
        aux = self.preprocessing["auxiliary"]
        return np.asarray(z, np.float64) * aux["std"] + aux["mean"]

    def volatility(self, z: np.ndarray | None) -> np.ndarray | None:
        """The network's standardised output as an annualised volatility (None stays None)."""
        log_vol = self.log_volatility(z)
        return None if log_vol is None else np.exp(log_vol) * np.sqrt(TRADING_DAYS)

    # -- raw bars ------------------------------------------------------------
    def parse_bars(self, bars: dict[str, Any]) -> dict[str, pd.DataFrame]:
        """Validate raw bars laid out like each source's file (same column names): a request's
        rows (lists of objects, checked as a table before a frame is built) or whole files."""
        frames = {}
        for name, spec in self.data_cfg.sources.items():
            if name not in bars:
                raise InputError(f"bars.{name}", f"missing source; the model needs {sorted(self.data_cfg.sources)}")
            field = f"bars.{name}"
            rows = bars[name]
            if not isinstance(rows, pd.DataFrame):  # a request's rows (a frame: files read by the batch scorer)
                rows = frame_from_rows(rows, field, rows_allowed(self.bars_needed), self.source_columns(name))
            try:
                frames[name] = parse_table(spec, rows, field, name)
            except DataError as err:
                raise InputError(field, str(err).removeprefix(f"{field}: ")) from None
        return frames

    def source_columns(self, name: str) -> list[str] | None:
        """The columns source ``name``'s file had at training (recorded by datasets built since
        the service began checking bars rows against them; None for older ones)."""
        return ((self.training.get("dataset") or {}).get("sources", {}).get(name) or {}).get("columns")

    def scaled_features(self, bars: dict[str, pd.DataFrame]) -> tuple[np.ndarray, pd.DatetimeIndex]:
        """Every target day's selected features, scaled: (n_days, features), and the days."""
        frames = self.parse_bars(bars)
        target = frames[self.data_cfg.target]
        if len(target) < self.bars_needed:
            raise InputError(
                f"bars.{self.data_cfg.target}",
                f"too little history: {len(target)} bars, the model needs {self.bars_needed}",
            )
        try:
            feats = build_features(dataclasses.replace(self.data_cfg, start=None), frames)
        except DataError as err:
            raise InputError("bars", str(err)) from None
        return (feats[self.features].to_numpy() - self.mean) / self.std, feats.index

    def window_ends(self, values: np.ndarray) -> np.ndarray:
        """Indices of the days whose whole window of features is defined (after warm-up)."""
        return np.flatnonzero(full_windows(np.isfinite(values).all(axis=1), self.seq_len))

    def windows_at(self, values: np.ndarray, ends: np.ndarray) -> np.ndarray:
        return cut_windows(values, ends, self.seq_len)

    @property
    def input_signature(self) -> tuple:
        """What a scaled window means to this model: two versions with the same signature
        take the same windows (a retrained version has its own scaler, and so its own)."""
        return (tuple(self.features), self.seq_len, self.mean.tobytes(), self.std.tobytes())

    @property
    def is_panel(self) -> bool:
        return self.data_cfg.panel is not None

    def windows_from_bars(self, bars: dict[str, Any], last: int = 1, ticker: str | None = None
                          ) -> tuple[np.ndarray, list[str]]:
        """The scaled windows ending on the last ``last`` target days of the bars (of
        ``ticker``'s for a panel model, which needs the bars of all its instruments)."""
        if self.is_panel:
            from stocktrend.inference.panel_bars import panel_windows

            return panel_windows(self, bars, ticker, last)
        if ticker is not None and str(ticker).upper() != str(self.data_cfg.ticker).upper():
            raise InputError("ticker", f"this model predicts {self.data_cfg.ticker} only, not {ticker!r}")
        values, days = self.scaled_features(bars)
        n = len(values)
        ends = np.arange(n - last, n)
        windows = self.windows_at(values, ends)
        if not np.isfinite(windows).all():
            bad = days[ends[np.flatnonzero(~np.isfinite(windows).all(axis=(1, 2)))[0]]].date()
            raise InputError("bars", f"features incomplete for the window ending {bad}: a context source has gaps")
        return windows, [str(d.date()) for d in days[ends]]

    def predict_bars(self, bars: dict[str, Any], last: int = 1, ticker: str | None = None) -> Prediction:
        windows, dates = self.windows_from_bars(bars, last, ticker)
        pred = self.predict_windows(windows)
        pred.as_of = dates
        return pred

    def staleness_days(self, as_of: str, today: dt.date | None = None) -> int:
        return ((today or dt.date.today()) - dt.date.fromisoformat(as_of)).days
