"""The streamed panel build (passes over chunks of instruments, in this process or as Ray
tasks) writes the same dataset as the in-memory build, bit for bit, from every layout a user
brings; its fits come from per-instrument training statistics that agree with fitting the
rows themselves; a build that fails leaves the previous dataset and no parts behind."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import StandardScaler

from stocktrend.data import fitting, panel_stream
from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
from stocktrend.data.errors import DataError
from stocktrend.data.panel_build import build_panel_dataset
from stocktrend.data.panel_stream import build_panel_streamed, streamed
from stocktrend.data.synthetic import MarketSpec, generate
from stocktrend.data.synthetic_files import write_market

pytestmark = pytest.mark.timeout(300)
LAYOUTS = ("close_panel", "yahoo", "long", "parquet", "partitioned")


@pytest.fixture(scope="module")
def market_files(tmp_path_factory) -> Path:
    """14 instruments over 900 days, a third of them listing late or delisting early (so some
    fall short of min_days and are left out), in every layout."""
    out = tmp_path_factory.mktemp("stream") / "market"
    write_market(generate(MarketSpec(instruments=14, days=900, churn=0.35, seed=3)), out, LAYOUTS)
    return out


def config(files: Path, layout: str):
    """The generated config, with min_days past some churned instruments' histories."""
    cfg = load_data_config(files / f"{layout}.yaml")
    return dataclasses.replace(cfg, panel=dataclasses.replace(cfg.panel, min_days=750))


def linked_copy(market: Path, to: Path, but: str = "") -> Path:
    """The market's files linked into ``to`` (its configs copied: a config's folder is its own)."""
    to.mkdir()
    for p in market.iterdir():
        if p.suffix == ".yaml":
            shutil.copy(p, to / p.name)
        elif p.name != but:
            (to / p.name).symlink_to(p)
    return to


def assert_same_dataset(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> None:
    names = sorted(p.name for p in a.glob("*.npy"))
    assert names == sorted(p.name for p in b.glob("*.npy")) and "features.npy" in names
    for name in names:
        x, y = np.load(a / name), np.load(b / name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{name} differs"
    meta_a, meta_b = (json.loads((d / "metadata.json").read_text()) for d in (a, b))
    assert {k: v for k, v in meta_a.items() if k not in ignore} == {k: v for k, v in meta_b.items() if k not in ignore}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_streamed_build_writes_the_in_memory_dataset(market_files, tmp_path, layout):
    cfg = config(market_files, layout)
    meta = build_panel_dataset(cfg, tmp_path / "memory")
    left = meta["left_out"]["rows"]  # some were left out for their short history, and listed
    assert 3 <= len(meta["tickers"]) < 14 and len(meta["tickers"]) + len(left) == 14
    assert left and all(rows < meta["left_out"]["min_days"] == 750 for rows in left.values())
    build_panel_streamed(cfg, tmp_path / "streamed", chunk=4)  # several chunks, one short
    assert_same_dataset(tmp_path / "memory", tmp_path / "streamed")
    assert not list(tmp_path.glob(".*"))  # no parts or temporary folders left


def test_chunks_that_keep_no_instrument_and_tickers_in_mixed_case(market_files, tmp_path):
    cfg = config(market_files, "long")
    build_panel_dataset(cfg, tmp_path / "memory")
    build_panel_streamed(cfg, tmp_path / "one_each", chunk=1)  # some chunks' only instrument is left out
    assert_same_dataset(tmp_path / "memory", tmp_path / "one_each")
    # Half of one instrument's rows spelled in lower case: still one instrument, the same dataset.
    files = linked_copy(market_files, tmp_path / "market", but="long.csv")
    long = pd.read_csv(market_files / "long.csv", dtype=str)
    rows = np.flatnonzero(long["ticker"] == "SYN0001")
    long.loc[rows[::2], "ticker"] = "syn0001"
    long.to_csv(files / "long.csv", index=False)
    for build in (build_panel_dataset, lambda c, o: build_panel_streamed(c, o, chunk=4)):
        build(config(files, "long"), tmp_path / "mixed")
        assert_same_dataset(tmp_path / "memory", tmp_path / "mixed", ignore=("sources", "fingerprint"))  # another file


def test_two_columns_that_differ_only_in_case_are_refused_naming_both(market_files, tmp_path):
    files = linked_copy(market_files, tmp_path / "market", but="closes.csv")
    closes = pd.read_csv(market_files / "closes.csv", dtype=str)
    closes.insert(3, "syn0001", closes["SYN0001"])
    closes.to_csv(files / "closes.csv", index=False)
    for build in (build_panel_dataset, build_panel_streamed):
        with pytest.raises(DataError, match=r"'SYN0001' and 'syn0001' name the same ticker SYN0001"):
            build(config(files, "close_panel"), tmp_path / "d")


def test_the_same_with_mutual_information_a_volatility_target_and_an_exclusion(market_files, tmp_path):
    cfg = config(market_files, "parquet")
    cfg = dataclasses.replace(cfg, selection="mutual_info", auxiliary="volatility", label="direction",
                              panel=dataclasses.replace(cfg.panel, exclude=["syn0000"]))
    meta = build_panel_dataset(cfg, tmp_path / "memory")
    assert "SYN0000" not in meta["tickers"] and meta["auxiliary"]
    build_panel_streamed(cfg, tmp_path / "streamed", chunk=5)
    assert_same_dataset(tmp_path / "memory", tmp_path / "streamed")


def test_the_streamed_build_as_ray_tasks_writes_the_same_dataset(market_files, tmp_path, ray_local):
    cfg = config(market_files, "long")
    build_panel_dataset(cfg, tmp_path / "memory")
    build_panel_streamed(cfg, tmp_path / "ray", chunk=3, use_ray=True)
    assert_same_dataset(tmp_path / "memory", tmp_path / "ray")
    # A task's bad input reaches the caller as the DataError it raised, naming file and line.
    files = linked_copy(market_files, tmp_path / "market", but="yahoo")
    shutil.copytree(market_files / "yahoo", files / "yahoo")
    bars = pd.read_csv(files / "yahoo" / "SYN0004.csv", dtype=str)
    bars.loc[100, "Close"] = "-1"
    bars.to_csv(files / "yahoo" / "SYN0004.csv", index=False)
    with pytest.raises(DataError, match=r"SYN0004.csv: column 'Close', line 102: price must be positive") as err:
        build_panel_streamed(config(files, "yahoo"), tmp_path / "bad", chunk=3, use_ray=True)
    assert type(err.value) is DataError


def test_the_build_command_streams_on_the_running_head(market_files, tmp_path, ray_local, ray_head, repo_root):
    files = linked_copy(market_files, tmp_path / "market")
    text = (files / "parquet.yaml").read_text().replace("  ticker_column: ticker\n",
                                                        "  ticker_column: ticker\n  build: streamed\n  min_days: 750\n")
    (files / "parquet.yaml").write_text(text)
    out = subprocess.run([sys.executable, str(repo_root / "ray_jobs" / "build_dataset.py"), "--config",
                          str(files / "parquet.yaml"), "--out", str(tmp_path / "d"), "--ray", "--quiet"],
                         capture_output=True, text=True, timeout=240, env={**os.environ, "RAY_ADDRESS": ray_head.address})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "joined the Ray head" in out.stderr or "connecting to the Ray cluster" in out.stderr
    assert "streamed" in out.stderr
    build_panel_dataset(config(market_files, "parquet"), tmp_path / "memory")
    assert_same_dataset(tmp_path / "memory", tmp_path / "d", ignore=("config", "fingerprint"))  # build: streamed


def on_object_storage(cfg, bucket: str):
    """``cfg`` reading copies of its files uploaded under ``bucket`` (every source: the universe
    and the context series)."""
    from stocktrend import storage

    sources = {}
    for key, spec in cfg.sources.items():
        local = cfg.source_path(key)
        uri = storage.join(bucket, "market", local.name)
        if local.is_dir():
            storage.upload_dir(local, uri)
        else:
            with storage.staged(storage.parent(uri)) as stage:
                shutil.copy(local, stage / local.name)
        sources[key] = dataclasses.replace(spec, path=uri)
    return dataclasses.replace(cfg, sources=sources)


@pytest.mark.parametrize("layout", ["partitioned", "long", "close_panel"])
def test_a_universe_on_object_storage_builds_the_dataset_its_disk_copy_builds(market_files, tmp_path, s3, layout):
    from stocktrend.data.sources import sha256_of
    from stocktrend.data.store import fingerprint
    from stocktrend.data.universe import list_universe
    from stocktrend.storage import RemotePath

    cfg = config(market_files, layout)
    remote = on_object_storage(cfg, s3)
    path = remote.source_path("stocks")
    assert isinstance(path, RemotePath) and str(path).startswith("s3://")
    assert sha256_of(path) == sha256_of(cfg.source_path("stocks"))  # a folder's digest too: the same inputs
    assert fingerprint(remote) == fingerprint(cfg)  # so the same dataset, wherever its files lie
    # Read where they are: the rows of a Parquet or CSV table on object storage, by any node.
    (tmp_path / "listing").mkdir()  # a long CSV is bucketed there, on the driver's disk
    assert all(c.on_object_storage for c in list_universe(remote, tmp_path / "listing", 4)) == (layout != "long")
    build_panel_dataset(cfg, tmp_path / "disk")
    build_panel_dataset(remote, tmp_path / "memory")
    build_panel_streamed(remote, tmp_path / "streamed", chunk=4)
    sources = ("sources", "config", "fingerprint")  # they name the files' locations
    assert_same_dataset(tmp_path / "disk", tmp_path / "memory", ignore=sources)
    assert_same_dataset(tmp_path / "disk", tmp_path / "streamed", ignore=sources)
    facts = json.loads((tmp_path / "streamed" / "metadata.json").read_text())["sources"]
    assert facts["stocks"]["file"] == str(path) and facts["spx"]["file"].startswith("s3://")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "listing", "memory", "streamed"]


def test_auto_goes_streamed_past_the_threshold_and_dispatches(market_files, tmp_path, monkeypatch):
    cfg = load_data_config(market_files / "parquet.yaml")
    assert not streamed(cfg)  # 14 listed, far under the threshold
    assert streamed(dataclasses.replace(cfg, panel=dataclasses.replace(cfg.panel, build="streamed")))
    monkeypatch.setattr(panel_stream, "STREAMED_ABOVE", 10)
    assert streamed(cfg)
    assert not streamed(dataclasses.replace(cfg, panel=dataclasses.replace(cfg.panel, build="memory")))
    calls = []
    monkeypatch.setattr(panel_stream, "build_panel_streamed", lambda *a, **k: calls.append(k) or {"ok": 1})
    assert build_dataset(cfg, tmp_path / "d", use_ray=True) == {"ok": 1} and calls[0]["use_ray"] is True


def test_a_failed_streamed_build_leaves_the_previous_dataset_and_no_parts(market_files, tmp_path):
    files = linked_copy(market_files, tmp_path / "market")
    cfg = load_data_config(files / "long.yaml")
    out = tmp_path / "datasets" / "d"
    build_panel_streamed(cfg, out, chunk=4)
    before = (out / "metadata.json").read_text()
    long = pd.read_csv(market_files / "long.csv", dtype=str)
    bad_row = int(np.flatnonzero(long["ticker"] == long["ticker"].iloc[-1])[3])
    long.loc[bad_row, "close"] = "-3.5"
    (files / "long.csv").unlink()  # a link to the shared market: replaced, not written through
    long.to_csv(files / "long.csv", index=False)
    with pytest.raises(DataError, match=rf"long.csv \(ticker .*\): column 'close', line {bad_row + 2}: price must be "
                                        "positive"):
        build_panel_streamed(cfg, out, chunk=4)
    assert (out / "metadata.json").read_text() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["d"]  # no parts, no temporary folder


def test_a_long_csv_row_without_a_ticker_is_named_by_its_line(market_files, tmp_path):
    long = pd.read_csv(market_files / "long.csv", dtype=str)
    long.loc[7, "ticker"] = "  "
    files = linked_copy(market_files, tmp_path / "market", but="long.csv")
    long.to_csv(files / "long.csv", index=False)
    cfg = load_data_config(files / "long.yaml")
    with pytest.raises(DataError, match=r"long.csv: column 'ticker', line 9: no ticker"):
        build_panel_streamed(cfg, tmp_path / "d")


def test_fits_from_per_instrument_statistics_agree_with_fitting_the_rows():
    rng = np.random.default_rng(0)
    seq_len, xs, ends, labels = 4, [], [], []
    for n in (40, 55, 30):
        x = rng.normal(3.0, 2.0, (n, 5))
        x[:, 4] = 7.0  # a constant feature keeps scale 1, as scikit-learn's
        e = np.sort(rng.choice(np.arange(seq_len - 1, n), 12, replace=False))
        xs.append(x), ends.append(e), labels.append(rng.integers(0, 2, len(e)))
    stats = [fitting.train_stats(x, e, y, seq_len) for x, e, y in zip(xs, ends, labels)]
    scaler, sums, counts, span = fitting.combine(stats)
    covered = [np.unique(np.concatenate([np.arange(t - seq_len + 1, t + 1) for t in e])) for e in ends]
    rows = np.concatenate([x[c] for x, c in zip(xs, covered)])
    want = StandardScaler().fit(rows)
    assert scaler.n_rows == len(rows)
    np.testing.assert_allclose(scaler.mean_, want.mean_, rtol=1e-12)
    np.testing.assert_allclose(scaler.scale_, want.scale_, rtol=1e-12)
    assert scaler.scale_[4] == 1.0
    assert span == (min(c[0] for c in covered), max(c[-1] for c in covered))
    last = np.concatenate([x[e] for x, e in zip(xs, ends)])
    y = np.concatenate(labels)
    np.testing.assert_allclose(fitting.mean_diff_scores(scaler, sums, counts),
                               fitting.separation_scores(want.transform(last), y, "mean_diff", 0), atol=1e-12)
    assert counts.tolist() == np.bincount(y, minlength=2).tolist()


@pytest.mark.parametrize("y", [np.r_[np.zeros(700, int), np.ones(300, int)], np.r_[np.ones(50, int), np.zeros(9, int)],
                               np.random.default_rng(2).integers(0, 3, 400), np.array([1, 0, 1, 0])])
def test_oversampling_draws_what_imbalanced_learns_random_oversampler_draws(y):
    from imblearn.over_sampling import RandomOverSampler

    sampler = RandomOverSampler(random_state=7)
    sampler.fit_resample(np.zeros((len(y), 1)), y)
    got = fitting.oversample(np.arange(len(y)) + 100, y, 7)
    np.testing.assert_array_equal(got, sampler.sample_indices_ + 100)
    assert np.unique(np.bincount(y[got - 100])).size == 1  # every class as large as the largest
