"""stocktrend.inference: load a model artifact and predict, with no Ray and no training code.

    from stocktrend.inference import Predictor
    p = Predictor.from_artifact("models/msft_quick")

``Predictor`` and ``InputError`` are imported on first use (PEP 562), so importing a
submodule such as ``stocktrend.inference.artifact`` does not load torch.
"""

from __future__ import annotations

__all__ = ["InputError", "Predictor"]


def __getattr__(name: str):
    if name in __all__:
        from stocktrend.inference import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'stocktrend.inference' has no attribute {name!r}")
