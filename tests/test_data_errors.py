"""Bad input: every case names what is wrong (file, column, line or key) and writes nothing."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml

from stocktrend.config_io import ConfigError
from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
from stocktrend.data.errors import DataError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def workspace(tmp_path, repo_root):
    """A two-source config over copies of the real MSFT and S&P 500 files."""
    crude = repo_root / "datasets" / "crude-datasets"
    shutil.copy(crude / "msft.csv", tmp_path / "msft.csv")
    shutil.copy(crude / "sp500_close.csv", tmp_path / "spx.csv")
    conf = {
        "name": "t",
        "ticker": "MSFT",
        "target": "msft",
        "sources": {
            "msft": {"path": "msft.csv", "kind": "ohlcv",
                     "columns": {"date": "Date", "open": "Open", "high": "High", "low": "Low",
                                 "close": "Close", "volume": "Volume"}},
            "spx": {"path": "spx.csv", "kind": "close", "columns": {"date": "date", "close": "SP500"}},
        },
        "start": "2005-01-03",
        "n_features": 10,
    }
    return tmp_path, conf


def _write(tmp, conf, **changes):
    conf = {**conf, **changes}
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


def _edit_csv(path, fn):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df)
    df.to_csv(path, index=False)


def _fails(cfg_path, exc, *needles, out=None):
    out = out or cfg_path.parent / "out"
    with pytest.raises(exc) as info:
        build_dataset(load_data_config(cfg_path), out)
    for n in needles:
        assert n in str(info.value), str(info.value)
    return out


def test_the_workspace_builds(workspace):
    tmp, conf = workspace
    meta = build_dataset(load_data_config(_write(tmp, conf)), tmp / "out")
    assert meta["splits"]["test"]["n"] > 0


def test_missing_file(workspace):
    tmp, conf = workspace
    (tmp / "spx.csv").unlink()
    out = _fails(_write(tmp, conf), DataError, "spx.csv", "not found")
    assert not out.exists()


def test_misnamed_column(workspace):
    tmp, conf = workspace
    _edit_csv(tmp / "msft.csv", lambda df: df.rename(columns={"Close": "Closing"}, inplace=True))
    _fails(_write(tmp, conf), DataError, "msft.csv", "close -> 'Close'", "Closing")


def test_non_numeric_value(workspace):
    tmp, conf = workspace
    _edit_csv(tmp / "msft.csv", lambda df: df.__setitem__("Volume", df["Volume"].where(df.index != 100, "12k")))
    _fails(_write(tmp, conf), DataError, "msft.csv", "column 'Volume'", "line 102", "12k")


def test_duplicate_dates(workspace):
    tmp, conf = workspace
    _edit_csv(tmp / "spx.csv", lambda df: df.__setitem__("date", df["date"].where(df.index != 50, df["date"][49])))
    _fails(_write(tmp, conf), DataError, "spx.csv", "line 52", "duplicate date")


def test_unsorted_dates(workspace):
    tmp, conf = workspace

    def swap(df):
        df.loc[[10, 11], "date"] = df.loc[[11, 10], "date"].to_numpy()

    _edit_csv(tmp / "spx.csv", swap)
    _fails(_write(tmp, conf), DataError, "spx.csv", "line 13", "not sorted")


def test_unreadable_date(workspace):
    tmp, conf = workspace
    _edit_csv(tmp / "msft.csv", lambda df: df.__setitem__("Date", df["Date"].where(df.index != 7, "someday")))
    _fails(_write(tmp, conf), DataError, "msft.csv", "line 9", "someday")


def test_too_few_rows(workspace):
    tmp, conf = workspace
    _edit_csv(tmp / "msft.csv", lambda df: df.drop(df.index[df["Date"] > "2006-03-01"], inplace=True))
    _fails(_write(tmp, conf), DataError, "msft.csv", "too few rows", "seq_len=30")


def test_feature_all_nan_when_context_does_not_overlap(workspace):
    tmp, conf = workspace
    _edit_csv(tmp / "spx.csv", lambda df: df.drop(df.index[2000:], inplace=True))  # ends 1997
    _fails(_write(tmp, conf), DataError, "NaN on every target day", "spx")


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"horizon": 0}, "horizon"),
        ({"seq_len": "thirty"}, "seq_len"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"target": "nope"}, "target 'nope'"),
        ({"split": {"train": 0.8, "val": 0.3, "test": 0.1}}, "sum to 1"),
        ({"split": {"purge_rows": 3}}, "purge_rows=3 is too small"),
        ({"protocol": "yolo"}, "protocol"),
        ({"n_features": 0}, "n_features"),
    ],
)
def test_nonsense_config_values(workspace, changes, needle):
    tmp, conf = workspace
    path = _write(tmp, conf, **changes)
    with pytest.raises(ConfigError) as info:
        load_data_config(path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_duplicate_yaml_key_is_rejected(workspace):
    tmp, conf = workspace
    path = _write(tmp, conf)
    path.write_text(path.read_text() + "horizon: 5\nhorizon: 10\n")
    with pytest.raises(ConfigError, match="duplicate key 'horizon'"):
        load_data_config(path)


def test_too_many_features_requested(workspace):
    tmp, conf = workspace
    _fails(_write(tmp, conf, n_features=5000), DataError, "n_features=5000")


def test_failed_build_leaves_previous_artifacts_untouched(workspace):
    tmp, conf = workspace
    out = tmp / "out"
    build_dataset(load_data_config(_write(tmp, conf)), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _edit_csv(tmp / "msft.csv", lambda df: df.__setitem__("Close", df["Close"].where(df.index != 5000, "oops")))
    _fails(_write(tmp, conf), DataError, "oops", out=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp.iterdir() if p.name.startswith(".out")] == []  # no temp folder left


def test_yahoo_export_and_multi_ticker_file_load(tmp_path, repo_root):
    """A Yahoo-style file (Adj Close) as target and a long multi-ticker file filtered by Ticker."""
    crude = repo_root / "datasets" / "crude-datasets"
    conf = {
        "name": "bokeh_msft", "ticker": "MSFT", "target": "msft",
        "sources": {
            "msft": {"path": str(crude / "bokeh_stocks_ohlcv.csv"), "kind": "ohlcv", "filter": {"Ticker": "MSFT"},
                     "columns": {"date": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close",
                                 "adj_close": "Adj Close", "volume": "Volume"}},
            "spx": {"path": str(crude / "sp500_ohlcv.csv"), "kind": "ohlcv",
                    "columns": {"date": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close",
                                "adj_close": "Adj Close", "volume": "Volume"}},
            "ust": {"path": str(crude / "treasury_yields.csv"), "kind": "rates", "columns": {"date": "date"},
                    "include": ["3month", "2year", "10year"]},
        },
        "n_features": 20,
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(conf))
    meta = build_dataset(load_data_config(path), tmp_path / "out")
    assert meta["splits"]["train"]["n"] > 1000
    assert any(n.startswith("msft_beta_60_spx") for n in (c["name"] for c in meta["features"]["candidates"]))
