"""Raw bars to a model's windows, off the event loop and bounded.

Featurisation (parsing rows, the dataset's own feature code, scaling) runs in a small thread
pool of its own, never in the event loop's shared one, with a time limit (``featurise_timeout_s``)
and at most ``max_pending`` requests waiting or running: past that a request answers 503 with
Retry-After at once instead of queueing behind the rest. A thread cannot be interrupted, so
one that overran its time limit still counts against ``max_pending`` until it ends.
Every failure of the parse stage answers 4xx naming the field; none is a 500.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import numpy as np

from stocktrend.inference.predictor import InputError, Predictor
from stocktrend.serving.wire import ApiError

log = logging.getLogger(__name__)

# What the feature code and pandas raise on input no validation foresaw: a client's doing.
PARSE_ERRORS = (ValueError, TypeError, OverflowError, KeyError, IndexError, ArithmeticError)


class Featuriser:
    def __init__(self, workers: int, timeout_s: float, max_pending: int):
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featurise")
        self.timeout_s, self.max_pending = timeout_s, max_pending
        self.pending = 0

    def _release(self, _future) -> None:
        self.pending -= 1

    async def __call__(self, predictor: Predictor, bars: dict[str, Any], ticker: str | None,
                       last: int = 1) -> tuple[np.ndarray, list[str]]:
        if self.pending >= self.max_pending:
            raise ApiError(503, "bars", f"{self.pending} bars requests are being featurised on this replica; "
                                        "retry shortly")
        self.pending += 1
        future = asyncio.get_running_loop().run_in_executor(self.pool, _windows, predictor, bars, ticker, last)
        future.add_done_callback(self._release)  # when the thread ends, not when the wait below gives up
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            log.warning("featurisation overran %.1f s (%d pending)", self.timeout_s, self.pending)
            raise ApiError(503, "bars", f"featurising the bars took longer than {self.timeout_s:g} s on this "
                                        "replica; retry shortly, or send fewer rows") from None


def _windows(predictor: Predictor, bars: dict[str, Any], ticker: str | None, last: int):
    try:
        return predictor.windows_from_bars(bars, last, ticker)
    except InputError:
        raise
    except PARSE_ERRORS as err:
        raise InputError("bars", f"cannot be read ({type(err).__name__}: {err})") from None
    except MemoryError:
        raise InputError("bars", "too large to featurise") from None
