"""stocktrend.serving: the Ray Serve application (HTTP API, batching, monitoring)."""
