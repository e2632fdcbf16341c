"""Obtain the pinned wheels: from a local folder, or ``pip download --no-deps`` them."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from tools.extract_data.specs import ExtractError, SourceSpec

log = logging.getLogger(__name__)

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


def norm_dist(name: str) -> str:
    """A distribution name normalised as in wheel file names (``zipline-reloaded`` -> ``zipline_reloaded``)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def find_wheel(package: str, version: str, wheels_dir: Path) -> Path | None:
    """The wheel of ``package==version`` in ``wheels_dir``, or None. Prefers cp311/pure builds."""
    if not wheels_dir.is_dir():
        return None
    want = (norm_dist(package), version)
    found = []
    for p in sorted(wheels_dir.glob("*.whl")):
        parts = p.name[: -len(".whl")].split("-")
        if len(parts) >= 5 and (norm_dist(parts[0]), parts[1]) == want:
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
