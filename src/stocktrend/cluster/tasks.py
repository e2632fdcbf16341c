"""Run one function over many items, as Ray tasks or one after the other in this process,
and get the results back in the items' order.

The order matters: the streamed panel build combines per-instrument statistics in ticker
order so that it agrees to the bit with the in-memory build, whichever task finished first.
At most ``in_flight`` tasks are outstanding, so finished results wait in the object store
for the driver a few at a time, not all at once. The tasks run on the driver's own node
(they share its scratch folder); when one fails, or the caller stops, the others are cancelled.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)


def ordered_map(fn: Callable[..., Any], items: Iterable[Any], *, shared: tuple = (), use_ray: bool = False,
                in_flight: int | None = None, reraise: tuple[type[Exception], ...] = ()) -> Iterator[Any]:
    """``fn(*shared, item)`` for every item, in order. With ``use_ray`` each call is a Ray task
    of one CPU on this node (Ray must be connected); ``shared`` travels through the object store
    once; a task's exception of a ``reraise`` type reaches the caller as it was raised (a
    DataError naming a file), any other as Ray's error with the remote traceback."""
    if not use_ray:
        for item in items:
            yield fn(*shared, item)
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        raise RuntimeError("ordered_map(use_ray=True) needs a Ray connection (cluster.connect.connect())")
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    remote = ray.remote(num_cpus=1, max_retries=2, scheduling_strategy=here)(fn)
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
            pending.append(remote.remote(*refs, item))
            if len(pending) >= limit:
                yield result()
        while pending:
            yield result()
    finally:
        for ref in pending:  # an error, or a caller that stopped early: nothing keeps running behind it
            ray.cancel(ref, force=True)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=30)
