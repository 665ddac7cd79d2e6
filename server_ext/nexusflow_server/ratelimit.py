"""A sliding-window rate limit decided by one atomic Redis Lua script.

``INCR`` then ``EXPIRE`` is not atomic, and fixed windows let twice the limit through at a
window's edge; a log of request times in a sorted set, trimmed and counted in one script, has
neither problem. The script reads Redis's own clock, so several servers share one limit.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from nexusflow_kernel import defaults

_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, limit - count - 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = window
if oldest[2] then wait = tonumber(oldest[2]) + window - now end
return {0, 0, wait}
"""


@dataclass(frozen=True)
class Decision:
    """The answer for one request: allowed or not, how many are left, when to retry."""

    allowed: bool
    remaining: int
    retry_after_s: int


class RateLimiter:
    """Sliding-window limits keyed by name (``hook:<id>``, ``ip:<address>``)."""

    def __init__(self, client: Any) -> None:
        self._script = client.register_script(_SCRIPT)

    def hit(self, name: str, limit: int, window_s: float) -> Decision:
        """Count one request against ``name``; raise a ``redis.RedisError`` if Redis is down."""
        key = f"{defaults.KEY_PREFIX}:ratelimit:{name}"
        allowed, remaining, wait_ms = self._script(
            keys=[key], args=[int(window_s * 1000), int(limit), uuid.uuid4().hex]
        )
        return Decision(bool(allowed), int(remaining), max(1, math.ceil(int(wait_ms) / 1000)))


__all__ = ["Decision", "RateLimiter"]
