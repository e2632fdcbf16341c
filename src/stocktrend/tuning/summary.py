"""What a search did: one row per trial (config, metrics, epochs, status) and a plot."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from ray import tune

from stocktrend.data.store import atomic_write_text
from stocktrend.training.config import selection_mode
from stocktrend.tuning.space import SearchSpace

log = logging.getLogger(__name__)


def trials_table(results: tune.ResultGrid, metric: str) -> pd.DataFrame:
    mode = selection_mode(metric)
    rows = []
    for r in results:
        frame = r.metrics_dataframe
        row = {"trial_id": (r.metrics or {}).get("trial_id") or Path(r.path).name.split("_")[-2],
               "status": "ERROR" if r.error else "TERMINATED",
               "epochs": 0 if frame is None else int(frame["training_iteration"].max())}
        if frame is not None and metric in frame:
            scored = frame.dropna(subset=[metric])
            best = scored.loc[scored[metric].idxmin() if mode == "min" else scored[metric].idxmax()]
            row.update({f"best_{metric}": float(best[metric]), "best_epoch": int(best["epoch"])})
            for k in ("val_acc", "val_auroc", "val_mcc"):
                if k in best:
                    row[f"{k}@best"] = float(best[k])
        row["error"] = str(r.error).splitlines()[0][:120] if r.error else ""
        row.update({f"cfg.{k}": v for k, v in (r.config or {}).items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    key = f"best_{metric}"
    if key in table:
        table = table.sort_values(key, ascending=mode == "min", na_position="last")
    return table.reset_index(drop=True)


def choices_table(table: pd.DataFrame, space: SearchSpace, metric: str) -> pd.DataFrame:
    """Which value of each searched choice won on validation (the model family, the
    recurrent cell, the auxiliary weight...): per value, its trials, the best and the median
    of their best ``metric``, and whether the search's best trial had it. Trials cut early by
    ASHA count with the score they reached, so a value tried mostly early looks worse; the
    trial counts say how much each row rests on."""
    key, mode = f"best_{metric}", selection_mode(metric)
    rows = []
    for dim, dist in space.distributions.items():
        col = f"cfg.{dim}"
        if "choice" not in dist or col not in table or key not in table:
            continue
        scored = table.dropna(subset=[key])
        if scored.empty:
            continue
        winner = scored[key].idxmin() if mode == "min" else scored[key].idxmax()
        for value in dist["choice"]:
            sub = scored[scored[col].astype(str) == str(value)]
            rows.append({"dimension": dim, "value": value, "trials": len(sub),
                         f"best {metric}": sub[key].min() if mode == "min" else sub[key].max(),
                         f"median {metric}": sub[key].median(), "in best trial": str(scored.at[winner, col]) == str(value)})
    return pd.DataFrame(rows)


def plot_trials(results: tune.ResultGrid, space: SearchSpace, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for r in results:
        frame = r.metrics_dataframe
        if frame is not None and metric in frame:
            ax.plot(frame["training_iteration"], frame[metric], marker="o", ms=3, lw=1,
                    label=str(r.metrics.get("trial_id", ""))[-5:])
    rung = space.grace_period
    while rung < space.max_epochs:  # ASHA's rungs: where trials are compared and cut
        ax.axvline(rung, color="grey", ls=":", lw=1)
        rung *= space.reduction_factor
    ax.set_xlabel("epoch (training_iteration); dotted lines: ASHA rungs")
    ax.set_ylabel(f"{metric} (validation)")
    ax.set_title(f"{space.path.name}: {metric} per trial and epoch")
    ax.legend(fontsize=7, ncol=2, title="trial")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def write_summary(results: tune.ResultGrid, space: SearchSpace, metric: str, out_dir: Path) -> pd.DataFrame:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = trials_table(results, metric)
    atomic_write_text(out_dir / "trials.csv", table.to_csv(index=False))
    atomic_write_text(out_dir / "trials.md", table.to_markdown(index=False, floatfmt=".4f"))
    choices = choices_table(table, space, metric)
    if not choices.empty:
        atomic_write_text(out_dir / "choices.md", f"# Which searched choice won on validation ({metric})\n\n"
                          + choices.to_markdown(index=False, floatfmt=".4f") + "\n")
    plot_trials(results, space, metric, out_dir / "trials.png")
    log.info("experiment summary written to %s", out_dir)
    return table

