"""A small todo API on `persistence` with FastAPI: sync and async units of work."""
