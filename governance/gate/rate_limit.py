"""Token buckets for the gate's per-process rate limits (lease issuance 50/s; the operator
endpoints' 20/s writes and 100/s reads), as LatchGate counts them: per process, a burst of
one second's worth, refilled continuously."""

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Spend one token if there is one."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


class SettingBucket:
    """A bucket whose rate is a setting, read at each call (so a changed setting, in tests or
    after ``override_settings``, starts a fresh bucket)."""

    def __init__(self, setting: str):
        self.setting = setting
        self._bucket: TokenBucket | None = None
        self._lock = threading.Lock()

    def take(self) -> bool:
        from django.conf import settings

        rate = float(getattr(settings, self.setting))
        with self._lock:
            if self._bucket is None or self._bucket.rate != rate:
                self._bucket = TokenBucket(rate)
            bucket = self._bucket
        return bucket.take()

    def reset(self) -> None:
        with self._lock:
            self._bucket = None
