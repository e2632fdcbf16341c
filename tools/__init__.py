"""Maintainer tools that live beside the project, not inside the runtime package ``stocktrend``."""
