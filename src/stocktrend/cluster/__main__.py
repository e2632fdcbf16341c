"""The project's Ray head from the command line (what `make head` and `make quickstart` run).

    python -m stocktrend.cluster up [--port 6379] [--dashboard-port 8265] [--num-cpus N] ...
    python -m stocktrend.cluster info
    python -m stocktrend.cluster down [--port 6379]

`up` starts a persistent head on this machine unless one is running (token created if
missing, ports checked first, Serve HAProxies left by heads that are gone cleared) and prints
how to get into its dashboard; `info` prints that again for the running head; `down` (what
`make stop` runs) stops the head whose GCS listens on --port and everything it started,
Serve and its HAProxy included, and no other head of this machine. HAProxy's side ports move with RAY_SERVE_HAPROXY_METRICS_PORT /
RAY_SERVE_HAPROXY_STATS_PORT in the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from stocktrend.cluster.head import HeadError, login_lines, start_head, stop_head
from stocktrend.cluster.ports import HeadPorts, PortInUse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stocktrend.cluster", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["up", "info", "down"],
                    help="up: start a persistent head unless one is running; info: how to reach the running one; "
                         "down: stop the head on --port and all it started (no other head)")
    defaults = HeadPorts()
    for f in dataclasses.fields(HeadPorts):
        role, flag = HeadPorts.FLAGS[f.name]
        if flag.startswith("--"):
            ap.add_argument(flag, dest=f.name, type=int, default=getattr(defaults, f.name), help=f"{role} port")
    ap.add_argument("--num-cpus", type=float, help="CPUs the head offers (default: this machine's)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.action == "info":
        from stocktrend.cluster.connect import running_dashboard

        dashboard = running_dashboard()
        print("\n".join(login_lines(dashboard)) if dashboard else "no Ray head is running (make head starts one)")
        return 0 if dashboard else 1
    if args.action == "down":
        try:
            print(stop_head(args.gcs))
        except HeadError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    env_ports = {name: int(os.environ[flag]) for name, (_, flag) in HeadPorts.FLAGS.items()
                 if not flag.startswith("--") and os.environ.get(flag)}
    ports = dataclasses.replace(defaults, **{f.name: getattr(args, f.name) for f in dataclasses.fields(HeadPorts)
                                             if hasattr(args, f.name)}, **env_ports)
    try:
        dashboard = start_head(ports, args.num_cpus)
    except (PortInUse, HeadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(login_lines(dashboard)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
