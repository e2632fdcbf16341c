"""Leakage made impossible by construction, checked by tests that would catch a regression."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stocktrend.config_io import config_to_dict, with_overrides
from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
from stocktrend.data.features import build_features
from stocktrend.data.sources import read_all_sources
from stocktrend.data.splits import assign_splits, day_span, walk_forward_plans

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def small(tmp_path_factory, repo_root):
    """The default config over real data cut to 1994-1998 (fast to rebuild)."""
    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml")
    frames, _ = read_all_sources(cfg)
    lo, hi = pd.Timestamp("1994-01-01"), pd.Timestamp("1998-12-31")
    frames = {k: f[(f.index >= lo) & (f.index <= hi)] for k, f in frames.items()}
    cfg = with_overrides(cfg, {"start": lo.date()})
    return cfg, frames, build_features(cfg, frames)


def perturb_later_rows(frames: dict[str, pd.DataFrame], t, rng: np.random.Generator, kind: str) -> dict:
    """Every source's rows after ``t`` changed so that every feature family sees it: scale-free
    features (ranges over the close, candle shapes, cross-sectional dispersion) survive a
    common factor per row, so the numbers change independently per column, or rows move."""
    altered = {}
    for name, f in frames.items():
        f = f.copy()
        later = f.index > t
        n, cols = int(later.sum()), f.columns
        values = f.loc[later].to_numpy(dtype=float, copy=True)
        if kind == "noise":  # an independent factor per cell
            values = values * rng.lognormal(0.0, 0.2, size=values.shape)
        elif kind == "shuffle":  # later rows moved among the later dates
            values = values[rng.permutation(n)]
        elif kind == "volume":  # only volumes (the other columns keep their values)
            values[:, [i for i, c in enumerate(cols) if "volume" in c.lower()]] *= rng.uniform(0.1, 10.0, size=(n, 1))
        elif kind == "scale":  # whole rows by one factor each (OHLC stays consistent)
            values = values * rng.uniform(0.3, 3.0, size=(n, 1))
        f.loc[later] = values
        altered[name] = f
    return altered


PERTURBATIONS = ("noise", "shuffle", "volume", "scale")


def columns_that_see_the_future(features, cfg, frames, base, t, rng) -> set[str]:
    """Feature columns whose value at a day <= t moved when only rows after t changed."""
    moved = set()
    for kind in PERTURBATIONS:
        got = features(cfg, perturb_later_rows(frames, t, rng, kind))
        before, after = base.loc[:t], got.loc[:t]
        differs = ~np.isclose(after.to_numpy(), before.to_numpy(), rtol=1e-12, atol=1e-12, equal_nan=True)
        moved |= {c for c, d in zip(base.columns, differs.any(axis=0)) if d}
        assert not got.loc[t:].iloc[1:].equals(base.loc[t:].iloc[1:]), kind  # the change did reach later rows
    return moved


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.05, 0.95), seed=st.integers(0, 2**32 - 1))
def test_features_at_t_ignore_every_later_row(small, cut, seed):
    cfg, frames, base = small
    t = base.index[int(cut * (len(base) - 1))]
    assert columns_that_see_the_future(build_features, cfg, frames, base, t, np.random.default_rng(seed)) == set()


@pytest.mark.parametrize("leak", ["range_hl_tomorrow", "volume_z_tomorrow", "dispersion_tomorrow"])
def test_a_deliberately_leaking_feature_is_caught(small, leak):
    """The property test's own mutation check: each of these looks one day ahead, in a
    family a common per-row factor would leave unchanged (the former perturbation missed
    the first and the third)."""
    cfg, frames, base = small
    target = cfg.target

    def leaking(cfg_, frames_):
        f = build_features(cfg_, frames_)
        bars = frames_[target]
        if leak == "range_hl_tomorrow":
            f[leak] = ((bars["high"] - bars["low"]) / bars["close"]).shift(-1).reindex(f.index)
        elif leak == "volume_z_tomorrow":
            f[leak] = np.log1p(bars["volume"]).shift(-1).reindex(f.index)
        else:
            panel = frames_["stocks"]
            f[leak] = np.log(panel / panel.shift(5)).std(axis=1).shift(-1).reindex(f.index)
        return f

    t = base.index[len(base) // 2]
    leaky_base = leaking(cfg, frames)
    assert columns_that_see_the_future(leaking, cfg, frames, leaky_base, t, np.random.default_rng(0)) == {leak}


def _write_scrambled_target(src, dst, after: str, seed: int) -> None:
    raw = pd.read_csv(src)
    later = pd.to_datetime(raw["Date"]) >= pd.Timestamp(after)
    factor = np.random.default_rng(seed).uniform(0.5, 1.5, size=later.sum())
    for col in ("Open", "High", "Low", "Close"):
        raw.loc[later, col] = raw.loc[later, col] * factor
    raw.to_csv(dst, index=False)


@pytest.mark.parametrize("selection", ["mean_diff", "mutual_info"])
def test_validation_and_test_labels_do_not_move_the_fits(tmp_path, repo_root, selection):
    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml", selection=selection)
    a = build_dataset(cfg, tmp_path / "a")
    scrambled = tmp_path / "msft_scrambled.csv"
    _write_scrambled_target(cfg.source_path("msft"), scrambled, a["boundaries"]["val_start"], seed=1)
    sources = dict(cfg.sources)
    sources["msft"] = dataclasses.replace(cfg.sources["msft"], path=str(scrambled))
    cfg_b = dataclasses.replace(cfg, sources=sources)
    b = build_dataset(cfg_b, tmp_path / "b")
    # Every validation and test label changed freely...
    assert not np.array_equal(np.load(tmp_path / "a/val_y.npy"), np.load(tmp_path / "b/val_y.npy"))
    # ...and nothing fitted on the training window moved.
    assert b["features"]["selected"] == a["features"]["selected"]
    assert b["features"]["candidates"] == a["features"]["candidates"]
    assert b["scaler"] == a["scaler"]
    np.testing.assert_array_equal(np.load(tmp_path / "a/train_X.npy"), np.load(tmp_path / "b/train_X.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "a/train_y.npy"), np.load(tmp_path / "b/train_y.npy"))


def test_seed_protocol_is_marked_and_really_leaks(tmp_path, repo_root):
    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml", protocol="seed")
    meta = build_dataset(cfg, tmp_path / "seed")
    assert meta["leaky"] is True and "LEAKY" in meta["protocol_note"]
    train = set(np.load(tmp_path / "seed/train_dates.npy").tolist())
    test = np.load(tmp_path / "seed/test_dates.npy").tolist()
    assert any(d in train for d in test)  # identical windows on both sides: the reference's leak
    assert meta["scaler"]["fit_end"] >= meta["splits"]["test"]["end"]


@pytest.mark.parametrize("seq_len,horizon,gap", [(30, 5, None), (5, 1, None), (60, 10, None), (30, 5, 80)])
def test_purge_makes_day_sets_disjoint(seq_len, horizon, gap):
    calendar = pd.bdate_range("2000-01-03", periods=600)
    ends = np.arange(seq_len - 1, 600 - horizon)
    from stocktrend.data.splits import SplitPlan

    plan = SplitPlan(calendar[400].date(), calendar[500].date())
    purge = gap if gap is not None else seq_len + horizon - 1
    parts = assign_splits(calendar, ends, plan, purge)
    spans = {k: day_span(calendar, v, seq_len, horizon) for k, v in parts.items()}
    assert not spans["train"] & spans["val"] and not spans["val"] & spans["test"]
    # the gap is the smallest that works: one row less would overlap
    if gap is None:
        tight = assign_splits(calendar, ends, plan, purge - 1)
        assert day_span(calendar, tight["train"], seq_len, horizon) & spans["val"]


def test_boundaries_do_not_depend_on_seq_len_or_feature_count(tmp_path, repo_root):
    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml")
    cfg = with_overrides(cfg, {"split": {**config_to_dict(cfg.split), "purge_rows": 60 + cfg.horizon - 1}})
    a = build_dataset(cfg, tmp_path / "a")
    b = build_dataset(with_overrides(cfg, {"seq_len": 60, "n_features": 20}), tmp_path / "b")
    assert a["boundaries"]["val_start"] == b["boundaries"]["val_start"]
    assert a["boundaries"]["test_start"] == b["boundaries"]["test_start"]
    # Trials drawing different windows are validated (and tested) on the same days: the
    # purge is sized for the longest window (as a search space sizes it), so no split shrinks.
    for split in ("val", "test"):
        np.testing.assert_array_equal(np.load(tmp_path / f"a/{split}_dates.npy"), np.load(tmp_path / f"b/{split}_dates.npy"))


def test_walk_forward_folds_never_train_on_a_test_day(small):
    cfg, frames, feats = small
    calendar = feats.index
    ends = np.arange(300, len(calendar) - cfg.horizon)
    plans = walk_forward_plans(calendar[ends], folds=3)
    assert len(plans) == 3
    last_test_end = None
    for plan in plans:
        parts = assign_splits(calendar, ends, plan, cfg.purge_rows)
        spans = {k: day_span(calendar, v, cfg.seq_len, cfg.horizon) for k, v in parts.items()}
        assert not spans["train"] & spans["test"] and not spans["val"] & spans["test"]
        assert len(parts["test"]) > 0 and len(parts["train"]) > len(parts["test"])
        if last_test_end is not None:  # expanding: consecutive, non-overlapping test blocks
            assert pd.Timestamp(plan.test_start) > last_test_end
        last_test_end = pd.Timestamp(plan.end)


def test_walk_forward_fold_datasets_fit_inside_each_fold(tmp_path, repo_root):
    from stocktrend.data.build import prepare
    from stocktrend.data.store import read_metadata
    from stocktrend.evaluation.repeated import fold_datasets

    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml")
    calendar = prepare(cfg).calendar
    folds = fold_datasets(cfg, 3, tmp_path)
    tests = []
    for fold in folds:
        meta = read_metadata(fold)
        spans = {}
        for s in ("train", "val", "test"):
            rows = calendar.get_indexer(pd.DatetimeIndex(np.load(fold / f"{s}_dates.npy").astype("datetime64[ns]")))
            spans[s] = day_span(calendar, np.unique(rows), cfg.seq_len, cfg.horizon)
        assert not spans["train"] & spans["test"] and not spans["val"] & spans["test"]
        assert not spans["train"] & spans["val"]
        assert meta["scaler"]["fit_end"] < meta["splits"]["val"]["start"]  # fitted inside the fold's training window
        tests.append((meta["splits"]["test"]["start"], meta["splits"]["test"]["end"]))
    assert all(a[1] < b[0] for a, b in zip(tests, tests[1:]))  # consecutive test blocks, no overlap


def _forward_returns(close: pd.Series, dates: np.ndarray, horizon: int) -> np.ndarray:
    fwd = close.shift(-horizon) / close - 1
    return fwd.reindex(pd.DatetimeIndex(dates.astype("datetime64[ns]"))).to_numpy()


def test_v1_quantile_edges_come_from_training_returns_only(tmp_path, repo_root):
    """The reference's v1 mode: 5 classes from quantiles of the 10-day return. The edges are
    the training windows' quantiles, recomputed here from the raw closes, and scrambling
    every later price moves no edge (but moves later labels)."""
    cfg = load_data_config(repo_root / "datasets" / "msft_v1.yaml", start="2004-01-02", n_features=20)
    a = build_dataset(cfg, tmp_path / "a")
    close = pd.read_csv(cfg.source_path("msft"), index_col="Date", parse_dates=True)["Close"]
    train_fwd = _forward_returns(close, np.unique(np.load(tmp_path / "a/train_dates.npy")), cfg.horizon)
    np.testing.assert_allclose(a["class_edges"], np.quantile(train_fwd, [0.2, 0.4, 0.6, 0.8]), rtol=1e-12)
    val_fwd = _forward_returns(close, np.load(tmp_path / "a/val_dates.npy"), cfg.horizon)
    expected = np.searchsorted(np.asarray(a["class_edges"]), val_fwd, side="right")
    np.testing.assert_array_equal(np.load(tmp_path / "a/val_y.npy").argmax(1), expected)

    scrambled = tmp_path / "msft_scrambled.csv"
    _write_scrambled_target(cfg.source_path("msft"), scrambled, a["boundaries"]["val_start"], seed=3)
    sources = {**cfg.sources, "msft": dataclasses.replace(cfg.sources["msft"], path=str(scrambled))}
    b = build_dataset(dataclasses.replace(cfg, sources=sources), tmp_path / "b")
    assert b["class_edges"] == a["class_edges"]
    assert not np.array_equal(np.load(tmp_path / "a/test_y.npy"), np.load(tmp_path / "b/test_y.npy"))


def test_labels_use_the_adjusted_close_of_a_yahoo_file(tmp_path, repo_root):
    """A Yahoo export whose Adj Close differs from Close by dividends (5% steps, quarterly):
    the label is the adjusted close's direction, which here differs from the raw close's."""
    raw = pd.read_csv(repo_root / "datasets" / "crude-datasets" / "msft.csv", parse_dates=["Date"])
    raw = raw[raw["Date"] >= "2007-01-01"].reset_index(drop=True)
    dividends = pd.date_range("2007-03-15", "2017-12-31", freq="3MS") + pd.Timedelta(days=14)
    after = np.array([(dividends > d).sum() for d in raw["Date"]])  # dividends still to come
    raw["Adj Close"] = raw["Close"] * 0.95 ** after
    path = tmp_path / "MSFT.csv"
    raw[["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]].to_csv(path, index=False)
    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml", start="2008-01-02", seq_len=10, n_features=8)
    spec = dataclasses.replace(cfg.sources["msft"], path=str(path), columns={
        "date": "Date", "open": "Open", "high": "High", "low": "Low", "close": "Close", "adj_close": "Adj Close",
        "volume": "Volume"})
    build_dataset(dataclasses.replace(cfg, sources={**cfg.sources, "msft": spec}), tmp_path / "ds")
    adj, close = raw.set_index("Date")["Adj Close"], raw.set_index("Date")["Close"]
    for split in ("val", "test"):
        dates = np.load(tmp_path / "ds" / f"{split}_dates.npy")
        got = np.load(tmp_path / "ds" / f"{split}_y.npy").argmax(1)
        np.testing.assert_array_equal(got, (_forward_returns(adj, dates, cfg.horizon) > 0).astype(int))
        assert (got != (_forward_returns(close, dates, cfg.horizon) > 0)).any()  # the test can tell them apart


def test_context_is_carried_forward_at_most_ffill_limit_days(small):
    """WTI missing for 10 trading days: its features carry the last value for ffill_limit
    (5) days, then are missing (NaN: no window covers those days), never filled backward."""
    cfg, frames, base = small
    days = base.index[400:410]
    wti = frames["wti"].drop(index=frames["wti"].index.intersection(days))
    got = build_features(cfg, {**frames, "wti": wti})
    level = got["wti_ret_1"]
    assert (level.loc[days[:5]] == 0).all()  # carried: the same close, a zero return
    assert level.loc[days[5:]].isna().all()
    assert got.loc[: days[0]].iloc[:-1].equals(base.loc[: days[0]].iloc[:-1])  # nothing before the gap moved
