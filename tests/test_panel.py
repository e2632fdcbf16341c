"""Panel datasets: many instruments on one calendar, split by date, fitted on the training
window of all of them, stored as matrices and cut into windows when drawn; labels relative
to the cross-section; and a user's folder of Yahoo-style CSVs made into a panel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stocktrend.config_io import with_overrides
from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
from stocktrend.data.panel import build_panel
from stocktrend.data.store import read_metadata
from stocktrend.data.windows import cut_windows, split_arrays, window_batches

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def small_panel_cfg(repo_root):
    """The 20-stock panel from 2004 with short windows (fast to build, still real)."""
    cfg = load_data_config(repo_root / "datasets" / "stocks20.yaml")
    return with_overrides(cfg, {"start": "2004-01-02", "seq_len": 10, "n_features": 12})


@pytest.fixture(scope="module")
def small_panel(small_panel_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("panel") / "ds"
    meta = build_dataset(small_panel_cfg, out)
    return small_panel_cfg, out, meta


def test_panel_layout_is_compact_and_windows_are_cut_from_it(small_panel):
    cfg, out, meta = small_panel
    assert meta["layout"] == "panel" and len(meta["tickers"]) == 20
    features = np.load(out / "features.npy")
    calendar = np.load(out / "calendar.npy")
    assert features.shape == (20, len(calendar), 12) and features.dtype == np.float32
    assert meta["size"]["materialised_windows_mb"] > 5 * meta["size"]["features_mb"]
    for split in ("train", "val", "test"):
        s = split_arrays(out, split)
        assert s["X"].shape == (len(s["y"]), 10, 12) and np.isfinite(s["X"]).all()
        assert (s["dates"] == calendar[s["index"][:, 1]]).all()
        i = len(s["index"]) // 2  # one window by hand: the instrument's rows e-9..e
        t, e = s["index"][i]
        np.testing.assert_array_equal(s["X"][i], features[t, e - 9 : e + 1])
        # In batches cut as they are reached (a universe's split is never whole): the same windows.
        np.testing.assert_array_equal(np.concatenate(list(window_batches(out, split, 1000))), s["X"])
    assert not any(p.name.endswith("_X.npy") for p in out.iterdir())  # windows are not materialised


def test_no_date_in_two_splits_for_any_instrument_and_the_purge_holds(small_panel):
    cfg, out, meta = small_panel
    calendar = np.load(out / "calendar.npy")
    spans = {}
    for split in ("train", "val", "test"):
        rows = np.load(out / f"{split}_index.npy")[:, 1]
        days = set()
        for e in np.unique(rows):
            days.update(range(e - cfg.seq_len + 1, e + cfg.horizon + 1))
        spans[split] = days
    # Across all instruments at once: a day of [window start, label end] belongs to one split.
    assert not spans["train"] & spans["val"] and not spans["val"] & spans["test"] and not spans["train"] & spans["test"]
    assert str(calendar[np.load(out / "val_index.npy")[:, 1].min()]) >= meta["boundaries"]["val_start"]


def test_relative_median_labels_split_each_date_in_halves(small_panel):
    cfg, out, meta = small_panel
    test = split_arrays(out, "test")
    fwd = np.load(out / "forward_returns.npy")
    y = test["y"].argmax(1)
    frame = pd.DataFrame({"date": test["dates"], "y": y, "r": fwd[test["index"][:, 0], test["index"][:, 1]]})
    for _, g in list(frame.groupby("date"))[:50]:
        # The label is "beats the median of all instruments with a known return that day".
        assert ((g["r"] > g["r"].median()) == g["y"].astype(bool)).all() or len(g) < 20
    assert 0.45 < y.mean() < 0.55


def test_a_later_listing_joins_without_look_ahead(small_panel_cfg):
    """An instrument whose history starts in 2008: the others keep every feature that does not
    compare instruments, keep all their windows before 2008 (the cross-sectional features are
    computed over the instruments present), and it has no window before its own warm-up."""
    from stocktrend.data.panel_build import labels_and_ends
    from stocktrend.data.sources import read_all_sources

    frames, _ = read_all_sources(small_panel_cfg)
    panel = build_panel(small_panel_cfg, frames)
    stocks = frames["stocks"].copy()
    stocks.loc[stocks.index < "2008-01-02", "AMD"] = np.nan  # AMD "lists" in 2008
    late = build_panel(small_panel_cfg, {**frames, "stocks": stocks})
    amd = panel.tickers.index("AMD")
    others = [i for i in range(len(panel.tickers)) if i != amd]
    own = [k for k, n in enumerate(panel.names) if not n.startswith("xs_")]
    np.testing.assert_array_equal(late.features[others][:, :, own], panel.features[others][:, :, own])
    before = panel.calendar < pd.Timestamp("2008-01-02")
    ends, late_ends = labels_and_ends(small_panel_cfg, panel)[2], labels_and_ends(small_panel_cfg, late)[2]
    assert not late_ends[amd][before].any() and ends[amd][before].any()
    np.testing.assert_array_equal(late_ends[others], ends[others])  # nobody else lost a window
    xs = [k for k, n in enumerate(panel.names) if n.startswith("xs_")]
    assert np.isfinite(late.features[others][:, before][:, :, xs]).mean() > 0.9  # ranked among the 19 present


def test_panel_features_at_t_ignore_every_later_row(small_panel_cfg):
    """The single stock's look-ahead property test, on the panel: own, cross-sectional and
    market features at day t do not move when any source's later rows change."""
    from stocktrend.data.sources import read_all_sources
    from test_data_leakage import perturb_later_rows

    frames, _ = read_all_sources(small_panel_cfg)
    base = build_panel(small_panel_cfg, frames)
    rng = np.random.default_rng(0)
    for t in (base.calendar[len(base.calendar) // 3], base.calendar[2 * len(base.calendar) // 3]):
        upto = base.calendar <= t
        for kind in ("noise", "shuffle", "scale"):
            got = build_panel(small_panel_cfg, perturb_later_rows(frames, t, rng, kind))
            np.testing.assert_allclose(got.features[:, upto], base.features[:, upto], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{kind} after {t.date()}")
            assert not np.allclose(got.features[:, ~upto], base.features[:, ~upto], equal_nan=True)


def test_boundaries_do_not_depend_on_the_window_length(small_panel_cfg, tmp_path):
    a = build_dataset(small_panel_cfg, tmp_path / "a")
    b = build_dataset(with_overrides(small_panel_cfg, {"seq_len": 20, "split": {"purge_rows": 24}}), tmp_path / "b")
    assert a["boundaries"]["val_start"] == b["boundaries"]["val_start"]
    assert a["boundaries"]["test_start"] == b["boundaries"]["test_start"]


def test_yahoo_folder_becomes_a_panel_dataset_and_a_model(tmp_path, repo_root):
    """A user's folder of Yahoo Finance exports, one per ticker, with one config file."""
    from conftest import load_job

    bokeh = pd.read_csv(repo_root / "datasets" / "crude-datasets" / "bokeh_stocks_ohlcv.csv")
    folder = tmp_path / "yahoo"
    folder.mkdir()
    for ticker, g in bokeh.groupby("Ticker"):
        if len(g) < 1500:  # FB: 196 rows
            continue
        g[["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]].to_csv(folder / f"{ticker}.csv", index=False)
    config = tmp_path / "mine.yaml"
    config.write_text(f"""
name: mine
ticker: MINE
panel: {{folder: {folder}}}
label: relative_median
sources:
  spx: {{path: {repo_root / 'datasets/crude-datasets/sp500_close.csv'}, kind: close, columns: {{date: date, close: SP500}}}}
seq_len: 10
n_features: 10
""")
    assert load_job("build_dataset").main(["--config", str(config), "--out", str(tmp_path / "npy"), "--quiet"]) == 0
    meta = read_metadata(tmp_path / "npy")
    assert meta["layout"] == "panel" and sorted(meta["tickers"]) == sorted(p.stem for p in folder.glob("*.csv"))
    assert set(meta["sources"]) >= {"spx", *meta["tickers"]}  # every file read is recorded with its sha256
    code = load_job("train").main(["--preset", "tiny", "--no-ray", "--epochs", "1", "--batch-size", "64",
                                   "--accumulate", "1", "--config", str(config), "--models", str(tmp_path / "models"),
                                   "--storage-path", str(tmp_path / "runs"), "--name", "mine_tiny"])
    assert code == 0
    version = (tmp_path / "models" / "mine_tiny" / "latest").read_text().strip()
    pre = json.loads((tmp_path / "models" / "mine_tiny" / version / "preprocessing.json").read_text())
    assert pre["data_config"]["label"] == "relative_median" and pre["data_config"]["panel"]["folder"]


def test_cut_windows_is_the_one_windowing_rule():
    m = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.testing.assert_array_equal(cut_windows(m, np.array([2, 9]), 3), [m[0:3], m[7:10]])
    cube = np.stack([m, m + 100])
    np.testing.assert_array_equal(cut_windows(cube, np.array([[1, 5], [0, 2]]), 3), [cube[1, 3:6], cube[0, 0:3]])


def test_a_change_of_build_code_is_a_new_dataset(small_panel_cfg, tmp_path):
    """The cache keys datasets on the source of the code that builds them: an edited split,
    fit, label or feature rule is rebuilt without anyone bumping a version."""
    import shutil

    from stocktrend.data import store

    package = tmp_path / "stocktrend"
    shutil.copytree(store.PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    assert store.code_fingerprint(package) == store.code_fingerprint()
    for name in ("data/splits.py", "data/fitting.py", "data/labels.py", "data/panel.py", "data/features.py"):
        edited = package / name
        original = edited.read_text()
        edited.write_text(original + "\n# an edit\n")
        store.code_fingerprint.cache_clear()
        assert store.code_fingerprint(package) != store.code_fingerprint(), name
        edited.write_text(original)
    store.code_fingerprint.cache_clear()
    (package / "data" / "synthetic.py").write_text("# the generator writes inputs; it builds nothing\n")
    assert store.code_fingerprint(package) == store.code_fingerprint()
    assert store.fingerprint(small_panel_cfg) == store.fingerprint(small_panel_cfg)


def test_a_build_runs_only_code_its_fingerprint_covers():
    import subprocess
    import sys

    from stocktrend.data import store

    code = ("import sys, stocktrend.data.build, stocktrend.data.panel_build, stocktrend.data.cache; "
            "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('stocktrend') and "
            "getattr(m, '__file__', None)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    hashed = {f.resolve() for f in store.build_code_files()}
    missed = [f for f in loaded if Path(f).resolve() not in hashed and not f.endswith("__init__.py")]
    assert not missed, f"the build imports code its fingerprint does not hash: {missed}"


def test_window_batches_of_a_single_stock_are_its_materialised_windows(tiny_dataset_dir):
    x = np.load(tiny_dataset_dir / "val_X.npy")
    got = list(window_batches(tiny_dataset_dir, "val", 7))
    assert all(len(b) <= 7 for b in got) and all(b.dtype == np.float32 for b in got)
    np.testing.assert_array_equal(np.concatenate(got), x)
