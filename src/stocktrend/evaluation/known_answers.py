"""Known answers: a synthetic market taken the way a user's files go, and the headline the
panel report gives a model's scores on it.

Used by ``tests/test_known_answers.py`` (does the pipeline find a planted signal, and nothing
on a null market) and ``bench/known_answers.py`` (how often those tests would fail on other
seeds). The market (``data.synthetic``) is written as a close panel, read by the real readers
and built by the real dataset builder; the network is trained by the training module (plain
Lightning, the module Ray Train runs); the headline is the report's own: the mean daily rank
IC over the test dates with its interval, for the model and the pooled baselines
(``evaluation.panel_report.test_table``); for a single instrument, where rank IC is undefined,
the test windows' AUROC with the single-stock report's interval
(``evaluation.report.evaluate_predictions``).
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
from stocktrend.data.windows import split_arrays
from stocktrend.evaluation.bootstrap import Interval
from stocktrend.evaluation.core import ic_table
from stocktrend.evaluation.panel_metrics import rank_ic_by_date
from stocktrend.evaluation.panel_report import test_table
from stocktrend.evaluation.report import evaluate_predictions
from stocktrend.models.config import model_config_from_metadata
from stocktrend.training.config import TrainConfig
from stocktrend.training.fit_local import fit_local
from stocktrend.training.repeat import predict_split

N_BOOT = 1000


def market_dataset(spec: MarketSpec, root: Path, layout: str = "close_panel", calibration: dict | None = None,
                   scale: float | None = None, **data_overrides: Any) -> tuple[Path, dict]:
    """(built dataset folder, the market's realised strength) for ``spec`` under ``root``, its
    files written in ``layout`` (``calibration``, ``scale``: as ``generate`` takes them, for a
    benchmark drawing many markets of one spec); ``data_overrides`` replace keys of the generated
    dataset config (seq_len, n_features, split...)."""
    market = generate(spec, calibration, scale)
    write_market(market, root / "market", layouts=(layout,))
    dataset = root / "dataset"
    build_dataset(load_data_config(root / "market" / f"{layout}.yaml", **data_overrides), dataset)
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
    table = ic_table({name: rank_ic_by_date(t["dates"], s, t["ret"]) for name, s in t["scores"].items()},
                     int(t["meta"]["horizon"]))
    out = {name: Interval(**e["mean"]) for name, e in table.items()}
    return out | {f"model - {name}": Interval(**e["model_minus_this"]) for name, e in table.items() if name != "model"}


def single_headline(dataset: Path, p_up: np.ndarray, seed: int = 0) -> Interval:
    """A single instrument's headline: the test windows' AUROC with the report's interval."""
    test = split_arrays(dataset, "test", mmap=False)
    meta = read_metadata(dataset)
    out, _ = evaluate_predictions(test["y"].argmax(axis=1), p_up, test["dates"], int(meta["horizon"]), n_boot=N_BOOT,
                                  seed=seed, seq_len=int(meta["seq_len"]))
    return Interval(**out["test"]["metrics"]["auroc"])


def found(headline: Interval, oracle: float, chance: float = 0.0) -> bool:
    """The known-answer criterion: the interval excludes chance (a rank IC of 0, an AUROC of 0.5)
    and the point reaches half of the oracle's distance from it."""
    return headline.low > chance and headline.point >= chance + (oracle - chance) / 2
