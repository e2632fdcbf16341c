"""The default dataset built from the committed real CSVs: shape, splits, fits, labels."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest

from stocktrend.config_io import with_overrides
from stocktrend.data.build import build_dataset, prepare
from stocktrend.data.cache import build_cached
from stocktrend.data.config import load_data_config
from stocktrend.data.splits import day_span
from stocktrend.data.store import read_metadata

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def built(tmp_path_factory, repo_root):
    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml")
    out = tmp_path_factory.mktemp("ds") / "npy"
    meta = build_dataset(cfg, out)
    arrays = {f.stem: np.load(f) for f in out.glob("*.npy")}
    return cfg, out, meta, arrays, prepare(cfg)


def test_default_build_meets_the_bar(built):
    cfg, out, meta, a, _ = built
    n = sum(len(a[f"{s}_X"]) for s in ("train", "val", "test"))
    assert n >= 5000
    for s in ("train", "val", "test"):
        assert a[f"{s}_X"].shape[1:] == (30, 50) and a[f"{s}_X"].dtype == np.float32
        assert a[f"{s}_y"].shape == (len(a[f"{s}_X"]), 2) and a[f"{s}_y"].dtype == np.float32
        assert np.all(a[f"{s}_y"].sum(axis=1) == 1)
        assert len(a[f"{s}_dates"]) == len(a[f"{s}_X"])
        assert np.isfinite(a[f"{s}_X"]).all()
    assert len(meta["sources"]) >= 4
    assert meta["features"]["n_candidates"] >= 100
    assert len(meta["features"]["selected"]) == 50 == len(set(meta["features"]["selected"]))
    assert meta["protocol"] == "clean" and meta["leaky"] is False
    assert (out / "MSFT_analysis.csv").is_file()


def _rows(calendar: pd.DatetimeIndex, dates: np.ndarray) -> np.ndarray:
    return calendar.get_indexer(pd.DatetimeIndex(dates.astype("datetime64[ns]")))


def test_splits_are_chronological_and_day_sets_disjoint(built):
    cfg, _, meta, a, p = built
    spans = {}
    for s in ("train", "val", "test"):
        rows = np.unique(_rows(p.calendar, a[f"{s}_dates"]))
        assert (rows >= 0).all()
        spans[s] = day_span(p.calendar, rows, cfg.seq_len, cfg.horizon)
    assert not spans["train"] & spans["val"]
    assert not spans["val"] & spans["test"]
    assert not spans["train"] & spans["test"]
    assert a["train_dates"].max() < a["val_dates"].min() < a["val_dates"].max() < a["test_dates"].min()
    # metadata states it too: each split's label end precedes the next split's first window day
    sp = meta["splits"]
    assert sp["train"]["label_end"] < sp["val"]["window_start"]
    assert sp["val"]["label_end"] < sp["test"]["window_start"]


def test_labels_match_raw_closes(built, repo_root):
    _, _, meta, a, _ = built
    raw = pd.read_csv(repo_root / "datasets" / "crude-datasets" / "msft.csv", parse_dates=["Date"]).set_index("Date")
    close = raw["Close"]
    pos = {d: i for i, d in enumerate(close.index)}
    h = meta["horizon"]
    for s in ("train", "val", "test"):
        for d, y in zip(a[f"{s}_dates"][::37], a[f"{s}_y"][::37]):
            i = pos[pd.Timestamp(d)]
            assert int(y[1]) == int(close.iloc[i + h] > close.iloc[i]), (s, d)


def test_windows_hold_the_scaled_selected_features_of_the_right_days(built):
    cfg, _, meta, a, p = built
    sel = meta["features"]["selected"]
    mean, std = np.array(meta["scaler"]["mean"]), np.array(meta["scaler"]["std"])
    values = p.features[sel].to_numpy()
    for s in ("train", "val", "test"):
        for i in (0, len(a[f"{s}_X"]) // 2, len(a[f"{s}_X"]) - 1):
            t = p.calendar.get_loc(pd.Timestamp(a[f"{s}_dates"][i]))
            expect = (values[t - cfg.seq_len + 1 : t + 1] - mean) / std
            np.testing.assert_allclose(a[f"{s}_X"][i], expect, rtol=1e-5, atol=1e-5)


def test_scaler_statistics_are_those_of_the_training_rows(built):
    cfg, _, meta, a, p = built
    ends = np.unique(_rows(p.calendar, a["train_dates"]))
    mask = np.zeros(len(p.calendar), dtype=bool)
    for e in ends:
        mask[e - cfg.seq_len + 1 : e + 1] = True
    train_rows = p.features[meta["features"]["selected"]].to_numpy()[mask]
    np.testing.assert_allclose(meta["scaler"]["mean"], train_rows.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(meta["scaler"]["std"], train_rows.std(axis=0), rtol=1e-9)
    assert meta["scaler"]["fit_end"] == meta["splits"]["train"]["end"]


def test_oversampling_touches_only_training(built):
    _, _, meta, a, _ = built
    for s in ("val", "test"):
        assert len(np.unique(a[f"{s}_dates"])) == len(a[f"{s}_dates"])  # no duplicates
        assert meta["splits"][s]["class_counts"] == meta["splits"][s]["class_counts_before_balancing"]
        assert np.all(np.diff(a[f"{s}_dates"].astype(np.int64)) > 0)
    counts = meta["splits"]["train"]["class_counts"]
    assert counts[0] == counts[1]  # balanced
    assert len(a["train_dates"]) > len(np.unique(a["train_dates"]))  # by duplication, not synthesis
    before = meta["splits"]["train"]["class_counts_before_balancing"]
    assert max(before) == counts[0] and sum(before) == meta["splits"]["train"]["n_unique_windows"]


def test_build_is_deterministic(built, tmp_path):
    cfg, _, meta, a, _ = built
    meta2 = build_dataset(cfg, tmp_path / "again")
    assert meta2 == meta
    for name, arr in a.items():
        np.testing.assert_array_equal(np.load(tmp_path / "again" / f"{name}.npy"), arr)


def test_read_metadata_roundtrip(built):
    _, out, meta, _, _ = built
    assert read_metadata(out) == meta


def test_the_cache_never_serves_a_stale_dataset(tmp_path, repo_root):
    """An edited source file or config builds a new dataset; an unchanged one reuses the build."""
    base = load_data_config(repo_root / "datasets" / "msft_v2.yaml", start="2008-01-02", seq_len=10, n_features=8)
    wti = tmp_path / "wti.csv"
    shutil.copy(base.source_path("wti"), wti)
    cfg = dataclasses.replace(base, sources={**base.sources, "wti": dataclasses.replace(base.sources["wti"], path=str(wti))})
    cache = tmp_path / "cache"
    first = build_cached(cfg, cache)
    built_at = (first / "metadata.json").stat().st_mtime_ns
    assert build_cached(cfg, cache) == first and (first / "metadata.json").stat().st_mtime_ns == built_at  # reused
    lines = wti.read_text().splitlines()
    date, value = lines[-300].split(",")
    lines[-300] = f"{date},{float(value) * 1.5}"  # one oil price, in the test period
    wti.write_text("\n".join(lines) + "\n")
    edited = build_cached(cfg, cache)
    assert edited != first
    assert not np.array_equal(np.load(edited / "test_X.npy"), np.load(first / "test_X.npy")) or \
        read_metadata(edited)["sources"] != read_metadata(first)["sources"]
    reconfigured = build_cached(with_overrides(cfg, {"n_features": 9}), cache)
    assert reconfigured not in (first, edited) and np.load(reconfigured / "train_X.npy").shape[2] == 9
