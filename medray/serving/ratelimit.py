"""A per-client token bucket (the HTTP API's rate limit), pure and clock-injectable.

Each client has a bucket of ``burst`` tokens that refills at ``per_second``; a request
takes ``cost`` tokens or is refused with the seconds until it would fit (the
``Retry-After``). Buckets of clients not seen for longest are dropped beyond
``max_clients`` (a dropped client starts again with a full bucket).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable


def key_id(key: str) -> str:
    """A short, stable id of an API key for limits and logs (never the key itself)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


class RateLimiter:
    """Token buckets keyed by client id.

    Args:
        per_second: refill rate (tokens per second).
        burst: bucket size (the most tokens a client can spend at once).
        max_clients: buckets kept; the least recently used are dropped beyond it.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        per_second: float,
        burst: float,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_second <= 0 or burst <= 0 or max_clients < 1:
            raise ValueError("per_second and burst must be > 0, max_clients >= 1")
        self.per_second = per_second
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time

    def acquire(self, client: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from ``client``'s bucket.

        Returns:
            0.0 if the request may go ahead, else the seconds until it would fit (the
            bucket is left unchanged: a refused request costs nothing).
        """
        if cost > self.burst:
            raise ValueError(f"cost {cost} exceeds the bucket size {self.burst}")
        now = self.clock()
        tokens, then = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.per_second)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.per_second
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` header value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


__all__ = ["RateLimiter", "key_id", "retry_after"]
