"""Known answers: a synthetic market taken the way a user's files go, and the headline the
panel report gives a model's scores on it.

Used by ``tests/test_known_answers.py`` (does the pipeline find a planted signal, and nothing
on a null market) and ``bench/known_answers.py`` (how often those tests would fail on other
seeds). The market (``data.synthetic``) is written as a close panel, read by the real readers
and built by the real dataset builder; the network is trained by the training module (plain
Lightning, the module Ray Train runs); the headline is the report's own: the mean daily rank
IC over the test dates with its interval, for the model and the pooled baselines
(``evaluation.panel_report.test_table``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
from stocktrend.data.store import read_metadata
from stocktrend.data.synthetic import MarketSpec, generate
from stocktrend.data.synthetic_files import write_market
from stocktrend.evaluation.bootstrap import Interval
from stocktrend.evaluation.panel_metrics import mean_interval, rank_ic_by_date
from stocktrend.evaluation.panel_report import test_table
from stocktrend.models.config import model_config_from_metadata
from stocktrend.training.config import TrainConfig
from stocktrend.training.fit_local import fit_local
from stocktrend.training.repeat import predict_split

N_BOOT = 1000


def market_dataset(spec: MarketSpec, root: Path, **data_overrides: Any) -> tuple[Path, dict]:
    """(built dataset folder, the market's realised strength) for ``spec`` under ``root``;
    ``data_overrides`` replace keys of the generated dataset config (seq_len, n_features...)."""
    market = generate(spec)
    write_market(market, root / "market", layouts=("close_panel",))
    dataset = root / "dataset"
    build_dataset(load_data_config(root / "market" / "close_panel.yaml", **data_overrides), dataset)
    return dataset, market.realised


def trained_p_up(dataset: Path, train_cfg: TrainConfig, out: Path, preset: str = "tiny") -> np.ndarray:
    """The selected checkpoint's P(class 1) on every test window."""
    model_cfg = model_config_from_metadata(preset, read_metadata(dataset))
    fit = fit_local(dataset, model_cfg, train_cfg, out, progress=False, enable_model_summary=False)
    return predict_split(fit["best_checkpoint"], dataset, "test")["probs"][:, 1]


def headline(dataset: Path, p_up: np.ndarray, seed: int = 0) -> dict[str, Interval]:
    """The mean daily rank IC of the model and of each baseline of the report, with its interval,
    and under ``"model - <baseline>"`` the paired interval of the difference (the report's: the
    mean over the dates both have of the model's IC minus the baseline's)."""
    t = test_table(dataset, p_up, seed)
    h = int(t["meta"]["horizon"])
    ics = {name: rank_ic_by_date(t["dates"], s, t["ret"]) for name, s in t["scores"].items()}
    out = {name: mean_interval(ic.to_numpy(), N_BOOT, seed, h) for name, ic in ics.items()}
    model = ics["model"]
    for name, ic in ics.items():
        if name != "model":
            both = model.index.intersection(ic.index)
            out[f"model - {name}"] = mean_interval((model[both] - ic[both]).to_numpy(), N_BOOT, seed, h)
    return out


def found(ic: Interval, oracle: float) -> bool:
    """The known-answer criterion: the interval excludes 0 and the point reaches half the oracle's IC."""
    return ic.low > 0 and ic.point >= oracle / 2
