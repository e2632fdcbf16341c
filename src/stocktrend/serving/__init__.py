"""stocktrend.serving: predictions for users, online (the Ray Serve application: HTTP API,
batching, monitoring, deploy/promote control) and offline (Ray Data batch scoring, ``batch``)."""
