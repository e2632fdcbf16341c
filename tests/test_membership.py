"""A point-in-time membership table: windows, labels and cross-sections on each day's members
only, the same from both builds, and a bad table named by file, column and line."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stocktrend.data.config import load_data_config
from stocktrend.data.errors import DataError
from stocktrend.data.membership import read_membership
from stocktrend.data.panel import XS_BASE, build_panel
from stocktrend.data.panel_build import build_panel_dataset
from stocktrend.data.panel_stream import build_panel_streamed
from stocktrend.data.synthetic import MarketSpec, generate
from stocktrend.data.synthetic_files import write_market
from stocktrend.data.windows import SPLITS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("membership") / "market"
    write_market(generate(MarketSpec(instruments=16, days=900, churn=0.3, seed=5)), out, ("long", "parquet"))
    return out


def with_table(market: Path, layout: str = "parquet"):
    cfg = load_data_config(market / f"{layout}.yaml")
    return dataclasses.replace(cfg, panel=dataclasses.replace(cfg.panel, membership="membership.csv", min_days=300))


def test_windows_and_labels_fall_on_member_days_only_and_both_builds_agree(market, tmp_path):
    cfg = with_table(market)
    spells = read_membership(market / "membership.csv")
    meta = build_panel_dataset(cfg, tmp_path / "memory")
    build_panel_streamed(cfg, tmp_path / "streamed", chunk=5)
    for name in sorted(p.name for p in (tmp_path / "memory").glob("*.npy")):
        assert np.array_equal(np.load(tmp_path / "memory" / name), np.load(tmp_path / "streamed" / name),
                              equal_nan=name in ("features.npy", "forward_returns.npy", "close.npy")), name
    assert json.loads((tmp_path / "memory" / "metadata.json").read_text()) == meta
    assert meta["sources"]["membership"]["spells"] == len(spells)
    never = set(pd.read_parquet(market / "long.parquet")["ticker"].unique()) - set(spells["ticker"])
    assert never and not never & set(meta["tickers"])  # a ticker the table never names is not in the universe
    calendar = np.load(tmp_path / "memory" / "calendar.npy")
    fwd = np.load(tmp_path / "memory" / "forward_returns.npy")
    member = np.zeros(fwd.shape, bool)
    for t, start, end in spells.itertuples(index=False):
        if t in meta["tickers"]:
            last = calendar[-1] if pd.isna(end) else np.datetime64(end, "D")
            days = (calendar >= np.datetime64(start, "D")) & (calendar <= last)
            member[meta["tickers"].index(t)] |= days
    assert (~member).sum() > 1000  # the table leaves days out
    for split in SPLITS:
        index = np.load(tmp_path / "memory" / f"{split}_index.npy")
        assert member[index[:, 0], index[:, 1]].all(), split
    # relative_median: beats the median of that day's members with a known return, by hand.
    index = np.load(tmp_path / "memory" / "test_index.npy")
    y = np.load(tmp_path / "memory" / "test_y.npy").argmax(axis=1)
    for row in np.unique(index[:, 1])[:25]:
        peers = fwd[member[:, row] & np.isfinite(fwd[:, row]), row]
        at = index[:, 1] == row
        np.testing.assert_array_equal(y[at], fwd[index[at, 0], row] > np.median(peers))


def test_cross_sectional_features_rank_the_members_present_that_day(market):
    p = build_panel(with_table(market))
    assert p.member is not None and p.member.shape == p.close.shape
    base, rank = p.names.index(XS_BASE[0]), p.names.index(f"xs_rank_{XS_BASE[0].removeprefix('own_')}")
    checked = 0
    for day in range(300, p.close.shape[1], 37):
        x = p.features[:, day, base]
        inside = p.member[:, day] & np.isfinite(x)
        if inside.sum() < 3:
            continue
        want = pd.Series(x[inside]).rank(pct=True).to_numpy()
        np.testing.assert_allclose(p.features[inside, day, rank], want)
        assert np.isnan(p.features[~p.member[:, day], day, rank]).all()
        checked += 1
    assert checked > 5


@pytest.mark.parametrize("rows, message", [
    ("ticker,start,end\nAAA,2004-01-02,\n ,2004-01-02,2005-01-03\n", r"column 'ticker', line 3: no ticker"),
    ("ticker,start,end\nAAA,2004-01-02,\nBBB,2004-13-45,\n", r"column 'start', line 3: not a date: '2004-13-45'"),
    ("ticker,start,end\nAAA,2004-01-02,2003-01-02\n", r"column 'end', line 2: 2003-01-02 is before start 2004-01-02"),
    ("ticker,start,end\nAAA,,2003-01-02\n", r"column 'start', line 2: no start date"),
    ("ticker,from,end\nAAA,2004-01-02,\n", r"membership table without column\(s\) \['start'\]"),
])
def test_a_bad_membership_table_is_named_by_file_column_and_line(tmp_path, rows, message):
    (tmp_path / "m.csv").write_text(rows)
    with pytest.raises(DataError, match=rf"m.csv: {message}"):
        read_membership(tmp_path / "m.csv")


def test_a_missing_membership_file_stops_the_build_naming_it(market, tmp_path):
    files = tmp_path / "m"
    shutil.copytree(market, files, ignore=shutil.ignore_patterns("membership.csv", "long.csv"))
    with pytest.raises(DataError, match=r"panel.membership: file not found: .*membership.csv"):
        build_panel_dataset(with_table(files), tmp_path / "d")


def test_a_changed_membership_table_is_a_different_dataset(market, tmp_path):
    from stocktrend.data.store import fingerprint

    files = tmp_path / "m"
    shutil.copytree(market, files, ignore=shutil.ignore_patterns("long.csv"))
    before = fingerprint(with_table(files))
    assert before != fingerprint(load_data_config(files / "parquet.yaml"))
    table = (files / "membership.csv").read_text().splitlines()
    (files / "membership.csv").write_text("\n".join(table[:-1]) + "\n")  # one spell fewer
    assert fingerprint(with_table(files)) != before
