"""Promote a model version (or roll back) and switch the running deployment to it in place.

    python ray_jobs/promote.py --model models/<name> --version <version>
    python ray_jobs/promote.py --model models/<name> --rollback
    python ray_jobs/promote.py --model models/<name> --list

Verifies the version's sha256 manifest, points models/<name>/latest at it (atomically),
records the move in models/<name>/promotions.jsonl, then, for every application on the
Ray head serving models/<name>, pins the version in the Predictor's user config: Serve
calls `reconfigure` on the live replicas, which load the new model beside the old one and
swap it in between batches, so no request fails during the swap. --rollback promotes the
version that was current before the last promotion. Without a head (or with --no-serve)
only `latest` moves.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from pathlib import Path

HISTORY = "promotions.jsonl"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="models/<name>: the folder holding versions and 'latest'")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="the version folder name to promote")
    which.add_argument("--rollback", action="store_true", help="back to the version before the last promotion")
    which.add_argument("--list", action="store_true", help="list versions and the promotion history")
    ap.add_argument("--dashboard",
                    help="Ray dashboard URL (default: $RAY_DASHBOARD_ADDRESS, else the head running on this machine)")
    ap.add_argument("--no-serve", action="store_true", help="only move 'latest'; leave deployments alone")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from stocktrend.data.store import atomic_write_text
    from stocktrend.inference.artifact import LATEST, MANIFEST, ArtifactError, resolve_version_dir, verify
    from stocktrend.serving import control

    model_dir = Path(args.model).resolve()
    history_file = model_dir / HISTORY
    history = [json.loads(line) for line in history_file.read_text().splitlines() if line.strip()] \
        if history_file.is_file() else []
    try:
        current = resolve_version_dir(model_dir).name
    except ArtifactError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.list:
        for v in sorted(p.name for p in model_dir.iterdir() if (p / MANIFEST).is_file()):
            print(("* " if v == current else "  ") + v)
        for h in history:
            print(f"{h['time']}  {h['from']} -> {h['to']}{' (rollback)' if h.get('rollback') else ''}")
        return 0
    if args.rollback:
        if not history:
            print(f"error: nothing to roll back: {history_file} records no promotion", file=sys.stderr)
            return 2
        target = history[-1]["from"]
    else:
        target = args.version
    try:
        if not target or "/" in target or target.startswith("."):
            raise ArtifactError("not a version folder name")
        verify(model_dir / target)
    except ArtifactError as err:
        print(f"error: version {target!r}: {err}", file=sys.stderr)
        return 2

    atomic_write_text(model_dir / LATEST, target + "\n")
    entry = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "from": current, "to": target,
             "rollback": bool(args.rollback)}
    atomic_write_text(history_file, "".join(json.dumps(h) + "\n" for h in [*history, entry]))
    print(f"{model_dir.name}: latest {current} -> {target}")

    if args.no_serve:
        return 0
    try:
        dashboard, _ = control.find_dashboard(args.dashboard)
    except control.ServeControlError as err:
        print(f"error: {err}; 'latest' moved, no deployment switched", file=sys.stderr)
        return 1
    if dashboard is None:
        print("no Ray head found (--dashboard, $RAY_DASHBOARD_ADDRESS or a head on this machine): "
              "no deployment to switch")
        return 0
    try:
        apps = control.apps_serving(control.deployed_config(dashboard), model_dir)
    except control.ServeControlError:
        apps = []
    if not apps:
        print(f"no application on {dashboard} serves {model_dir}; only 'latest' moved")
        return 0
    for app in apps:
        try:
            control.set_model_version(dashboard, app, target, timeout=args.timeout)
        except control.ServeControlError as err:
            print(f"error: application {app!r}: {err}", file=sys.stderr)
            return 1
        print(f"application {app!r} now serves {model_dir.name}/{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
