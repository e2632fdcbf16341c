"""Chronological splits with a purge gap, and walk-forward folds, on window end rows.

A sample whose window ends on row t uses the days [t - L + 1, t + h] (window start to
label end). Two samples in different splits must share no day. Splitting is done on
row positions of the target calendar; each earlier split loses its last ``purge_rows``
window ends before the next split's first end, which with purge_rows >= L + h - 1 makes
the day sets disjoint (last train end e <= v - 1 - purge, so e + h < v - L + 1).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """Boundary dates of one split: val and test start on these window end dates."""

    val_start: dt.date
    test_start: dt.date
    end: dt.date | None = None  # last test window end, inclusive


def plan_from_fractions(row_dates: pd.DatetimeIndex, train: float, val: float) -> SplitPlan:
    """Boundaries at the given fractions of the labelled, feature-complete rows.

    These rows do not depend on the sequence length or feature count, so datasets that
    differ only in those get the same boundary dates.
    """
    n = len(row_dates)
    return SplitPlan(
        val_start=row_dates[int(n * train)].date(),
        test_start=row_dates[int(n * (train + val))].date(),
    )


def plan_for(split, labelled: pd.DatetimeIndex, what: str) -> SplitPlan:
    """The plan of a ``SplitConfig``: its dates where given, else its fractions of the
    labelled, feature-complete days (``what`` names the data in the error)."""
    from stocktrend.data.errors import DataError

    if split.val_start and split.test_start:
        return SplitPlan(split.val_start, split.test_start, split.end)
    if len(labelled) < 10:
        raise DataError(f"{what}: only {len(labelled)} feature-complete, labelled days")
    plan = plan_from_fractions(labelled, split.train, split.val)
    return SplitPlan(split.val_start or plan.val_start, split.test_start or plan.test_start, split.end)


def assign_splits(
    calendar: pd.DatetimeIndex, end_rows: np.ndarray, plan: SplitPlan, purge_rows: int
) -> dict[str, np.ndarray]:
    """Split window end rows (positions in ``calendar``) into train/val/test with purging."""
    vpos = int(calendar.searchsorted(pd.Timestamp(plan.val_start)))
    tpos = int(calendar.searchsorted(pd.Timestamp(plan.test_start)))
    last = len(calendar) - 1 if plan.end is None else int(calendar.searchsorted(pd.Timestamp(plan.end), "right")) - 1
    return {
        "train": end_rows[end_rows < vpos - purge_rows],
        "val": end_rows[(end_rows >= vpos) & (end_rows < tpos - purge_rows)],
        "test": end_rows[(end_rows >= tpos) & (end_rows <= last)],
    }


def walk_forward_plans(
    row_dates: pd.DatetimeIndex, folds: int, first_train: float = 0.5, val: float = 0.1
) -> list[SplitPlan]:
    """Expanding-window folds: the rows after the first ``first_train`` share are cut into
    ``folds`` consecutive test blocks; fold i validates on the ``val`` share of rows just
    before its test block and trains on everything earlier (each fold is then built,
    scaler and selection included, by the same code as the default split)."""
    if folds < 1:
        raise ValueError("folds must be >= 1")
    n = len(row_dates)
    start = int(n * first_train)
    edges = np.linspace(start, n, folds + 1).astype(int)
    n_val = max(1, int(n * val))
    plans = []
    for i in range(folds):
        test_from, test_to = edges[i], edges[i + 1] - 1
        if test_from - n_val <= 0:
            raise ValueError("too few rows for walk-forward: lower folds or val")
        plans.append(
            SplitPlan(
                val_start=row_dates[test_from - n_val].date(),
                test_start=row_dates[test_from].date(),
                end=row_dates[test_to].date(),
            )
        )
    return plans


def day_span(calendar: pd.DatetimeIndex, end_rows: np.ndarray, seq_len: int, horizon: int) -> set[int]:
    """Row positions touched by the samples ending at ``end_rows`` (window start..label end)."""
    days: set[int] = set()
    for e in end_rows:
        days.update(range(int(e) - seq_len + 1, int(e) + horizon + 1))
    return days
