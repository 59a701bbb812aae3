"""Examples of applications built on `persistence` (not part of the distribution)."""
