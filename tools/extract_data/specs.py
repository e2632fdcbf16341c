"""The table of crude data sources: which pinned wheel, which member, which layout.

Kept apart from the mechanics (the other modules of this package) so adding a source is a
one-entry change. Standard library only, like the extractor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stocktrend.data.errors import DataError


class ExtractError(DataError):
    """A source cannot be extracted; the message names the wheel/file, the line and why."""


@dataclass(frozen=True)
class SourceSpec:
    """One output CSV and where it comes from.

    ``columns`` lists ``(output name, source name)`` pairs written after the date column (after
    the group column, when there is one); ``None`` keeps every other source column, in the
    file's order and with its own name. ``group`` is ``(output name, source name)`` of a key
    column for long files holding several series (e.g. a ticker): dates must then ascend within
    each group and each group's rows must be contiguous. ``date_format`` is ``"iso"``
    (YYYY-MM-DD), ``"mdy"`` (M/D/YYYY) or ``"iso_datetime"`` (a midnight timestamp; the date
    part is kept). ``expected`` holds the facts from data-sources.md to check against
    (start, end, rows, value_columns); a mismatch is logged and recorded, not fatal.
    """

    out: str
    package: str
    version: str
    member: str
    date_col: str
    out_date: str
    date_format: str
    columns: tuple[tuple[str, str], ...] | None
    description: str
    caveats: str
    licence_expected: str
    inner: str | None = None
    group: tuple[str, str] | None = None
    expected: dict[str, Any] = field(default_factory=dict)

    @property
    def source_label(self) -> str:
        """Where the data is read from, e.g. ``pmdarima-2.1.1:pmdarima/.../msft.tar.gz!msft.csv``."""
        inner = f"!{self.inner}" if self.inner else ""
        return f"{self.package}-{self.version}:{self.member}{inner}"


_OHLCV_YAHOO = (
    ("Open", "Open"),
    ("High", "High"),
    ("Low", "Low"),
    ("Close", "Close"),
    ("Adj Close", "Adj Close"),
    ("Volume", "Volume"),
)
_TREASURY = tuple(
    (c, c)
    for c in (
        "1month",
        "3month",
        "6month",
        "1year",
        "2year",
        "3year",
        "5year",
        "7year",
        "10year",
        "20year",
        "30year",
    )
)

SPECS: tuple[SourceSpec, ...] = (
    SourceSpec(
        out="msft.csv",
        package="pmdarima",
        version="2.1.1",
        member="pmdarima/datasets/data/msft.tar.gz",
        inner="msft.csv",
        date_col="Date",
        out_date="Date",
        date_format="iso",
        columns=(("Open", "Open"), ("High", "High"), ("Low", "Low"), ("Close", "Close"), ("Volume", "Volume")),
        description="Microsoft (MSFT) daily Open, High, Low, Close, Volume; prices split/dividend "
        "adjusted (so there is no separate Adj Close). The source's OpenInt column (always 0) is dropped.",
        caveats="Missing trading days 1998-10-29 and 1999-11-16; Volume 0 on 2010-04-26; before 1990 "
        "prices are coarsely rounded (about half the daily changes are 0).",
        licence_expected="MIT",
        expected={"start": "1986-03-13", "end": "2017-11-10", "rows": 7983},
    ),
    SourceSpec(
        out="sp500_ohlcv.csv",
        package="arch",
        version="8.0.0",
        member="arch/data/sp500/sp500.csv.gz",
        date_col="Date",
        out_date="Date",
        date_format="mdy",
        columns=_OHLCV_YAHOO,
        description="S&P 500 index daily Open, High, Low, Close, Adj Close, Volume (Yahoo Finance "
        "layout); source dates M/D/YYYY converted to ISO.",
        caveats="None listed in data-sources.md. Adj Close equals Close on every row (an index has "
        "no corporate actions).",
        licence_expected="NCSA",
        expected={"start": "1999-01-04", "end": "2018-12-31", "rows": 5031},
    ),
    SourceSpec(
        out="nasdaq_ohlcv.csv",
        package="arch",
        version="8.0.0",
        member="arch/data/nasdaq/nasdaq.csv.gz",
        date_col="Date",
        out_date="Date",
        date_format="mdy",
        columns=_OHLCV_YAHOO,
        description="Nasdaq Composite index daily Open, High, Low, Close, Adj Close, Volume (Yahoo "
        "Finance layout); source dates M/D/YYYY converted to ISO.",
        caveats="None listed in data-sources.md. Found on extraction: Volume 0 on 2015-05-12 and "
        "2018-01-09; Adj Close equals Close on every row.",
        licence_expected="NCSA",
        expected={"start": "1999-01-04", "end": "2018-12-31", "rows": 5031},
    ),
    SourceSpec(
        out="wti.csv",
        package="arch",
        version="8.0.0",
        member="arch/data/wti/wti.csv.gz",
        date_col="Date",
        out_date="date",
        date_format="mdy",
        columns=(("wti", "DCOILWTICO"),),
        description="WTI crude oil spot price, daily (FRED series DCOILWTICO), USD per barrel; "
        "source dates M/D/YYYY converted to ISO.",
        caveats="Holidays are NaN: the source's '.' cells are written as empty cells and the rows are kept.",
        licence_expected="NCSA",
        expected={"start": "1986-01-02", "end": "2019-01-03", "rows": 8611},
    ),
    SourceSpec(
        out="sp500_close.csv",
        package="skfolio",
        version="1.12.2",
        member="skfolio/datasets/data/sp500_index.csv.gz",
        date_col="Date",
        out_date="date",
        date_format="iso",
        columns=(("SP500", "SP500"),),
        description="S&P 500 index daily close.",
        caveats="Close only; rounded to at most 3 decimals; marked by its authors as for examples.",
        licence_expected="BSD-3-Clause",
        expected={"start": "1990-01-02", "end": "2022-12-28", "rows": 8313},
    ),
    SourceSpec(
        out="stocks20_close.csv",
        package="skfolio",
        version="1.12.2",
        member="skfolio/datasets/data/sp500_dataset.csv.gz",
        date_col="Date",
        out_date="date",
        date_format="iso",
        columns=None,
        description="Adjusted daily closes of 20 large US stocks, one column per ticker in the source file's order.",
        caveats="Close only; rounded to 3 decimals; marked by its authors as for examples.",
        licence_expected="BSD-3-Clause",
        expected={"start": "1990-01-02", "end": "2022-12-28", "rows": 8313, "value_columns": 20},
    ),
    SourceSpec(
        out="treasury_yields.csv",
        package="zipline-reloaded",
        version="3.2.1",
        member="zipline/resources/market_data/treasury_curves.csv",
        date_col="Time Period",
        out_date="date",
        date_format="iso_datetime",
        columns=_TREASURY,
        description="Daily US Treasury yield curve, 11 maturities from 1 month to 30 years, as "
        "decimal fractions (0.0783 = 7.83%); source timestamps (midnight UTC) reduced to the date.",
        caveats="Bond-market calendar: forward-fill to trading days. Some maturities are missing "
        "in stretches (empty cells): 1month until 2001-07-30, 20year until 1993-09-30, 30year "
        "2002-02-19 – 2006-02-08.",
        licence_expected="Apache-2.0",
        expected={"start": "1990-01-02", "end": "2017-03-29", "rows": 6816},
    ),
    SourceSpec(
        out="bokeh_stocks_ohlcv.csv",
        package="bokeh-sampledata",
        version="2026.1",
        member="bokeh_sampledata/_data/stocks.csv.gz",
        date_col="Date",
        out_date="Date",
        date_format="iso",
        group=("Ticker", "Ticker"),
        columns=_OHLCV_YAHOO,
        description="Daily unadjusted Open, High, Low, Close and Volume plus the source's adjusted "
        "close for several tickers in long format (one block of rows per ticker, dates ascending "
        "within each); a second, independent MSFT source. Columns reordered to the Yahoo layout "
        "(Adj Close before Volume).",
        caveats="Prices unadjusted except Adj Close. Per the wheel's licenses/datasets.json the "
        "values are Quandl WIKI prices (public domain), and Adj Close reflects the archived source "
        "snapshot, including corporate actions after 2013. GOOG starts 2004-08-19 (WIKI GOOGL "
        "history); the file also holds FB from 2012-05-18, which data-sources.md does not list.",
        licence_expected="BSD-3-Clause",
        expected={"start": "2000-03-01", "end": "2013-03-01"},
    ),
)

SPEC_BY_NAME: dict[str, SourceSpec] = {s.out: s for s in SPECS}
