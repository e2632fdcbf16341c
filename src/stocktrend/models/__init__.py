"""stocktrend.models."""
