"""stocktrend.inference."""
