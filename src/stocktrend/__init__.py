"""stocktrend: leakage-free 5-day direction classification on Ray."""

__version__ = "0.1.0"
