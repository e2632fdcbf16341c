"""Batched inference: concurrent requests stacked into one call of the back-end.

Each request runs on the Predictor it was validated (or featurised) with: during a
promotion one batch may hold requests for the old and the new model, and each is answered
by its own, so a swap can neither fail a request nor feed one model's windows to another.

A call the back-end is known to finish within ``inline_ms`` runs on the event loop itself:
handing a 50-microsecond call to a thread costs more than the call (a pool hand-off and two
wake-ups under the GIL). Known: each predictor's time per window is measured on every call
(the first ones run in the thread), so a large model, or a large batch, still leaves the
loop free to read the next requests while it runs. And with no batch wait, a request that
is the replica's only one, with an inline call, skips the batcher's queue: it would be a
batch of one either way. (With others in flight it joins the queue, so that they can share
its batch.)
"""

from __future__ import annotations

import asyncio
import time
import weakref

import numpy as np
from ray import serve

from stocktrend.inference.backends import Outputs
from stocktrend.inference.predictor import Predictor

EMA = 0.2  # weight of the newest measurement in a predictor's time per window


class BatchedInference:
    def __init__(self, max_batch_size: int, wait_s: float, inline_ms: float = 0.0):
        self.__call__.set_max_batch_size(max_batch_size)
        self.__call__.set_batch_wait_timeout_s(wait_s)
        self.inline_ms, self.wait_s = inline_ms, wait_s
        # predictor -> its recent time per window (weak: an unloaded model's entry goes with it)
        self.ms_per_window: weakref.WeakKeyDictionary[Predictor, float] = weakref.WeakKeyDictionary()
        self.inline_calls = self.thread_calls = self.direct_calls = 0
        self.waiting = 0  # requests inside the batcher (queued, or in a batch being run)

    async def run(self, predictor: Predictor, windows: np.ndarray, alone: bool = False) -> tuple[Outputs, int]:
        """(the back-end's outputs for ``windows``, the size of the batch they ran in);
        ``alone``: no other request is in flight on this replica."""
        # With a batch wait the client asked for batches to fill: a lone request waits too.
        if alone and self.wait_s == 0 and self.waiting == 0 and self.runs_inline(predictor, len(windows)):
            self.direct_calls += 1
            res = self._run(predictor, windows)
            return res._replace(volatility=predictor.volatility(res.volatility)), 1
        self.waiting += 1
        try:
            return await self((predictor, windows))
        finally:
            self.waiting -= 1

    def _run(self, predictor: Predictor, x: np.ndarray) -> Outputs:
        t0 = time.perf_counter()
        res = predictor.backend(x)
        ms = (time.perf_counter() - t0) * 1e3 / len(x)
        old = self.ms_per_window.get(predictor)
        self.ms_per_window[predictor] = ms if old is None else old + EMA * (ms - old)
        return res

    def runs_inline(self, predictor: Predictor, windows: int) -> bool:
        per_window = self.ms_per_window.get(predictor)
        return per_window is not None and per_window * windows <= self.inline_ms

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def __call__(self, items: list[tuple[Predictor, np.ndarray]]) -> list[tuple[Outputs, int]]:
        """``items``: (predictor, windows) per request -> (its rows of the back-end's
        ``Outputs``, the volatility annualised; batch size) each."""
        out: list = [None] * len(items)
        for predictor in {id(p): p for p, _ in items}.values():
            idx = [i for i, (p, _) in enumerate(items) if p is predictor]
            sizes = np.cumsum([len(items[i][1]) for i in idx])[:-1]
            x = items[idx[0]][1] if len(idx) == 1 else np.concatenate([items[i][1] for i in idx])
            if self.runs_inline(predictor, len(x)):
                self.inline_calls += 1
                res = self._run(predictor, x)
            else:
                self.thread_calls += 1
                res = await asyncio.to_thread(self._run, predictor, x)
            res = res._replace(volatility=predictor.volatility(res.volatility))
            # Each field split into the requests' rows (None stays None for every request).
            parts = [np.split(f, sizes) if f is not None else [None] * len(idx) for f in res]
            for k, i in enumerate(idx):
                out[i] = (Outputs(*(p[k] for p in parts)), len(items))
        return out
