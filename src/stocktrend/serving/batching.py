"""Batched inference: concurrent requests stacked into one call of the back-end.

Each request runs on the Predictor it was validated (or featurised) with: during a
promotion one batch may hold requests for the old and the new model, and each is answered
by its own, so a swap can neither fail a request nor feed one model's windows to another.
"""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from stocktrend.inference.backends import Outputs
from stocktrend.inference.predictor import Predictor


class BatchedInference:
    def __init__(self, max_batch_size: int, wait_s: float):
        self.__call__.set_max_batch_size(max_batch_size)
        self.__call__.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def __call__(self, items: list[tuple[Predictor, np.ndarray]]) -> list[tuple[Outputs, int]]:
        """``items``: (predictor, windows) per request -> (its rows of the back-end's
        ``Outputs``, the volatility annualised; batch size) each."""
        out: list = [None] * len(items)
        for predictor in {id(p): p for p, _ in items}.values():
            idx = [i for i, (p, _) in enumerate(items) if p is predictor]
            sizes = np.cumsum([len(items[i][1]) for i in idx])[:-1]
            x = items[idx[0]][1] if len(idx) == 1 else np.concatenate([items[i][1] for i in idx])
            res = await asyncio.to_thread(predictor.backend, x)
            res = res._replace(volatility=predictor.volatility(res.volatility))
            # Each field split into the requests' rows (None stays None for every request).
            parts = [np.split(f, sizes) if f is not None else [None] * len(idx) for f in res]
            for k, i in enumerate(idx):
                out[i] = (Outputs(*(p[k] for p in parts)), len(items))
        return out
