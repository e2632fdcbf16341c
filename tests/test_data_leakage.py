"""Leakage made impossible by construction, checked by tests that would catch a regression."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stocktrend.config_io import with_overrides
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


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.floats(0.05, 0.95), seed=st.integers(0, 2**32 - 1))
def test_features_at_t_ignore_every_later_row(small, cut, seed):
    cfg, frames, base = small
    t = base.index[int(cut * (len(base) - 1))]
    rng = np.random.default_rng(seed)
    altered = {}
    for name, f in frames.items():
        f = f.copy()
        later = f.index > t
        # Scale whole rows (keeps OHLC consistent) by random positive factors.
        f.loc[later] = f.loc[later].mul(rng.uniform(0.3, 3.0, size=later.sum()), axis=0)
        altered[name] = f
    got = build_features(cfg, altered)
    pd.testing.assert_frame_equal(got.loc[:t], base.loc[:t], check_exact=False, rtol=1e-12, atol=1e-12)
    assert not got.loc[t:].iloc[1:].equals(base.loc[t:].iloc[1:])  # the change did reach later rows


def _write_scrambled_target(src, dst, after: str, seed: int) -> None:
    raw = pd.read_csv(src)
    later = pd.to_datetime(raw["Date"]) >= pd.Timestamp(after)
    factor = np.random.default_rng(seed).uniform(0.5, 1.5, size=later.sum())
    for col in ("Open", "High", "Low", "Close"):
        raw.loc[later, col] = raw.loc[later, col] * factor
    raw.to_csv(dst, index=False)


def test_validation_and_test_labels_do_not_move_the_fits(tmp_path, repo_root):
    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml")
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
    a = build_dataset(cfg, tmp_path / "a")
    b = build_dataset(with_overrides(cfg, {"seq_len": 60, "n_features": 20}), tmp_path / "b")
    assert a["boundaries"]["val_start"] == b["boundaries"]["val_start"]
    assert a["boundaries"]["test_start"] == b["boundaries"]["test_start"]
    np.testing.assert_array_equal(np.load(tmp_path / "a/test_dates.npy"), np.load(tmp_path / "b/test_dates.npy"))


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
