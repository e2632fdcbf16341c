"""The volatility head on the test split: a multi-task model's forecast of the log realised
volatility of the next h days, against the trailing-volatility baseline a quant fits first.

- Baselines, fitted on the distinct training windows only, then applied to the test windows:
  ``trailing_har``, ordinary least squares of the target on [1, trailing log volatility over
  the last h days, over the last 20] (a HAR-style regression: the past week and month); and
  ``linear_features``, a ridge regression on those two and every feature the network sees on
  the window's last day (the same information as the network, used linearly).
- Scores: R^2 = 1 - SSE / SST with SST around the test split's own mean (a forecast must
  beat the constant it could only know in hindsight), and Spearman's rank correlation over
  all test windows; for a panel also the mean over dates of the cross-sectional rank
  correlation (which instruments will be the most volatile this week).
- Intervals: 95% block bootstrap over whole dates; model minus baseline is paired (both
  scored on the same resamples). Nothing here is fitted on, or chooses anything from, the
  test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stocktrend.data.store import read_metadata
from stocktrend.data.windows import distinct_windows, window_keys
from stocktrend.evaluation.core import ci_text, ic_table, md_table, resampled_ci
from stocktrend.evaluation.panel_metrics import rank_ic_by_date

BASELINE = "trailing_har"
BASELINE_NOTE = ("OLS of the log target on the trailing log volatilities of the last h and 20 days, "
                 "fitted on the distinct training windows")
LINEAR = "linear_features"
LINEAR_NOTE = ("ridge regression (alpha 1) of the log target on the two trailing volatilities and the network's "
               "input features on the window's last day, fitted on the distinct training windows")


def _design(vol: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(vol)), vol[:, 1], vol[:, 2]])


def fit_baseline(train_vol: np.ndarray) -> np.ndarray:
    """OLS coefficients [const, trailing h, trailing 20] from training rows (N, 3)."""
    coef, *_ = np.linalg.lstsq(_design(train_vol), train_vol[:, 0], rcond=None)
    return coef


def r2(y: np.ndarray, f: np.ndarray) -> float:
    sst = float(((y - y.mean()) ** 2).sum())
    return float("nan") if sst == 0 else 1.0 - float(((y - f) ** 2).sum()) / sst


def rank_corr(y: np.ndarray, f: np.ndarray) -> float:
    ry, rf = np.argsort(np.argsort(y)), np.argsort(np.argsort(f))
    return float(np.corrcoef(ry, rf)[0, 1]) if len(y) > 2 else float("nan")


def _scores(y: np.ndarray, model: np.ndarray, base: np.ndarray, lin: np.ndarray) -> dict[str, float]:
    m = {"model_r2": r2(y, model), "baseline_r2": r2(y, base), "linear_r2": r2(y, lin),
         "model_rank_corr": rank_corr(y, model), "baseline_rank_corr": rank_corr(y, base),
         "linear_rank_corr": rank_corr(y, lin)}
    for other in ("baseline", "linear"):
        m[f"r2_model_minus_{other}"] = m["model_r2"] - m[f"{other}_r2"]
        m[f"rank_corr_model_minus_{other}"] = m["model_rank_corr"] - m[f"{other}_rank_corr"]
    return m


def fit_linear(train_vol: np.ndarray, train_last: np.ndarray, test_vol: np.ndarray, test_last: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import Ridge

    model = Ridge(alpha=1.0).fit(np.column_stack([train_vol[:, 1:], train_last]), train_vol[:, 0])
    return model.predict(np.column_stack([test_vol[:, 1:], test_last]))


def _distinct(dataset: Path, split: str) -> np.ndarray:
    """Row numbers of a split's distinct windows (oversampled copies dropped), in file order."""
    _, first = np.unique(window_keys(dataset, split), axis=0, return_index=True)
    return np.sort(first)


def volatility_table(dataset: str | Path, log_vol: np.ndarray) -> dict[str, Any]:
    """The test windows' realised target, the model's and the baseline's forecasts (the
    baseline fitted on this dataset's distinct training windows) and dates."""
    dataset = Path(dataset)
    meta = read_metadata(dataset)
    aux = meta.get("auxiliary")
    if not aux:
        raise ValueError(f"{dataset}: the dataset has no volatility target (metadata auxiliary)")
    test = np.load(dataset / aux["file"].format(split="test")).astype(np.float64)
    if len(test) != len(log_vol):
        raise ValueError(f"{len(log_vol)} volatility forecasts for {len(test)} test windows")
    train = np.load(dataset / aux["file"].format(split="train"))[_distinct(dataset, "train")].astype(np.float64)
    coef = fit_baseline(train)
    train_last = distinct_windows(dataset, "train", last_day_only=True)[0]  # the same rows, in the same order
    test_last = distinct_windows(dataset, "test", last_day_only=True)[0]  # the test split has no copies
    return {"y": test[:, 0], "model": np.asarray(log_vol, np.float64), "base": _design(test) @ coef,
            "lin": fit_linear(train, np.asarray(train_last, np.float64), test, np.asarray(test_last, np.float64)),
            "dates": np.load(dataset / "test_dates.npy"), "coef": coef, "fit_windows": len(train),
            "rule": aux["rule"], "horizon": int(meta["horizon"]), "panel": meta.get("layout") == "panel"}


def join_tables(tables: list[dict[str, Any]]) -> dict[str, Any]:
    """Walk-forward folds' tables as one (consecutive test blocks: one longer test period);
    each fold's baseline stays fitted on its own training windows."""
    joined = {k: np.concatenate([t[k] for t in tables]) for k in ("y", "model", "base", "lin", "dates")}
    return {**tables[0], **joined, "coef": np.mean([t["coef"] for t in tables], axis=0),
            "fit_windows": int(sum(t["fit_windows"] for t in tables))}


def score_volatility(t: dict[str, Any], n_boot: int = 1000, seed: int = 0, plot: Path | None = None) -> dict[str, Any]:
    y, model, base, lin, dates, horizon = t["y"], t["model"], t["base"], t["lin"], t["dates"], t["horizon"]
    ci = resampled_ci(_scores, (y, model, base, lin), n_boot, seed, dates=dates, horizon=horizon)
    section: dict[str, Any] = {
        "target": t["rule"], "baseline": {"name": BASELINE, "rule": BASELINE_NOTE,
                                          "coefficients": [float(c) for c in t["coef"]],
                                          "fit_windows": int(t["fit_windows"])},
        "linear": {"name": LINEAR, "rule": LINEAR_NOTE},
        "windows": int(len(y)), "dates": int(len(np.unique(dates))),
        "scores": {k: v.to_dict() for k, v in ci.items()},
        "r2_definition": "1 - SSE/SST, SST around the test split's own mean",
    }
    d, dl = ci["r2_model_minus_baseline"], ci["r2_model_minus_linear"]
    section["model_beats_baseline_r2"] = bool(d.low > 0)
    section["model_beats_linear_r2"] = bool(dl.low > 0)
    if t["panel"]:  # which instruments are the most volatile this week
        table = ic_table({name: rank_ic_by_date(dates, f, y)
                          for name, f in (("model", model), (BASELINE, base), (LINEAR, lin))}, horizon)
        section["cross_sectional_rank_corr"] = {**{name: e["mean"] for name, e in table.items()},
                                                "model_minus_baseline": table[BASELINE]["model_minus_this"],
                                                "model_minus_linear": table[LINEAR]["model_minus_this"]}
    if plot is not None:
        from stocktrend.evaluation.plots import volatility_forecasts

        volatility_forecasts(y, {"model": model, BASELINE: base, LINEAR: lin}, plot)

    def beats(x) -> str:
        return f"{'beats' if x.low > 0 else 'does not beat'} it ({x.point:+.3f} [{x.low:+.3f}, {x.high:+.3f}])"

    section["verdict"] = (
        f"Volatility forecast, test R^2 {ci['model_r2'].point:+.3f}; the trailing baseline's "
        f"{ci['baseline_r2'].point:+.3f}, the model {beats(d)}; the linear model on the same features' "
        f"{ci['linear_r2'].point:+.3f}, the model {beats(dl)} (model minus each, paired block bootstrap over dates).")
    return section


def volatility_section(dataset: str | Path, log_vol: np.ndarray, n_boot: int = 1000, seed: int = 0,
                       plot: Path | None = None) -> dict[str, Any]:
    """The report's ``volatility`` entry; ``log_vol``: the model's forecast of each test
    window's log daily volatility (the order of ``test_vol.npy``); ``plot``: where to draw
    forecasts against realised volatility."""
    return score_volatility(volatility_table(dataset, log_vol), n_boot, seed, plot)


def log_vol_of(dataset: str | Path, z: np.ndarray) -> np.ndarray:
    """A network's standardised output as log daily volatility, by the dataset's standardisation."""
    aux = read_metadata(dataset)["auxiliary"]
    return np.asarray(z, np.float64) * aux["std"] + aux["mean"]


def markdown_lines(section: dict[str, Any] | None) -> list[str]:
    """The report.md section (nothing for a direction-only model)."""
    if not section:
        return []
    s, base, lin = section["scores"], section["baseline"]["name"], section["linear"]["name"]

    def ci(k: str) -> str:
        return ci_text(s[k], "+.3f")

    lines = ["## Volatility forecast (multi-task head)", "", section["verdict"], "",
             f"Target: {section['target']}. Baseline: {section['baseline']['rule']}. "
             f"R^2: {section['r2_definition']}. {section['windows']} test windows over {section['dates']} dates.", "",
             *md_table(["scorer", "R^2 [95%]", "rank correlation [95%]"],
                       [[name, ci(f"{key}_r2"), ci(f"{key}_rank_corr")]
                        for name, key in (("model", "model"), (base, "baseline"), (lin, "linear"))]
                       + [[f"model - {name}", ci(f"r2_model_minus_{key}"), ci(f"rank_corr_model_minus_{key}")]
                          for name, key in ((base, "baseline"), (lin, "linear"))]),
             "", f"{lin}: {section['linear']['rule']}.", ""]
    cs = section.get("cross_sectional_rank_corr")
    if cs:
        lines += ["Cross-sectional rank correlation per date (mean over dates): " + ", ".join(
            f"{k} {ci_text(v, '+.3f')}" for k, v in cs.items()), ""]
    lines += ["![volatility](volatility.png)", ""]
    return lines
