"""stocktrend.training."""
