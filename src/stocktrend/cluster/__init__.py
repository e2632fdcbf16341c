"""stocktrend.cluster: reaching a Ray cluster the way a new user's machine needs it.

- ``auth``: the Ray token (Ray 2.60 token authentication) heads and clients share;
- ``head``: starting the project's heads (the user's persistent one, and the private ones
  of the tests and benchmarks) with their ports checked first;
- ``connect``: joining a cluster, or starting a local Ray when there is none;
- ``resources``: the preflight every entry point runs before asking Ray for resources, so
  a busy cluster gives an error within seconds instead of a silent wait.
"""
