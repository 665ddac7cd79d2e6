"""Nexus-Flow's benchmark suite: ``python -m bench`` (see docs/performance.md).

It measures, on the same Redis and PostgreSQL, raw RQ (the queue Nexus-Flow sits on) beside
Nexus-Flow on the same shapes, and prints one table with the targets of the performance issue
marked met or missed. It is not part of the test suite (a smoke version is).
"""
