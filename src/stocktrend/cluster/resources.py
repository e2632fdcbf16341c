"""The resource preflight: size a request from what the cluster has free, and fail within
seconds, naming who holds the rest, when it cannot be met.

Ray itself waits forever for resources that never free up ("Pending Demands" in
`ray status`, no word to the caller). Every entry point asks here first: training workers,
tuning's trials (their zero-CPU drivers each start one training worker), retraining seeds
and folds, batch-scoring actors and Serve replicas. On an autoscaling cluster the wait is
legitimate: ``wait_s`` waits that long, logging what it waits for.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import defaultdict

log = logging.getLogger(__name__)
RESOURCES = ("CPU", "GPU")


class ResourcesUnavailable(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class Ask:
    """``units`` times ``per_unit`` resources, each unit on one node (a worker, a replica)."""

    what: str  # "training", "Serve deployment 'stocktrend'"
    per_unit: dict[str, float]
    units: int = 1
    unit_name: str = "worker"
    hint: str = ""  # the flags that change this ask

    def describe(self) -> str:
        per = " + ".join(f"{_fmt(v)} {k}" for k, v in self.per_unit.items() if v)
        return f"{self.units} {self.unit_name}{'s' if self.units != 1 else ''} x {per}"


def _fmt(v: float) -> str:
    return f"{v:g}"


def free_per_node() -> list[dict[str, float]]:
    from ray._private.state import available_resources_per_node  # a DeveloperAPI of Ray

    return [dict(r) for r in available_resources_per_node().values()]


def units_that_fit(per_unit: dict[str, float], nodes: list[dict[str, float]] | None = None) -> int:
    """How many units fit in the free resources now, each unit whole on one node."""
    nodes = free_per_node() if nodes is None else nodes
    wanted = {k: v for k, v in per_unit.items() if v > 0}
    if not wanted:
        return 10**6
    return sum(min(math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in wanted.items()) for node in nodes)


def cpus_per_unit(units: int, nodes: list[dict[str, float]] | None = None) -> float:
    """The CPUs each of ``units`` units can have from the free CPUs: the most whole CPUs
    (torch runs whole threads), else the largest quarter-CPU share that fits (two workers
    beside a Serve replica on 2 cores: 0.75 each); 1 when not even a quarter fits (the
    preflight then says so)."""
    nodes = free_per_node() if nodes is None else nodes
    most = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    for cpus in [float(c) for c in range(int(most), 0, -1)] + [q / 4 for q in range(3, 0, -1)]:
        if units_that_fit({"CPU": cpus}, nodes) >= units:
            return cpus
    return 1.0


def state_address() -> str | None:
    """The address Ray's state API should ask: the cluster this process is connected to. Left
    to itself the API looks for "the" head of this machine, and finds none or several when a
    private head (a test's, a benchmark's) runs beside the user's."""
    import ray

    return ray.get_runtime_context().gcs_address if ray.is_initialized() else None


def holders() -> list[str]:
    """Who holds CPUs and GPUs now, one line per holder (Serve applications, training runs
    of a job, other actors), largest first."""
    from ray.util.state import list_actors, list_jobs

    try:
        address = state_address()
        actors = list_actors(address=address, filters=[("state", "=", "ALIVE")], detail=True, limit=10_000,
                             raise_on_missing_output=False)
        jobs = {j.job_id: j.entrypoint for j in list_jobs(address=address, limit=1000, raise_on_missing_output=False)
                if j.job_id}
    except Exception as err:  # the state API needs the dashboard; the message still helps without it
        log.debug("state API unavailable: %s", err)
        return []
    held: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    count: dict[str, int] = defaultdict(int)
    for a in actors:
        res = a.required_resources or {}
        # Inside a placement group an actor asks for CPU_group_<pg> and CPU_group_<i>_<pg>:
        # both name the same CPUs, so take the largest, not the sum.
        amounts = {r: max((v for k, v in res.items() if k == r or k.startswith(f"{r}_group_")), default=0.0)
                   for r in RESOURCES}
        if not any(amounts.values()):
            continue
        cls = a.class_name or "actor"
        if cls.startswith("ServeReplica:"):
            label = f"Serve application '{cls.split(':')[1]}' ({{n}} replica{{s}} of {cls.split(':')[-1]})"
        else:
            entry = jobs.get(a.job_id)
            label = (f"job {a.job_id}" + (f" `{entry[:80]}`" if entry else "")
                     + f" ({{n}} {cls.split('.')[-1]} actor{{s}})")
        count[label] += 1
        for r, v in amounts.items():
            held[label][r] += v
    lines = sorted(held.items(), key=lambda kv: -sum(kv[1].values()))
    return [f"{' + '.join(f'{_fmt(v)} {r}' for r, v in res.items() if v)} by "
            + label.format(n=count[label], s="s" if count[label] != 1 else "") for label, res in lines]


def unavailable_message(ask: Ask, nodes: list[dict[str, float]], total: dict[str, float],
                        largest_node: dict[str, float]) -> str:
    kinds = [*RESOURCES, *(r for r in ask.per_unit if r not in RESOURCES)]  # and custom ones asked for
    free = {r: sum(n.get(r, 0.0) for n in nodes) for r in kinds}
    lines = [f"{ask.what} asks for {ask.describe()}; the cluster has "
             + ", ".join(f"{_fmt(free[r])} of {_fmt(total.get(r, 0.0))} {r} free" for r in kinds
                         if ask.per_unit.get(r) or total.get(r))
             + (f" ({units_that_fit(ask.per_unit, nodes)} {ask.unit_name}s fit)" if ask.units > 1 else "") + "."]
    never = [r for r, v in ask.per_unit.items() if v and v > largest_node.get(r, 0.0)]
    if never:
        lines.append(f"This cluster has no node with that much {', '.join(never)}: it can never be met here.")
    held = holders()
    if held:
        lines.append("Held now:\n" + "\n".join(f"  {h}" for h in held))
    todo = [f"ask for less ({ask.hint})" if ask.hint else "ask for less",
            "stop what holds it (`serve shutdown -y` removes the Serve applications, `ray job stop <id>` a job, "
            "`make stop` the whole local head)",
            "or wait for it (--wait-for-resources SECONDS, e.g. on an autoscaling cluster)"]
    lines.append("What to do: " + "; ".join(todo) + ".")
    return "\n".join(lines)


def require(ask: Ask, wait_s: float = 0.0, poll_s: float = 5.0) -> None:
    """Return when ``ask`` fits in the free resources; else raise ResourcesUnavailable
    (after waiting up to ``wait_s``, logging what it waits for)."""
    import ray

    deadline = time.monotonic() + wait_s
    while True:
        nodes = free_per_node()
        if units_that_fit(ask.per_unit, nodes) >= ask.units:
            return
        if time.monotonic() >= deadline:
            from ray._private.state import total_resources_per_node

            per_node = list(total_resources_per_node().values())
            largest = {r: max((n.get(r, 0.0) for n in per_node), default=0.0) for r in {*RESOURCES, *ask.per_unit}}
            raise ResourcesUnavailable(unavailable_message(ask, nodes, ray.cluster_resources(), largest))
        log.warning("waiting for resources: %s asks for %s; %s free", ask.what, ask.describe(),
                    {r: _fmt(sum(n.get(r, 0.0) for n in nodes)) for r in RESOURCES})
        time.sleep(min(poll_s, max(0.1, deadline - time.monotonic())))


def parse_resources(text: str) -> dict[str, float]:
    """A ``--resources`` value: a JSON object of custom Ray resource amounts (a node type)."""
    import argparse
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from None
    if not isinstance(value, dict) or not all(isinstance(v, int | float) and v >= 0 for v in value.values()):
        raise argparse.ArgumentTypeError('a JSON object of resource amounts, e.g. {"gpu_node": 1}')
    return {str(k): float(v) for k, v in value.items()}


def add_wait_flag(ap) -> None:
    """The one command-line flag every entry point that asks for resources shares."""
    ap.add_argument("--wait-for-resources", type=float, default=0, metavar="SECONDS",
                    help="wait up to this long for busy resources (e.g. an autoscaling cluster) instead of "
                         "failing at once with what is free and who holds it")
