"""Hark's shared core: settings, wire schemas, queue naming, the job store and the worker registry.

Both tiers (`web/`, `workers/`) import this package; it imports neither of them.
"""

__version__ = "0.1.0"
