"""Run one function over many items, as Ray tasks or one after the other in this process,
and get the results back in the items' order.

The order matters: the streamed panel build combines per-instrument statistics in ticker
order so that it agrees to the bit with the in-memory build, whichever task finished first.
At most ``in_flight`` tasks are outstanding, so finished results wait in the object store
for the driver a few at a time, not all at once. Where a task runs is the caller's choice
per item (``place``): on the driver's own node (the default: it reads the driver's disk), on
a named node (where an earlier task left its part files), or anywhere in the cluster, spread
over the nodes (it reads object storage). When one fails, or the caller stops, the others
are cancelled.
"""

from __future__ import annotations

import collections
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)
ANYWHERE = "anywhere"  # a ``place`` answer: any node, spread over the cluster


def this_node() -> str | None:
    """The id of the Ray node this process runs on; None when it is not connected to Ray."""
    ray = sys.modules.get("ray")  # a process that never imported Ray is not in a cluster
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def ordered_map(fn: Callable[..., Any], items: Iterable[Any], *, shared: tuple = (), use_ray: bool = False,
                in_flight: int | None = None, reraise: tuple[type[Exception], ...] = (),
                place: Callable[[Any], str | None] | None = None, num_cpus: float = 1) -> Iterator[Any]:
    """``fn(*shared, item)`` for every item, in order. With ``use_ray`` each call is a Ray task
    of ``num_cpus`` (Ray must be connected), on the node ``place(item)`` names: a node id,
    ``ANYWHERE``, or None for the driver's node (also the default without ``place``);
    ``shared`` travels through the object store once; a task's exception of a ``reraise``
    type reaches the caller as it was raised (a DataError naming a file), any other as Ray's
    error with the remote traceback."""
    if not use_ray:
        for item in items:
            yield fn(*shared, item)
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        raise RuntimeError("ordered_map(use_ray=True) needs a Ray connection (cluster.connect.connect())")
    here = this_node()

    def strategy(item):
        node = place(item) if place is not None else None
        # Pinned without fallback: a task's inputs are on that node's disk, nowhere else.
        return "SPREAD" if node == ANYWHERE else NodeAffinitySchedulingStrategy(node or here, soft=False)

    remote = ray.remote(num_cpus=num_cpus, max_retries=2)(fn)
    refs = [ray.put(s) for s in shared]
    limit = in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    pending: collections.deque = collections.deque()

    def result():
        try:
            return ray.get(pending.popleft())
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, reraise):
                raise err.cause from None
            raise

    try:
        for item in items:
            pending.append(remote.options(scheduling_strategy=strategy(item)).remote(*refs, item))
            if len(pending) >= limit:
                yield result()
        while pending:
            yield result()
    finally:
        for ref in pending:  # an error, or a caller that stopped early: nothing keeps running behind it
            ray.cancel(ref, force=True)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=30)
