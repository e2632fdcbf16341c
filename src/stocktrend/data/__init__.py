"""stocktrend.data."""
