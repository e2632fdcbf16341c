"""stocktrend.storage and what travels through it, on a real S3-compatible server (moto's,
on 127.0.0.1, started and stopped here): folders up and down whole, fetched copies that are
never half-written, a model artifact published and mirrored, a data config's sources bundled
and rebased with the same dataset fingerprint. No Ray."""

from __future__ import annotations

import json
import shutil

import pytest

from stocktrend import storage
from stocktrend.data.bundle import bundle_sources, localise
from stocktrend.data.cache import build_cached, publish_dataset
from stocktrend.data.config import load_data_config
from stocktrend.data.store import fingerprint, read_metadata
from stocktrend.inference.artifact import LATEST, MANIFEST, load_parts, local_model_dir
from stocktrend.training.export import publish_artifact


@pytest.fixture(autouse=True)
def own_scratch(tmp_path, monkeypatch):
    """Fetched copies in this test's folder, not the machine's temp folder."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()


def test_locations_local_and_remote(tmp_path):
    assert storage.normalise("s3://b/x/") == "s3://b/x"
    assert storage.join("s3://b/x", "runs", "t1") == "s3://b/x/runs/t1"
    assert storage.join("s3://b/x?region=eu", "a") == "s3://b/x/a?region=eu"
    assert storage.parent("s3://b/x/y") == "s3://b/x"
    assert storage.location_of("s3://b/runs", "b/runs/t/checkpoint_000") == "s3://b/runs/t/checkpoint_000"
    assert storage.join(tmp_path, "a") == str(tmp_path / "a")
    assert storage.location_of(tmp_path, str(tmp_path / "c")) == str(tmp_path / "c")
    assert not storage.is_remote(tmp_path) and storage.is_remote("s3://b") and not storage.is_remote("file:///x")
    assert storage.fetch_dir(tmp_path, "x") == tmp_path  # a local folder is read where it is
    assert storage.fetch_dir(f"file://{tmp_path}", "x") == tmp_path
    storage.write_text(f"file://{tmp_path}/a.txt", "x")
    assert storage.read_text(tmp_path / "a.txt") == "x"


def test_folders_travel_whole(s3, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.bin").write_bytes(b"\0\1")
    (src / "metadata.json").write_text("{}")
    storage.upload_dir(src, f"{s3}/d", last="metadata.json")
    assert storage.read_text(f"{s3}/d/a.txt") == "a"
    got = storage.fetch_dir(f"{s3}/d", "test-fetch")
    assert (got / "sub" / "b.bin").read_bytes() == b"\0\1" and (got / storage.COMPLETE).is_file()
    (got / "a.txt").write_text("changed locally")
    assert storage.fetch_dir(f"{s3}/d", "test-fetch") == got  # fetched once per node
    assert (got / "a.txt").read_text() == "changed locally"
    with pytest.raises(FileNotFoundError, match="no folder"):
        storage.fetch_dir(f"{s3}/missing", "test-fetch")
    assert not any(p.name.startswith(".") and "tmp" in p.name for p in got.parent.iterdir())  # no half copy left
    with storage.staged(f"{s3}/staged") as folder:
        (folder / "x.csv").write_text("1,2\n")
    assert storage.read_text(f"{s3}/staged/x.csv") == "1,2\n"
    with pytest.raises(RuntimeError), storage.staged(f"{s3}/failed") as folder:
        (folder / "x.csv").write_text("partial")
        raise RuntimeError("the writer failed")
    assert not storage.exists(f"{s3}/failed/x.csv")  # nothing uploaded from a failed block


def test_a_model_published_to_object_storage_is_served_from_a_mirror(s3, two_versions, tmp_path):
    first, second = two_versions
    for version_dir in (first, second):
        staged = tmp_path / "stage" / "msft" / version_dir.name
        shutil.copytree(version_dir, staged)
        publish_artifact(staged, f"{s3}/models")
    assert storage.read_text(f"{s3}/models/msft/{LATEST}").strip() == second.name
    with pytest.raises(FileExistsError, match="immutable"):
        publish_artifact(tmp_path / "stage" / "msft" / second.name, f"{s3}/models")
    mirror = local_model_dir(f"{s3}/models/msft")
    assert mirror.name == "msft" and sorted(p.name for p in mirror.iterdir() if not p.name.startswith(".")) == \
        sorted([first.name, second.name, LATEST])
    version_dir, manifest, parts = load_parts(mirror)  # verified against its manifest
    assert version_dir.name == second.name and json.loads((second / MANIFEST).read_text()) == manifest
    # A version folder named directly; then the champion moves on storage: the mirror follows.
    assert local_model_dir(f"{s3}/models/msft/{first.name}") == mirror / first.name
    storage.write_text(f"{s3}/models/msft/{LATEST}", first.name + "\n")
    assert load_parts(local_model_dir(f"{s3}/models/msft"))[0].name == first.name


def test_sources_bundle_rebuilds_the_same_dataset_elsewhere(repo_root, tmp_path, s3):
    cfg = load_data_config(repo_root / "datasets" / "msft_v2.yaml", start="2012-01-03", seq_len=10, n_features=6)
    bundle = bundle_sources(cfg)
    assert all(not rel.startswith("..") for rel in bundle.files)
    moved = localise(cfg, bundle)
    assert str(repo_root) not in json.dumps({k: v.path for k, v in moved.sources.items()})
    assert fingerprint(moved) == fingerprint(cfg)  # same names and contents: the same dataset
    built = build_cached(moved, tmp_path / "cache")
    location = publish_dataset(built, f"{s3}/datasets")
    assert location.endswith(read_metadata(built)["fingerprint"])
    assert storage.read_text(f"{location}/metadata.json") == (built / "metadata.json").read_text()
    fetched = storage.fetch_dir(location, "test-datasets")
    assert read_metadata(fetched)["fingerprint"] == fingerprint(cfg)


def test_models_on_object_storage_refuse_what_would_stay_on_one_node():
    from pydantic import ValidationError

    from stocktrend.serving.config import ServeArgs

    with pytest.raises(ValidationError, match="prediction_log_dir"):
        ServeArgs(model="s3://bucket/models/m")
    assert ServeArgs(model="s3://bucket/models/m", prediction_log=False).resolved_model() == "s3://bucket/models/m"
    assert ServeArgs(model="s3://bucket/models/m/", prediction_log_dir="/shared/logs").resolved_model() == \
        "s3://bucket/models/m"
    with pytest.raises(ValidationError, match="retrain_on_alert"):
        ServeArgs(model="s3://bucket/models/m", prediction_log=False, retrain_on_alert={})


def _materialise_slowly(out: str, log: str) -> str:
    import time

    def write(tmp):
        with open(log, "a") as f:
            f.write("wrote\n")
        time.sleep(0.5)
        (tmp / "data.txt").write_text("whole")

    return str(storage.materialise(__import__("pathlib").Path(out), write))


def test_concurrent_processes_on_a_node_write_a_folder_once(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    out, log = tmp_path / "folder", tmp_path / "writes.log"
    with ProcessPoolExecutor(3) as pool:
        got = list(pool.map(_materialise_slowly, [str(out)] * 3, [str(log)] * 3))
    assert got == [str(out)] * 3 and (out / "data.txt").read_text() == "whole"
    assert log.read_text().count("wrote") == 1  # the others waited and found it finished


@pytest.mark.parametrize("where", ["local", "s3"])
def test_scoring_snapshots_are_written_whole_and_the_newest_is_found(where, tmp_path, request):
    """What a replica reads: the newest ``<as_of>.json`` of a snapshot folder, on disk or on
    object storage (other names ignored), read back as written; a broken file is named."""
    from stocktrend.inference.snapshot import Snapshot, SnapshotError, newest, write_snapshot

    folder = f"{request.getfixturevalue('s3')}/models/p/snapshots" if where == "s3" else str(tmp_path / "snapshots")
    assert newest(folder) is None  # no folder yet: none
    cols = {"ticker": ["AAA", "BBB"], "date": ["2016-03-01", "2016-03-01"], "p_up": [0.6, 0.3], "p_down": [0.4, 0.7]}
    for day in ("2016-03-01", "2016-02-29"):
        write_snapshot(folder, {"as_of": day, "dates": [day], "model_version": "v1"}, cols)
    storage.write_text(storage.join(folder, "notes.json"), "{}")
    stamp = newest(folder)
    assert stamp.location.endswith("/2016-03-01.json")
    snap = Snapshot.read(stamp)
    assert snap.as_of == "2016-03-01" and snap.rows["BBB"]["2016-03-01"] == (0.3, 0.7, None)
    storage.write_text(storage.join(folder, "2016-03-02.json"), '{"snapshot": {"as_of": "2016-03-02"}}')
    with pytest.raises(SnapshotError, match="2016-03-02.json"):
        Snapshot.read(newest(folder))
