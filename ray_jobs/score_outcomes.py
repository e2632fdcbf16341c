"""Score a served model's logged predictions against what then happened (realised outcomes).

    python ray_jobs/score_outcomes.py --model models/<name> [--weeks 12] [--out report.json]
    python ray_jobs/score_outcomes.py --model models/<name> --bars later_bars.json

Reads every prediction the deployment logged in models/<name>/predictions/ (bars requests:
the day and instrument are known), computes each one's label h trading days on with its
version's own training-data rule, from the source files under --data-root (default the
project's datasets/) or from bars posted in a file ({"bars": {"<source>": [rows]}}, as sent
to /v1/predict/bars), and reports per version, on the days after its own validation split:
accuracy and AUROC with date-block bootstrap intervals, rank IC for panel models, and the
paired difference of every two versions that scored the same days (champion and
challenger). Predictions whose outcome is not known yet, or that fall on days a version
trained or was selected on, are counted, not scored. No Ray needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="models/<name>: the folder whose predictions/ are scored")
    ap.add_argument("--log-dir", help="the deployment's prediction_log_dir, when it set one (default: beside the "
                                      "model)")
    ap.add_argument("--weeks", type=float, help="score only the last N weeks of scoreable predictions")
    ap.add_argument("--data-root", help="the folder the model's source paths are relative to (default datasets/)")
    ap.add_argument("--bars", help="a JSON file of later bars ({'bars': {source: rows}}) instead of the source files")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    ap.add_argument("--out", help="write the report as JSON here (atomically)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from stocktrend.data.errors import DataError
    from stocktrend.data.store import atomic_write_text
    from stocktrend.evaluation.outcomes import score_model
    from stocktrend.inference.artifact import ArtifactError

    model_dir = Path(args.model)
    try:
        frames = bars_frames(model_dir, Path(args.bars)) if args.bars else None
        report = score_model(model_dir, args.weeks, frames, args.data_root, args.bootstrap, log_dir=args.log_dir)
    except (ArtifactError, DataError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")
    print(summary(report))
    return 0


def bars_frames(model_dir: Path, path: Path):
    """The sources of the model's data config, parsed from a bars file with the service's checks."""
    import pandas as pd

    from stocktrend.data.errors import DataError
    from stocktrend.data.sources import parse_table
    from stocktrend.inference.artifact import resolve_version_dir
    from stocktrend.inference.predictor import Predictor

    try:
        bars = json.loads(path.read_text())["bars"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: expected a JSON object with a 'bars' field ({err})") from None
    cfg = Predictor.from_artifact(resolve_version_dir(model_dir)).data_cfg
    frames = {}
    for name, spec in cfg.sources.items():
        if name not in bars:
            raise DataError(f"{path}: bars.{name} missing; the model's sources are {sorted(cfg.sources)}")
        frames[name] = parse_table(spec, pd.DataFrame(bars[name]), f"{path}: bars.{name}", name)
    return frames


def summary(report: dict) -> str:
    from stocktrend.evaluation.core import ci_text

    def fmt(iv: dict | None) -> str:
        if not iv or iv.get("point") is None:
            return "n/a"
        return ci_text(iv) if iv.get("low") is not None else f"{iv['point']:.3f}"

    w = report["window"]
    lines = [f"{report['model']}: {report['scored']} predictions scored ({w['first']} .. {w['last']}), "
             f"{report['not_yet_known']} not known yet, {report['in_sample_not_scored']} in sample (on or before the "
             f"version's validation end), {report['undated_records']} undated (windows requests); label: "
             f"{'; '.join(report['label_rules'])}"]
    for version, f in report["versions"].items():
        extra = f", rank IC {fmt(f.get('rank_ic'))}" if "rank_ic" in f else ""
        lines.append(f"  {version} ({'/'.join(f['roles'])}): n={f['n']} over {f['dates']} days, accuracy "
                     f"{fmt(f.get('accuracy'))}, AUROC {fmt(f.get('auroc'))}{extra}")
    for pair in report["paired"]:
        lines.append(f"  {pair['a']} - {pair['b']} on {pair['n']} common predictions: accuracy "
                     f"{fmt(pair['accuracy_a_minus_b'])}, AUROC {fmt(pair['auroc_a_minus_b'])}, "
                     f"agreement {pair['agreement']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
