"""Where a retrain draws its lines: the comparison block, and the challenger's window.

New rows move every fraction-based split boundary, so a retrained model gets explicit
dates instead. The **comparison block** is the last ``weeks`` of labelled days; both
models are judged on it and neither may have trained or been selected on any of its days:

    challenger:  [train ......][purge][val ....][purge][block ........]
    champion:    [train ...][purge][val ..]    ...at least one purge gap... [block]

The purge gap is the dataset's ``purge_rows`` (window length + horizon - 1 by default):
a block window's first input day comes after the last label day of any window the other
side saw. The challenger's validation share of the pre-block days is the config's own
``val / (train + val)``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pandas as pd

MIN_BLOCK_WINDOWS = 20


class RetrainError(RuntimeError):
    """The retrain cannot go ahead as asked; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class RetrainPlan:
    train_start: dt.date
    val_start: dt.date
    block_start: dt.date  # the challenger dataset's test split is exactly the block
    block_end: dt.date
    block_days: int
    purge_rows: int
    weeks: float
    champion_seen_until: dt.date  # the champion's last validation window end

    def split(self) -> dict[str, Any]:
        """The challenger's ``split`` config: dates, not fractions."""
        return {"val_start": self.val_start, "test_start": self.block_start, "end": self.block_end,
                "purge_rows": self.purge_rows}

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, dt.date) else v) for k, v in dataclasses.asdict(self).items()}


def labelled_days(cfg) -> pd.DatetimeIndex:
    """The labelled, feature-complete days of the sources as they are now, whatever split dates
    ``cfg`` carries (a challenger's config ends at its block; its sources may go on)."""
    from stocktrend.config_io import with_overrides

    s = cfg.split
    free = with_overrides(cfg, {"split": {"train": s.train, "val": s.val, "test": s.test, "purge_rows": s.purge_rows}})
    if cfg.panel is not None:
        from stocktrend.data.panel import build_panel
        from stocktrend.data.panel_build import labels_and_ends

        return labels_and_ends(free, build_panel(free))[3]
    from stocktrend.data.build import prepare

    return prepare(free).labelled_rows


def plan_retrain(labelled: pd.DatetimeIndex, weeks: float, purge_rows: int, val_share: float,
                 champion_seen_until: str | dt.date) -> RetrainPlan:
    """The plan on the labelled, feature-complete days of the current sources.

    Positions are counted on ``labelled`` (a subset of the trading calendar), so a gap of
    ``purge_rows`` here is at least that many trading days: never less purge than asked.
    """
    if weeks <= 0:
        raise RetrainError("--compare-weeks must be positive")
    if len(labelled) == 0:
        raise RetrainError("the sources give no labelled day")
    seen = pd.Timestamp(champion_seen_until)
    last = labelled[-1]
    b = int(labelled.searchsorted(last - pd.Timedelta(weeks=weeks), side="right"))
    block_days = len(labelled) - b
    if block_days < MIN_BLOCK_WINDOWS:
        raise RetrainError(f"the last {weeks:g} weeks hold only {block_days} labelled days; a comparison needs at "
                           f"least {MIN_BLOCK_WINDOWS}: give more --compare-weeks")
    first_after_seen = int(labelled.searchsorted(seen, side="right"))
    earliest_block = first_after_seen + purge_rows
    if b < earliest_block:
        new = len(labelled) - first_after_seen
        raise RetrainError(
            f"the comparison block ({labelled[b].date()} to {last.date()}) would reach into days the champion was "
            f"trained or selected on, or their purge gap: it saw days up to {seen.date()} (its validation split, or "
            f"the block it was promoted on; --reuse-block accepts the latter), and since then the "
            f"sources hold {new} labelled days, of which the first {purge_rows} are the purge gap. Wait for more "
            f"rows, or give fewer --compare-weeks (at most {max(0, new - purge_rows)} trading days fit)")
    pre = b - purge_rows  # labelled days the challenger may train and validate on
    v = int(pre * (1 - val_share))
    if v - purge_rows < MIN_BLOCK_WINDOWS or pre - v < MIN_BLOCK_WINDOWS:
        raise RetrainError(f"only {pre} labelled days before the comparison block: too few to train and validate")
    return RetrainPlan(train_start=labelled[0].date(), val_start=labelled[v].date(), block_start=labelled[b].date(),
                       block_end=last.date(), block_days=block_days, purge_rows=purge_rows, weeks=weeks,
                       champion_seen_until=seen.date())
