"""What a panel dataset costs to build as the universe grows: wall time and memory per layout,
size and build (in-memory, streamed in one process, streamed as Ray tasks), each build in a
fresh process.

    python bench/panel_scale.py [--sizes 20,100,400] [--layouts close_panel,long,parquet] [--days 3780]
        [--builds memory,streamed,ray] [--out bench/results/panel_scale.json] [--append] [--keep DIR]
    python bench/panel_scale.py --replot      # only redraw docs/panel_scale.png from the results

Markets come from the known-answer generator (``stocktrend.data.synthetic``: factor returns
calibrated on the shipped panel, null plant; drawn and written in their own process), in the
layouts users bring, and are built by the real builder (``data.build.build_dataset``) from
their generated config with ``panel.build`` set. Memory is sampled every 0.2 s while a build
runs, from /proc: the machine's memory in use (MemTotal - MemAvailable, so Ray's shared-memory
object store counts) above what it was before the build started, and the largest resident
set of any one process that started with the build (the driver, Ray's workers, Ray's own
daemons), with its anonymous part (what the process allocated, apart from pages of files it
maps, which the kernel can drop). A Ray build starts its own local instance, whose start-up is in its time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine_info  # noqa: E402

FILES = {"close_panel": "closes.csv", "long": "long.csv", "parquet": "long.parquet"}  # one file per layout
GENERATE = """
import sys, time
from stocktrend.data.synthetic import MarketSpec, generate
from stocktrend.data.synthetic_files import write_market
t = time.perf_counter()
market = generate(MarketSpec(instruments=int(sys.argv[1]), days=int(sys.argv[2]), seed=0))
write_market(market, sys.argv[3], tuple(sys.argv[4].split(",")))
print(time.perf_counter() - t)
"""
BUILD = """
import dataclasses, json, os, resource, sys, time
t0 = time.perf_counter()
from stocktrend.data.build import build_dataset
from stocktrend.data.config import load_data_config
cfg = load_data_config(sys.argv[1])
mode = sys.argv[3]
cfg = dataclasses.replace(cfg, panel=dataclasses.replace(cfg.panel, build="memory" if mode == "memory" else "streamed"))
if mode == "ray":
    os.environ["RAY_ADDRESS"] = "local"  # its own instance, measured with the build
    from stocktrend.cluster.connect import connect
    connect(num_cpus=os.cpu_count(), dashboard=False)
meta = build_dataset(cfg, sys.argv[2], use_ray=mode == "ray")
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "instruments": len(meta["tickers"]), "windows": sum(s["n"] for s in meta["splits"].values())}))
"""


def _meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as fh:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in fh)}


def _used_mib() -> float:
    m = _meminfo()
    return (m["MemTotal"] - m["MemAvailable"]) / 1024


def _rss_mib() -> dict[int, tuple[float, float, str]]:
    """{pid: (resident set, its anonymous part, what it is)}: the resident set also counts pages
    of files the process maps (a memory-mapped dataset), which the kernel can drop; the
    anonymous part is what the process itself allocated. What it is: Ray's name for a worker
    (``ray::RayTrainWorker``), else the script it runs."""
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/status") as fh:
                    fields = dict(line.split(":", 1) for line in fh if line.startswith(("VmRSS:", "RssAnon:")))
                if "VmRSS" in fields:
                    with open(f"/proc/{pid}/cmdline") as fh:
                        args = fh.read().split("\0")
                    script = next((Path(a).name for a in args[1:] if a.endswith(".py")), Path(args[0]).name)
                    kind = args[0].split(".")[0].split()[0] if args[0].startswith("ray::") else script
                    out[int(pid)] = (int(fields["VmRSS"].split()[0]) / 1024, int(fields["RssAnon"].split()[0]) / 1024,
                                     kind)
            except (OSError, KeyError, ValueError, IndexError):
                pass
    return out


class Sampler:
    """Peak machine memory above the baseline, and the largest new process, while running."""

    def __init__(self, every: float = 0.2):
        self.every, self.base, self.old = every, _used_mib(), set(_rss_mib())
        self.peak_used, self.peak_process, self.peak_anon, self.stop = 0.0, 0.0, 0.0, threading.Event()
        self.anon_by_kind: dict[str, float] = {}  # the largest anonymous part of each kind of new process
        self.rss_by_kind: dict[str, float] = {}  # and the largest resident set
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.peak_used = max(self.peak_used, _used_mib() - self.base)
            new = [v for pid, v in _rss_mib().items() if pid not in self.old]
            self.peak_process = max([self.peak_process, *(rss for rss, _, _ in new)])
            self.peak_anon = max([self.peak_anon, *(anon for _, anon, _ in new)])
            for rss, anon, kind in new:
                self.anon_by_kind[kind] = max(self.anon_by_kind.get(kind, 0.0), anon)
                self.rss_by_kind[kind] = max(self.rss_by_kind.get(kind, 0.0), rss)
            self.stop.wait(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run(code: str, *args: str) -> tuple[str, Sampler]:
    with Sampler() as sampler:
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1], sampler


def plot(result: dict, path: Path) -> None:
    """Seconds per instrument and the largest process's memory against universe size, per layout
    and build, log-scaled sizes: flat lines are costs that grow with the universe, not faster."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    series = sorted({(x["layout"], x["build"]) for x in result["rows"]})
    for layout, build in series:
        rows = sorted((x for x in result["rows"] if (x["layout"], x["build"]) == (layout, build)),
                      key=lambda x: x["instruments"])
        n = [x["instruments"] for x in rows]
        style = dict(marker="o", linestyle="-" if build == "ray" else "--", label=f"{layout}, {build}")
        ax_t.plot(n, [x["seconds_per_instrument"] for x in rows], **style)
        ax_m.plot(n, [x["peak_process_anon_mib"] / 1024 for x in rows], **style)
    ax_m.axhline(2.0, color="grey", linewidth=0.8, linestyle=":")
    ax_m.text(n[0] if series else 20, 2.05, "goal: 2 GiB per process", fontsize=8, color="grey")
    for ax, title in ((ax_t, "wall seconds per instrument"), (ax_m, "largest process, anonymous GiB")):
        ax.set_xscale("log")
        ax.set_xlabel("instruments")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20,100,400", help="instruments per market, comma-separated")
    ap.add_argument("--layouts", default="close_panel,long,parquet", help="from close_panel, yahoo, long, parquet")
    ap.add_argument("--days", type=int, default=3780, help="trading days of history (3780: 15 years)")
    ap.add_argument("--builds", default="memory,streamed,ray", help="from memory, streamed, ray")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "panel_scale.json"))
    ap.add_argument("--append", action="store_true", help="add the rows to those already in --out")
    ap.add_argument("--keep", help="build in this folder instead of the system temp folder (it may be larger)")
    ap.add_argument("--replot", action="store_true", help="only redraw docs/panel_scale.png from --out")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(Path(args.out).read_text()), ROOT / "docs" / "panel_scale.png")
        return 0
    sizes = [int(x) for x in args.sizes.split(",")]
    layouts, builds = args.layouts.split(","), args.builds.split(",")
    kept = json.loads(Path(args.out).read_text()) if args.append and Path(args.out).exists() else {}
    rows = kept.get("rows", [])
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        for n in sizes:
            files = Path(tmp) / f"m{n}"
            seconds, gen = run(GENERATE, str(n), str(args.days), str(files), ",".join(layouts))
            print(f"{n:5d} generated in {float(seconds):6.1f} s (peak process {gen.peak_process:6.0f} MiB)", flush=True)
            for layout in layouts:
                for build in builds:
                    out = Path(tmp) / "dataset"
                    line, mem = run(BUILD, str(files / f"{layout}.yaml"), str(out), build)
                    row = {"instruments": n, "layout": layout, "build": build, "days": args.days,
                           "generate_seconds": float(seconds),
                           "file_mib": (files / FILES[layout]).stat().st_size / 2**20 if layout in FILES else None,
                           **json.loads(line), "peak_process_mib": mem.peak_process,
                           "peak_process_anon_mib": mem.peak_anon,
                           "machine_peak_mib": mem.peak_used,
                           "rss_mib_by_process": {k: round(v) for k, v in sorted(mem.rss_by_kind.items(),
                                                                                  key=lambda kv: -kv[1])[:5]},
                           "dataset_mib": sum(f.stat().st_size for f in out.iterdir()) / 2**20}
                    row["seconds_per_instrument"] = row["seconds"] / n
                    rows.append(row)
                    print(f"{n:5d} {layout:12s} {build:9s} {row['seconds']:7.1f} s, largest process "
                          f"{mem.peak_process:6.0f} MiB ({mem.peak_anon:6.0f} anonymous), machine "
                          f"+{mem.peak_used:6.0f} MiB, "
                          f"dataset {row['dataset_mib']:6.0f} MiB", flush=True)
            subprocess.run(["rm", "-rf", str(files)], check=True)
    commands = kept.get("commands", []) + ["python bench/panel_scale.py " + " ".join(sys.argv[1:])]
    result = {**kept, "benchmark": "panel_scale", "machine": machine_info(), "rows": rows, "commands": commands}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    plot(result, ROOT / "docs" / "panel_scale.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
