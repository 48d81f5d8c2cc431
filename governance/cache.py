"""The Django cache on Redis, degrading to this process's memory while Redis is down.

What the cache holds (allauth's sign-in rate limits, compiled policies) is cheap to lose
and must never turn a request into a 500. When a Redis call fails, the backend answers from
a per-process ``LocMemCache`` and skips Redis for ``RETRY_AFTER_SECONDS`` (so a dead Redis
costs one socket timeout per interval, not per call); then it tries Redis again. While
degraded, rate limits count per process instead of per deployment (docs/reliability.md).
"""

import logging
import threading
import time

import redis
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5.0


def _degrading(name: str):
    def method(self, *args, **kwargs):
        if self._redis_up():
            try:
                return getattr(RedisCache, name)(self, *args, **kwargs)
            except redis.RedisError as exc:
                self._went_down(exc)
        return getattr(self.fallback, name)(*args, **kwargs)

    method.__name__ = name
    return method


class DegradingRedisCache(RedisCache):
    """``RedisCache`` that falls back to local memory while Redis is unreachable."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self.fallback = LocMemCache(f"mandate-redis-fallback-{id(self)}", {"TIMEOUT": params.get("TIMEOUT", 300)})
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _redis_up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _went_down(self, exc: Exception) -> None:
        # Logged at most once per interval: Redis is skipped until then.
        with self._lock:
            self._down_until = time.monotonic() + RETRY_AFTER_SECONDS
        logger.warning("cache: Redis unreachable, using this process's memory", extra={"error": str(exc)})

    add = _degrading("add")
    get = _degrading("get")
    set = _degrading("set")
    touch = _degrading("touch")
    delete = _degrading("delete")
    get_many = _degrading("get_many")
    has_key = _degrading("has_key")
    incr = _degrading("incr")
    set_many = _degrading("set_many")
    delete_many = _degrading("delete_many")
    clear = _degrading("clear")
