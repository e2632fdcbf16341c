"""One pre-declared headline per dataset kind, judged against every opponent at once.

A report used to make a "beats" call for each metric against each baseline (20 calls for a
single stock), each at 5%: some would come out "beats" by luck alone. The headline is fixed
before any data is seen:

- a single stock: the log-loss (cross-entropy) of p(up) per test window, against the
  training window's class share (the probabilistic form of "always the majority") and the
  pooled logistic regression;
- a panel: the rank IC per test date, against 12-1 momentum, one-week reversal, and the
  pooled logistic regression and gradient boosting.

"Beats" is decided by Romano and Wolf's StepM (``arch.bootstrap.StepM``: stationary
bootstrap, studentised, step-down), which holds the chance of any false "beats" among the
opponents at 5%. Its block length comes from the differences themselves (Politis-White,
``bootstrap.data_block_length``) with the report's floor. Every other metric is shown as
secondary, with its interval and no verdict.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from stocktrend.evaluation.bootstrap import data_block_length

SIZE = 0.05  # familywise error rate over the opponents
SINGLE_OPPONENTS = ("prior", "logistic_regression")
PANEL_OPPONENTS = ("momentum_12_1", "reversal_1w", "logistic_regression", "gradient_boosting")


def stepm(model_loss: np.ndarray, opponent_loss: dict[str, np.ndarray], n_boot: int, seed: int,
          floor: int) -> dict[str, Any]:
    """Which opponents the model beats (lower mean loss), the familywise error held at ``SIZE``."""
    return stepm_pairs({k: np.asarray(model_loss, float) - np.asarray(v, float) for k, v in opponent_loss.items()},
                       n_boot, seed, floor)


def stepm_pairs(loss_differences: dict[str, np.ndarray], n_boot: int, seed: int, floor: int) -> dict[str, Any]:
    """StepM over comparisons given as per-observation loss differences (a - b: negative where
    a did better): which comparisons a wins, the familywise error over all of them at ``SIZE``.

    StepM tests "a model's loss is below the benchmark's" for many models; here the
    "models" are the differences and the benchmark is zero, so a superior column is a
    comparison that its first side wins."""
    from arch.bootstrap import StepM  # lazy: arch takes about a second to import

    diffs = pd.DataFrame({k: np.asarray(v, float) for k, v in loss_differences.items()})
    block = max(data_block_length(diffs[k].to_numpy(), floor) for k in diffs)
    test = StepM(np.zeros(len(diffs)), diffs, size=SIZE, block_size=block, reps=n_boot, bootstrap="stationary",
                 studentize=True, seed=seed)
    test.compute()
    beaten = set(test.superior_models)
    # improvement: the opponent's mean loss minus the model's (positive: the model is better)
    return {"beats": {k: k in beaten for k in diffs}, "improvement": {k: float(-diffs[k].mean()) for k in diffs},
            "block": int(block), "observations": int(len(diffs)),
            "method": f"Romano-Wolf StepM (arch), stationary bootstrap of mean length {block}, studentised, "
                      f"{n_boot} resamples, familywise error {SIZE:.0%} over {diffs.shape[1]} comparisons"}


def log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q))


def single_headline(y: np.ndarray, p_up: np.ndarray, opponents: dict[str, np.ndarray], n_boot: int, seed: int,
                    floor: int) -> dict[str, Any]:
    """The log-loss headline of a single stock; ``opponents`` holds p(up) of each, by name."""
    missing = [k for k in SINGLE_OPPONENTS if k not in opponents]
    if missing:
        raise ValueError(f"the single-stock headline needs opponents {missing}")
    y = np.asarray(y, int)
    return _judge("log_loss", "log-loss", ".4f", log_loss(y, p_up),
                  {k: log_loss(y, opponents[k]) for k in SINGLE_OPPONENTS}, n_boot, seed, floor)


def panel_headline(ics: dict[str, pd.Series], n_boot: int, seed: int, floor: int) -> dict[str, Any]:
    """The rank-IC headline of a panel: ``ics`` holds the per-date rank IC of "model" and of
    the opponents; compared on the dates all of them have (a higher IC is a lower loss)."""
    names = [k for k in PANEL_OPPONENTS if k in ics]
    common = ics["model"].index
    for k in names:
        common = common.intersection(ics[k].index)
    return _judge("mean_rank_ic", "mean rank IC", "+.4f", -ics["model"][common].to_numpy(),
                  {k: -ics[k][common].to_numpy() for k in names}, n_boot, seed, floor)


def _judge(metric: str, label: str, fmt: str, model: np.ndarray, opponents: dict[str, np.ndarray], n_boot: int,
           seed: int, floor: int) -> dict[str, Any]:
    """StepM's verdict on per-observation losses, reported in the metric's own sign."""
    result = stepm(model, opponents, n_boot, seed, floor)
    sign = 1.0 if metric == "log_loss" else -1.0  # the IC is minus its loss
    beaten = [k for k, v in result["beats"].items() if v]
    point = sign * float(model.mean())
    return result | {"metric": metric, "higher_is_better": sign < 0, "model": point,
                     "opponents": {k: sign * float(v.mean()) for k, v in opponents.items()},
                     "verdict": _verdict(label, point, beaten, list(opponents), fmt)}


def _verdict(metric: str, model: float, beaten: list[str], opponents: list[str], fmt: str) -> str:
    head = f"Headline ({metric}, model {model:{fmt}}): "
    if not beaten:
        return head + f"the model beats none of {', '.join(opponents)} (StepM, {SIZE:.0%} familywise)."
    rest = [k for k in opponents if k not in beaten]
    return head + (f"the model beats {', '.join(beaten)}" + (f", not {', '.join(rest)}" if rest else "")
                   + f" (StepM, {SIZE:.0%} familywise).")
