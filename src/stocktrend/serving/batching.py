"""Batched inference: concurrent requests stacked into one call of the back-end.

Each request runs on the Predictor it was validated (or featurised) with: during a
promotion one batch may hold requests for the old and the new model, and each is answered
by its own, so a swap can neither fail a request nor feed one model's windows to another.
"""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from stocktrend.inference.predictor import Predictor


class BatchedInference:
    def __init__(self, max_batch_size: int, wait_s: float):
        self.__call__.set_max_batch_size(max_batch_size)
        self.__call__.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def __call__(self, items: list[tuple[Predictor, np.ndarray]]) -> list[tuple]:
        """``items``: (predictor, windows) per request -> (probs, attention, annualised
        volatility or None, batch size) each."""
        out: list = [None] * len(items)
        for predictor in {id(p): p for p, _ in items}.values():
            idx = [i for i, (p, _) in enumerate(items) if p is predictor]
            sizes = np.cumsum([len(items[i][1]) for i in idx])[:-1]
            x = items[idx[0]][1] if len(idx) == 1 else np.concatenate([items[i][1] for i in idx])
            probs, attention, z = await asyncio.to_thread(predictor.backend, x)
            vol = predictor.volatility(z)
            vols = np.split(vol, sizes) if vol is not None else [None] * len(idx)
            for i, p, a, v in zip(idx, np.split(probs, sizes), np.split(attention, sizes), vols):
                out[i] = (p, a, v, len(items))
        return out
