"""The dataset config: one YAML file describes one dataset (sources, windows, splits, fits).

Loaded into ``DataConfig``; unknown keys and bad values fail at load time with the file
and key named (see ``stocktrend.config_io``). Relative source paths are resolved against
the YAML file's folder, so configs work from any working directory (Ray Tune runs trials
in their own).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic.dataclasses import dataclass

from stocktrend.config_io import STRICT, ConfigError, config_from_dict, read_yaml
from stocktrend.storage import RemotePath, is_remote

# What a source file holds decides which feature family is computed from it.
SourceKind = Literal["ohlcv", "close", "close_panel", "rates"]
CANONICAL_OHLCV = ("open", "high", "low", "close", "adj_close", "volume")
# What a label says about the h-day return r of the window's instrument: r > 0; r above
# the median r of the panel's instruments that day; r above the index's h-day return.
LabelKind = Literal["direction", "relative_median", "relative_index"]
STREAMED_ABOVE = 200
CHUNK = 64  # instruments per task of a streamed panel build, by default
# A second, regression target beside the label: "volatility" is the log realised volatility
# of the instrument's next h days (``labels.future_log_vol``), for a multi-task network.
AuxiliaryKind = Literal["none", "volatility"]
YAHOO_COLUMNS = {"date": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close",
                 "adj_close": "Adj Close", "volume": "Volume"}


@dataclass(config=STRICT)
class SourceConfig:
    """One daily CSV file and how its columns map to what the feature code expects.

    ``columns`` maps canonical names to the file's column names: for ``ohlcv`` the keys
    are date/open/high/low/close/adj_close/volume (adj_close optional: when present it
    is used for returns and labels); for ``close`` the keys are date/close; for
    ``close_panel`` and ``rates`` the key date, and every other column in ``include``
    (or all numeric columns when ``include`` is empty) is one series.
    """

    path: str
    kind: SourceKind
    columns: dict[str, str] = dataclasses.field(default_factory=lambda: {"date": "Date"})
    include: list[str] = dataclasses.field(default_factory=list)
    # Rows of a multi-instrument file (e.g. a Ticker column) to keep: {column: value}.
    filter: dict[str, str] = dataclasses.field(default_factory=dict)
    date_format: str | None = None  # None: ISO dates (pandas infers others, slower)
    na_values: list[str] = dataclasses.field(default_factory=lambda: ["", ".", "NA", "NaN", "null"])

    @pydantic.model_validator(mode="after")
    def _columns_fit_kind(self) -> SourceConfig:
        if "date" not in self.columns:
            raise ValueError("columns must map 'date' to the file's date column")
        need = {"ohlcv": ("close",), "close": ("close",)}.get(self.kind, ())
        for key in need:
            if key not in self.columns:
                raise ValueError(f"a '{self.kind}' source needs columns.{key}")
        if self.kind == "ohlcv":
            unknown = set(self.columns) - {"date", *CANONICAL_OHLCV}
            if unknown:
                raise ValueError(f"unknown ohlcv column keys {sorted(unknown)}; use {CANONICAL_OHLCV}")
        return self


@dataclass(config=STRICT)
class PanelSpec:
    """The instruments of a panel dataset, from exactly one of:

    - ``source``: a source of the config: a ``close_panel`` (one column per ticker; close-only
      features) or, with ``ticker_column``, a long ``ohlcv`` file (one ticker per value);
    - ``files``: ``{ticker: path}`` of daily OHLCV files laid out as ``columns`` says;
    - ``folder``: every ``pattern`` file in it is one ticker, named by the file's stem (a
      folder of Yahoo Finance exports, with the default ``columns``).
    """

    source: str | None = None
    ticker_column: str | None = None
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    folder: str | None = None
    pattern: str = "*.csv"
    columns: dict[str, str] = dataclasses.field(default_factory=lambda: dict(YAHOO_COLUMNS))
    include: list[str] = dataclasses.field(default_factory=list)  # tickers to keep (default: all)
    exclude: list[str] = dataclasses.field(default_factory=list)
    min_days: int = pydantic.Field(500, ge=50)  # instruments with fewer daily rows are left out, and logged
    # "memory": the whole universe in one process (quick for tens of names); "streamed": passes
    # over chunks of instruments, as Ray tasks when connected (data.panel_stream), for hundreds
    # to thousands; "auto": streamed past STREAMED_ABOVE listed instruments. Same dataset either way.
    build: Literal["auto", "memory", "streamed"] = "auto"
    # Instruments per task of a streamed build: what one task holds; smaller chunks, more tasks
    # to spread over a cluster's nodes. Same dataset either way.
    chunk: int = pydantic.Field(CHUNK, ge=1)
    # A point-in-time membership table (ticker, start, end per spell; CSV or Parquet, data/membership.py):
    # windows, labels and cross-sections on each day's members only. None: every listed instrument, always.
    membership: str | None = None

    @pydantic.model_validator(mode="after")
    def _one_origin(self) -> PanelSpec:
        given = [k for k in ("source", "files", "folder") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"a panel needs exactly one of source, files or folder (got {given or 'none'})")
        if self.ticker_column and not self.source:
            raise ValueError("ticker_column goes with source (a long file)")
        return self


@dataclass(config=STRICT)
class SplitConfig:
    """Chronological split on window end dates.

    The boundaries are dates. When ``val_start``/``test_start`` are not given they are
    computed once from the fractions over the feature rows, which do not depend on the
    sequence length or feature count, so datasets differing only in those are validated
    and tested on the same end dates.
    """

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    val_start: dt.date | None = None
    test_start: dt.date | None = None
    end: dt.date | None = None  # last window end date used (inclusive); None: all
    # Rows dropped from the tail of the earlier split at each boundary. "auto" is the
    # smallest gap that makes the day sets [window start, label end] of different
    # splits disjoint: seq_len + horizon - 1. Set a larger fixed number to give every
    # dataset in a search identical validation end dates.
    purge_rows: int | Literal["auto"] = "auto"

    @pydantic.model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        for name in ("train", "val", "test"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} fraction must be between 0 and 1")
        if abs(self.train + self.val + self.test - 1) > 1e-9:
            raise ValueError("train + val + test fractions must sum to 1")
        if self.val_start and self.test_start and self.val_start >= self.test_start:
            raise ValueError("val_start must be before test_start")
        return self


@dataclass(config=STRICT)
class DataConfig:
    name: str
    ticker: str  # the predicted stock (a panel: the panel's display name)
    sources: dict[str, SourceConfig]
    target: str | None = None  # key into ``sources``: an ohlcv (or close) source of the predicted stock
    panel: PanelSpec | None = None  # many instruments instead of one target (data/panel.py)
    label: LabelKind = "direction"
    index: str | None = None  # the source relative_index labels compare with (a close or ohlcv source)
    auxiliary: AuxiliaryKind = "none"
    horizon: int = pydantic.Field(5, ge=1, le=250)
    seq_len: int = pydantic.Field(30, ge=2, le=1000)
    n_features: int | Literal["all"] = 50
    n_classes: Literal[2, 5] = 2
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    balance: bool = True
    selection: Literal["mean_diff", "mutual_info"] = "mean_diff"
    # How many rows a context series may be carried forward onto a target trading
    # day that it lacks (holidays, bond-market calendar); never backwards.
    ffill_limit: int = pydantic.Field(5, ge=0, le=60)
    start: dt.date | None = None  # ignore target rows before this date
    seed: int = 42
    protocol: Literal["clean", "seed"] = "clean"
    # What a synthetic market planted (data/synthetic_files.py writes it: kind, population IC,
    # realised strength, seed): reports print it beside what the model recovered. The
    # pipeline reads nothing else of it.
    planted: dict[str, Any] | None = None
    base_dir: str = "."  # resolved folder for relative source paths (set by the loader)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        if (self.target is None) == (self.panel is None):
            raise ValueError("give exactly one of target (one stock) or panel (many)")
        if self.target is not None:
            if self.target not in self.sources:
                raise ValueError(f"target '{self.target}' is not one of sources {sorted(self.sources)}")
            if self.sources[self.target].kind not in ("ohlcv", "close"):
                raise ValueError(f"target source '{self.target}' must be of kind ohlcv or close")
        else:
            if self.n_classes != 2 or self.protocol != "clean":
                raise ValueError("panel datasets are binary (n_classes 2) and clean (no seed protocol)")
            src = self.panel.source
            if src is not None and (src not in self.sources or self.sources[src].kind not in (
                    ("ohlcv", "close") if self.panel.ticker_column else ("close_panel",))):
                raise ValueError(f"panel.source '{src}' must be a close_panel source (or, with ticker_column, an "
                                 f"ohlcv one) of sources {sorted(self.sources)}")
        if self.label == "relative_median" and self.panel is None:
            raise ValueError("label relative_median compares instruments of a panel: give panel")
        if self.label == "relative_index" and (self.index not in self.sources
                                               or self.sources[self.index].kind not in ("ohlcv", "close")):
            raise ValueError(f"label relative_index needs index: a close or ohlcv source of {sorted(self.sources)}")
        if isinstance(self.n_features, int) and self.n_features < 1:
            raise ValueError("n_features must be a positive integer or 'all'")
        gap = self.split.purge_rows
        if gap != "auto" and gap < self.seq_len + self.horizon - 1:
            raise ValueError(
                f"split.purge_rows={gap} is too small: windows of {self.seq_len} days with "
                f"{self.horizon}-day labels need at least {self.seq_len + self.horizon - 1}"
            )
        return self

    @property
    def purge_rows(self) -> int:
        gap = self.split.purge_rows
        return self.seq_len + self.horizon - 1 if gap == "auto" else gap

    def source_path(self, key: str) -> Path:
        """The source's file: relative to the config's folder, absolute, or on object storage
        (``s3://...``, a ``storage.RemotePath`` that the readers open through pyarrow)."""
        if is_remote(self.sources[key].path):
            return RemotePath(self.sources[key].path)
        p = Path(self.sources[key].path)
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()


def load_data_config(path: str | Path, **overrides) -> DataConfig:
    """Read a dataset YAML file; ``overrides`` replace top-level keys (e.g. protocol)."""
    path = Path(path).resolve()
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data.setdefault("base_dir", str(path.parent))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(DataConfig, data, source=str(path))
