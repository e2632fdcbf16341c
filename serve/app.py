"""The Serve application builder, for `serve run serve.app:build` from the repository root.

The application lives in the installed package (``stocktrend.serving.app``) so that every
node of a cluster can import it without shipping this folder; ``serve/config.yaml`` names
it there. The builder takes typed arguments (``stocktrend.serving.config.ServeArgs``).
"""

from stocktrend.serving.app import build
from stocktrend.serving.config import ServeArgs

__all__ = ["build", "ServeArgs"]
