"""Ray Data batch scorer: one actor holds a Predictor and the shared feature matrix.

Windows are cut inside the actor from the matrix (put once in the object store), so a
batch of day indices, not a batch of windows, travels through Ray Data.
"""

from __future__ import annotations

import numpy as np

from stocktrend.inference.artifact import local_model_dir
from stocktrend.inference.predictor import Predictor


class WindowScorer:
    def __init__(self, model: str, backend: str, threads: int, values):
        import ray

        # On object storage, the actor's node reads its own mirror of the model.
        self.predictor = Predictor.from_artifact(local_model_dir(model), backend, threads)
        self.values = ray.get(values) if isinstance(values, ray.ObjectRef) else values

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ends = batch["end"]
        out = self.predictor.backend(self.predictor.windows_at(self.values, ends))
        vol = self.predictor.volatility(out.volatility)
        return {"end": ends, "p_down": out.probs[:, 0], "p_up": out.probs[:, 1],
                **({"volatility": vol} if vol is not None else {})}
