"""The synthetic market with known answers: its arguments, its planted score's use of the past
only, the strength it plants, and its files read by the real readers in every layout."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stocktrend.data.config import load_data_config
from stocktrend.data.errors import DataError
from stocktrend.data.panel import read_members
from stocktrend.data.sources import parse_table, read_all_sources
from stocktrend.data.synthetic import (
    LOOKBACK,
    MarketError,
    MarketSpec,
    _mean_rank_ic,
    calibrate,
    generate,
    planted_score,
)
from stocktrend.data.synthetic_files import check_layouts, write_market
from stocktrend.evaluation.report_text import planted_line

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cal() -> dict:
    return calibrate()


def test_calibration_comes_from_the_shipped_panel_and_looks_like_a_market(cal):
    assert "stocks20_close.csv" in cal["source"] and "20 stocks" in cal["source"]
    assert 0.005 < cal["market_daily_vol"] < 0.03
    assert 0.8 < cal["market_garch_alpha"] + cal["market_garch_beta"] < 1  # volatility clusters, and stays finite
    assert 0.5 < cal["beta_mean"] < 1.5 and 4 < cal["market_t_df"] < 30  # fat tails


@pytest.mark.parametrize("change, named", [
    ({"ic": 1.5, "plant": "linear"}, "ic:"), ({"ic": -1.0, "plant": "linear"}, "ic:"),
    ({"ic": float("nan"), "plant": "linear"}, "ic:"), ({"ic": 0.05}, "ic:"), ({"plant": "linear"}, "ic:"),
    ({"plant": "wave", "ic": 0.05}, "plant:"), ({"target": "sector"}, "target:"), ({"days": 40}, "days:"),
    ({"instruments": 3}, "instruments:"), ({"horizon": 0}, "horizon:"), ({"churn": 1.0}, "churn:"),
    ({"start": "yesterday-ish"}, "start:"), ({"groups": 0}, "groups:"),
    ({"plant": "temporal", "ic": 0.05, "horizon": 10}, "horizon:"),
])
def test_bad_arguments_stop_with_the_argument_named(change, named):
    with pytest.raises(MarketError, match=named):
        dataclasses.replace(MarketSpec(), **change).check()


def test_bad_layouts_are_named_and_the_command_exits_2(tmp_path, repo_root):
    with pytest.raises(MarketError, match="layouts:.*'csv'"):
        check_layouts(("close_panel", "csv"))
    run = subprocess.run([sys.executable, str(repo_root / "ray_jobs" / "make_market.py"), "--out", str(tmp_path / "m"),
                          "--plant", "linear", "--ic", "2"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "ic: 2.0 is outside" in run.stderr
    assert not (tmp_path / "m").exists()  # nothing written


@pytest.mark.parametrize("plant", ["linear", "temporal"])
def test_the_planted_score_uses_closes_up_to_its_day_only(plant, cal):
    m = generate(MarketSpec(instruments=8, days=300, plant=plant, ic=0.1, seed=5), cal)
    full = planted_score(m.log_close, plant)
    rng = np.random.default_rng(0)
    for t in (LOOKBACK, 60, 150, 298):
        past_only = planted_score(m.log_close[: t + 1], plant)[-1]
        np.testing.assert_array_equal(past_only, full[t])
        altered = m.log_close.copy()
        altered[t + 1:] += rng.normal(0, 0.05, altered[t + 1:].shape)  # another future
        np.testing.assert_array_equal(planted_score(altered, plant)[t], full[t])
    assert np.isfinite(full[LOOKBACK:]).any() and not np.isfinite(full[:5]).any()


def test_the_temporal_score_is_orthogonal_to_every_n_day_return_the_features_carry():
    rng = np.random.default_rng(1)
    lc = np.cumsum(rng.normal(0, 0.01, (20_000, 1)), axis=0)
    s = planted_score(lc, "temporal")[:, 0]
    for n in (1, 2, 3, 5, 10, 20, 60):
        ret = np.full(len(lc), np.nan)
        ret[n:] = lc[n:, 0] - lc[:-n, 0]
        ok = np.isfinite(s) & np.isfinite(ret)
        assert abs(np.corrcoef(s[ok], ret[ok])[0, 1]) < 0.03, n
    linear = planted_score(lc, "linear")[:, 0]
    ret5 = np.full(len(lc), np.nan)
    ret5[5:] = lc[5:, 0] - lc[:-5, 0]
    np.testing.assert_allclose(linear[5:], -ret5[5:])  # the linear plant is a feature, reversed


def test_a_temporal_market_s_labels_are_not_carried_by_last_day_returns(cal):
    """What the label holds, not only the score: each day's planted move lands on the next day
    alone, so the forward return's planted part is the score itself, and every n-day return and
    moving-average gap a last-day model reads stays below a fifth of the oracle's IC (the
    earlier plant spread its moves over h days and leaked a third of its strength into ret_5)."""
    m = generate(MarketSpec(instruments=150, days=2500, plant="temporal", ic=0.08, seed=12), cal)
    lc, h = m.log_close, m.spec.horizon
    fwd = np.full(lc.shape, np.nan)
    fwd[:-h] = lc[h:] - lc[:-h]
    oracle = m.realised["oracle_rank_ic"]
    assert oracle > 0.06, m.realised
    for n in (1, 2, 3, 5, 10, 20, 60):
        ret = np.full(lc.shape, np.nan)
        ret[n:] = lc[n:] - lc[:-n]
        assert abs(_mean_rank_ic(ret, fwd)["ic"]) < oracle / 5, n
    for n in (5, 10, 20):
        gap = lc - np.log(pd.DataFrame(np.exp(lc)).rolling(n).mean().to_numpy())
        assert abs(_mean_rank_ic(gap, fwd)["ic"]) < oracle / 5, f"ma_gap_{n}"


@pytest.mark.parametrize("plant, ic", [("linear", 0.08), ("temporal", -0.06)])
def test_the_planted_strength_is_realised(plant, ic, cal):
    m = generate(MarketSpec(instruments=150, days=2500, plant=plant, ic=ic, seed=11), cal)
    got = m.realised["oracle_rank_ic"]
    assert abs(got - ic) < 0.3 * abs(ic) + 0.01, m.realised


def test_a_null_market_holds_nothing_for_either_score(cal):
    null = generate(MarketSpec(instruments=150, days=2500, seed=11), cal).realised
    assert abs(null["linear_score_rank_ic"]) < 0.015 and abs(null["temporal_score_rank_ic"]) < 0.015, null


def test_a_single_instrument_plant_moves_its_direction(cal):
    m = generate(MarketSpec(instruments=1, days=5000, plant="temporal", ic=0.1, target="single", seed=2), cal)
    assert m.realised["kind"] == "single" and 0.52 < m.realised["oracle_auroc"] < 0.62, m.realised


def test_every_layout_is_read_alike_by_the_real_readers(tmp_path, cal):
    m = generate(MarketSpec(instruments=12, days=900, plant="temporal", ic=0.1, churn=0.25, seed=3), cal)
    written = write_market(m, tmp_path)
    assert set(written) == {"close_panel", "yahoo", "long", "parquet", "partitioned"}
    meta = json.loads((tmp_path / "market.json").read_text())
    assert meta["spec"]["plant"] == "temporal" and meta["realised"]["oracle_rank_ic"] == m.realised["oracle_rank_ic"]
    assert min(meta["listed_days"].values()) < 900 == max(meta["listed_days"].values())  # some list or delist
    closes = {}
    for layout in written:
        cfg = load_data_config(tmp_path / f"{layout}.yaml")
        cfg = dataclasses.replace(cfg, panel=dataclasses.replace(cfg.panel, min_days=50))
        frames, facts = read_all_sources(cfg)
        members, _ = read_members(cfg, frames)
        closes[layout] = {t: f["close"] for t, f in members.items()}
        assert facts["spx"]["end"] == str(m.dates[-1].date())  # context runs to the end: no curve cut short
    assert all(sorted(closes[layout]) == m.tickers for layout in written)
    for t in m.tickers:
        a = closes["close_panel"][t].dropna()
        for layout in ("yahoo", "long", "parquet", "partitioned"):
            b = closes[layout][t]
            assert len(b) == meta["listed_days"][t] and (b.index == a.index).all(), (layout, t)
            np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-5)


def test_a_generated_market_builds_through_the_dataset_command(tmp_path, repo_root, cal):
    write_market(generate(MarketSpec(instruments=10, days=800, plant="linear", ic=0.1, churn=0.0, seed=4), cal),
                 tmp_path / "m", ("long",))
    run = subprocess.run([sys.executable, str(repo_root / "ray_jobs" / "build_dataset.py"), "--config",
                          str(tmp_path / "m" / "long.yaml"), "--out", str(tmp_path / "npy"), "--quiet"],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "synthetic_linear_long" in run.stdout and (tmp_path / "npy" / "metadata.json").is_file()
    # The known answer travels with the dataset, and every report of a model prints it.
    planted = json.loads((tmp_path / "npy" / "metadata.json").read_text())["config"]["planted"]
    assert (planted["kind"], planted["ic"], planted["seed"]) == ("linear", 0.1, 4)
    assert planted["realised"]["oracle_rank_ic"] > 0.05
    line = planted_line({"planted": planted})[0]
    assert "planted linear at population IC 0.1" in line and "oracle_rank_ic +0." in line
    assert planted_line({}) == []  # real data: nothing


def test_a_long_file_with_a_wrong_date_column_is_named(tmp_path, cal):
    write_market(generate(MarketSpec(instruments=6, days=200, seed=6), cal), tmp_path, ("long",))
    config = (tmp_path / "long.yaml").read_text().replace("columns: {date: date, open:", "columns: {date: Day, open:")
    (tmp_path / "long.yaml").write_text(config)
    with pytest.raises(DataError, match=r"long.csv: missing column\(s\) date -> 'Day'"):
        read_all_sources(load_data_config(tmp_path / "long.yaml"))


def test_a_long_file_is_read_once_whatever_its_universe(tmp_path, cal, monkeypatch):
    """Reading it again per ticker made its cost grow with the square of the universe."""
    write_market(generate(MarketSpec(instruments=12, days=300, seed=7), cal), tmp_path, ("long",))
    cfg = load_data_config(tmp_path / "long.yaml")
    cfg = dataclasses.replace(cfg, panel=dataclasses.replace(cfg.panel, min_days=50))
    frames, _ = read_all_sources(cfg)
    reads, read_csv = [], pd.read_csv

    def counted(path, *a, **k):
        if k.get("nrows") != 0:  # header-only reads (its column names) aside
            reads.append(Path(path).name)
        return read_csv(path, *a, **k)

    monkeypatch.setattr(pd, "read_csv", counted)
    members, _ = read_members(cfg, frames)
    assert len(members) == 12 and reads.count("long.csv") == 1


def test_a_bad_parquet_universe_names_the_file_the_column_and_the_ticker(tmp_path, cal):
    write_market(generate(MarketSpec(instruments=6, days=200, seed=8), cal), tmp_path, ("parquet",))
    table = pd.read_parquet(tmp_path / "long.parquet")
    cfg = load_data_config(tmp_path / "parquet.yaml")
    cfg = dataclasses.replace(cfg, panel=dataclasses.replace(cfg.panel, min_days=50))
    frames, _ = read_all_sources(cfg)
    ticker = table["ticker"].iloc[0]
    for broken, message in [
        (table.drop(columns="volume"), r"long.parquet \(ticker \w+\): missing column\(s\) volume -> 'volume'"),
        (table.assign(close=table["close"].astype(str).where(table.index != 9, "n/a!")),  # its line 11
         rf"long.parquet \(ticker {table['ticker'].iloc[9]}\): column 'close', line 11: not a number: 'n/a!'"),
        (pd.concat([table, table[table["ticker"] == ticker].head(1)]),  # one (date, ticker) row twice
         rf"long.parquet \(ticker {ticker}\): column 'date', line \d+: duplicate date"),
    ]:
        broken.to_parquet(tmp_path / "long.parquet", index=False)
        with pytest.raises(DataError, match=message):
            read_members(cfg, frames)
    table.assign(ticker=table["ticker"].where(table.index != 5, None)).to_parquet(tmp_path / "long.parquet", index=False)
    with pytest.raises(DataError, match=r"long.parquet: column 'ticker', line 7: no ticker"):
        read_members(cfg, frames)
    (tmp_path / "long.parquet").write_text("date,ticker\n")  # not Parquet at all
    with pytest.raises(DataError, match="long.parquet: cannot read as Parquet"):
        read_members(cfg, frames)


def test_padded_cells_are_read_as_their_values(tmp_path, cal):
    """Blanks around a CSV cell (trailing ones survive the CSV reader) or a posted string are not data."""
    write_market(generate(MarketSpec(instruments=5, days=200, seed=9), cal), tmp_path, ("long",))
    clean_cfg = load_data_config(tmp_path / "long.yaml")
    clean_cfg = dataclasses.replace(clean_cfg, panel=dataclasses.replace(clean_cfg.panel, min_days=50))
    frames, _ = read_all_sources(clean_cfg)
    want, _ = read_members(clean_cfg, frames)
    table = pd.read_csv(tmp_path / "long.csv", dtype=str)
    padded = table.assign(ticker=table["ticker"] + "  ", date=table["date"] + " ", close=" " + table["close"] + " ")
    padded.to_csv(tmp_path / "long.csv", index=False)
    got, _ = read_members(clean_cfg, frames)
    assert sorted(got) == sorted(want)
    for t in want:
        pd.testing.assert_frame_equal(got[t], want[t])
    spec = dataclasses.replace(clean_cfg.sources["stocks"], filter={"ticker": sorted(want)[0]})  # a filter on a padded cell
    assert len(parse_table(spec, padded, "bars")) == len(want[sorted(want)[0]])
