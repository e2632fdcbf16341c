"""The report's figures, one PNG each, drawn with matplotlib's Agg backend (no display).

Each function takes plain arrays, writes ``path`` atomically (a reader never sees a
half-written PNG) and returns it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: servers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from stocktrend.evaluation.metrics import CLASSES, predicted_class  # noqa: E402

DPI = 110


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def learning_curves(history: list[dict], path: Path) -> Path:
    """Train and validation loss, cross-entropy and accuracy per epoch."""
    panels = [("loss", "loss (training objective)"), ("ce", "cross-entropy"), ("acc", "accuracy")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    epochs = [h.get("epoch", i) for i, h in enumerate(history)]
    for ax, (key, title) in zip(axes, panels, strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [h.get(f"{split}_{key}", np.nan) for h in history]
            if not np.all(np.isnan(np.asarray(values, dtype=float))):
                ax.plot(epochs, values, style, ms=3, label=split)
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if len(history) <= 1:
        fig.suptitle("only one epoch recorded: no curve to read", fontsize=9)
    return _save(fig, path)


def confusion(cm: np.ndarray, path: Path, title: str = "test confusion matrix") -> Path:
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(cm, cmap="Blues", vmin=0)  # colour scale from 0, so the text colour rule below holds
    total = cm.sum() or 1
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v}\n({v / total:.0%})", ha="center", va="center",
                color="white" if v > cm.max() / 2 else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASSES, yticklabels=CLASSES,
           xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)


def roc(y_true: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> Path:
    """ROC of the model and of every baseline with a graded score."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance")
    if np.unique(y_true).size == 2:
        for name, p in scores.items():
            if np.unique(p).size > 2:  # a constant or 0/1 score draws no useful curve
                fpr, tpr, _ = roc_curve(y_true, p)
                ax.plot(fpr, tpr, lw=2 if name == "model" else 1, label=name)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def calibration(y_true: np.ndarray, p_up: np.ndarray, path: Path, n_bins: int = 10) -> Path:
    """Reliability diagram: observed share of "up" against the predicted probability."""
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(4.6, 5.2), height_ratios=[3, 1], sharex=True)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfectly calibrated")
    if np.unique(y_true).size == 2:
        frac, mean_pred = calibration_curve(y_true, p_up, n_bins=n_bins, strategy="uniform")
        ax.plot(mean_pred, frac, "-o", label="model")
    ax.set(ylabel="observed share up", title="calibration (test)", ylim=(0, 1))
    ax.legend(fontsize=8)
    hx.hist(p_up, bins=n_bins, range=(0, 1), color="grey")
    hx.set(xlabel="predicted P(up)", ylabel="windows")
    return _save(fig, path)


def equity_curves(curves: dict[str, pd.Series], path: Path, title: str = "backtest (test period)",
                  dashed: tuple[str, ...] = ("buy_and_hold",)) -> Path:
    """Equity curves on one axis; the benchmarks named in ``dashed`` drawn dashed."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, eq in curves.items():
        style = "--" if name in dashed else "-"
        ax.plot(eq.index, eq.to_numpy(), lw=1.2, label=name.replace("_", " "), ls=style)
    ax.axhline(1, color="k", lw=0.6)
    ax.set(ylabel="equity (start = 1)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.autofmt_xdate()
    return _save(fig, path)


def attention_by_class(attention: np.ndarray, p_up: np.ndarray, path: Path) -> Path:
    """Mean attention weight per day of the window, separately for each predicted class."""
    attention = np.asarray(attention)
    days = np.arange(-attention.shape[1] + 1, 1)
    pred = predicted_class(p_up)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for c, name in enumerate(CLASSES):
        rows = attention[pred == c]
        if len(rows):
            ax.plot(days, rows.mean(axis=0), "-o", ms=3, label=f"predicted {name} (n={len(rows)})")
    ax.axhline(1 / attention.shape[1], color="k", ls=":", lw=1, label="uniform")
    ax.set(xlabel="day in window (0 = signal day)", ylabel="mean attention weight",
           title="attention per day by predicted class (test)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def volatility_forecasts(y: np.ndarray, forecasts: dict[str, np.ndarray], path: Path) -> Path:
    """Forecast against realised log volatility, one panel per forecaster, with the diagonal."""
    fig, axes = plt.subplots(1, len(forecasts), figsize=(4.6 * len(forecasts), 4), sharey=True, squeeze=False)
    lo, hi = np.percentile(y, [0.5, 99.5])
    for ax, (name, f) in zip(axes[0], forecasts.items(), strict=True):
        ax.scatter(f, y, s=4, alpha=0.25, rasterized=True)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="forecast = realised")
        ax.set(title=name, xlabel="forecast log daily volatility", xlim=(lo, hi), ylim=(lo, hi))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("realised log daily volatility (test)")
    axes[0][0].legend(loc="upper left")
    return _save(fig, path)


def rank_ic_per_date(ics: dict[str, pd.Series], path: Path, window: int = 63) -> Path:
    """The first scorer's rank IC per test date (faint), each scorer's rolling mean over
    ``window`` dates (a quarter of trading days) and its mean over all dates (dotted)."""
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for k, (name, ic) in enumerate(ics.items()):
        colour = f"C{k}"
        days = pd.DatetimeIndex(ic.index)
        if k == 0:
            ax.plot(days, ic.to_numpy(), color=colour, lw=0.5, alpha=0.35)
        ax.plot(days, ic.rolling(window, min_periods=window // 2).mean().to_numpy(), color=colour, lw=1.6,
                label=f"{name}, rolling mean of {window} dates")
        ax.axhline(float(ic.mean()), color=colour, ls=":", lw=1)
    ax.axhline(0, color="k", lw=0.6)
    ax.set(ylabel="rank IC", title="rank IC per test date (dotted: mean over all dates)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, path)


def quintile_returns(dates: np.ndarray, ret: np.ndarray, scores: dict[str, np.ndarray], path: Path,
                     buckets: int = 5) -> Path:
    """Mean realised forward return of each score quintile, the quintiles formed within each
    date (so a market-wide move lifts every bar alike), averaged over dates."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    width = 0.8 / len(scores)
    for k, (name, s) in enumerate(scores.items()):
        frame = pd.DataFrame({"date": dates, "s": s, "r": ret}).dropna()
        frame = frame[frame.groupby("date")["s"].transform("size") >= buckets]
        pct = frame.groupby("date")["s"].rank(method="first", pct=True)
        frame["q"] = np.ceil(pct * buckets).astype(int)
        means = frame.groupby(["date", "q"])["r"].mean().groupby("q").mean()
        ax.bar(means.index + (k - (len(scores) - 1) / 2) * width, 1e4 * means.to_numpy(), width, label=name)
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel=f"score quintile within each date (1 = lowest, {buckets} = highest)",
           ylabel="mean forward return (bps)", title="mean realised return by score quintile (test)",
           xticks=range(1, buckets + 1))
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)
