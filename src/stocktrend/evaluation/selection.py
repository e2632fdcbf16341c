"""What chose a model, and what it scored after that.

A retrained challenger is promoted, or refused, on its comparison block, and that block is
its dataset's test split (``retraining/plan.py``). Its test figures are therefore the ones
that chose it, not out of sample. A report on such a model names the block's dates, and
scores out of sample only on the labelled days after it, past a purge gap (the block's last
labels reach h days beyond its end, and a later window's inputs must start after them).
Where the sources hold too few such days, the report says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stocktrend.data.config import DataConfig
from stocktrend.evaluation.core import ci_text, md_table, resampled_ci
from stocktrend.evaluation.outcomes import outcome_metrics, realised

MIN_DAYS_AFTER = 20  # as the comparison block itself (retraining/plan.py MIN_BLOCK_WINDOWS)


def selection_policy(start: str, end: str) -> str:
    return (f"The test split here ({start} .. {end}) is the comparison block that decided this model's promotion: "
            "its figures there chose it and are not out of sample. Out-of-sample figures are only those after the "
            "block and its purge gap (section 'After selection').")


def score_after(version_dir: Path, cfg: DataConfig, data_root: Path, tickers: list[str] | None, end: str,
                purge_rows: int, n_boot: int, seed: int) -> dict[str, Any]:
    """The model's accuracy, AUROC and cross-entropy on the labelled days after ``end`` and
    ``purge_rows`` more, featurised as it serves (intervals resample whole dates)."""
    from stocktrend.inference.predictor import Predictor
    from stocktrend.retraining.compare import block_probabilities
    from stocktrend.retraining.plan import labelled_days

    truth = realised(cfg, None, tickers)
    days = np.asarray(labelled_days(cfg).strftime("%Y-%m-%d"))  # labelled and feature-complete: scorable
    later = days[days > end][purge_rows:]
    if len(later) < MIN_DAYS_AFTER:
        return {"none_yet": f"the sources hold {len(later)} labelled days after {end} and its {purge_rows}-day purge "
                            f"gap; out-of-sample figures need at least {MIN_DAYS_AFTER}"}
    rows = truth[truth["date"].isin(later)].reset_index(drop=True)
    p = block_probabilities(Predictor.from_artifact(version_dir), data_root, rows[["date", "ticker"]])
    y = rows["label"].to_numpy()
    cis = resampled_ci(outcome_metrics, (y, p), n_boot, seed, dates=rows["date"].to_numpy(), horizon=cfg.horizon)
    return {"start": str(later[0]), "end": str(later[-1]), "days": int(len(later)), "windows": int(len(rows)),
            "metrics": {k: iv.to_dict() for k, iv in cis.items()}}


def selection_section(training: dict, version_dir: Path, cfg: DataConfig, data_root: Path, tickers: list[str] | None,
                      n_boot: int, seed: int) -> dict[str, Any] | None:
    """None for a model chosen on validation alone; for a retrained one, its block and its figures after it."""
    plan = (training.get("retrain") or {}).get("plan")
    if not plan:
        return None
    start, end = str(plan["block_start"]), str(plan["block_end"])
    return {"chosen_on": {"start": start, "end": end, "what": "comparison block of the retrain that made this model"},
            "after": score_after(version_dir, cfg, data_root, tickers, end, int(plan["purge_rows"]), n_boot, seed)}


def markdown_lines(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    c, a = section["chosen_on"], section["after"]
    lines = ["## After selection", "", f"Chosen on {c['start']} .. {c['end']} ({c['what']}).", ""]
    if "none_yet" in a:
        return lines + [f"No out-of-sample figures yet: {a['none_yet']}.", ""]
    return lines + [f"Out of sample: {a['start']} .. {a['end']}, {a['days']} days, {a['windows']} windows.", "",
                    *md_table(["metric", "value [95% interval]"], [[k, ci_text(m)] for k, m in a["metrics"].items()]),
                    ""]
