"""The HTTP API's per-client token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from medray.config import ConfigError, from_dict
from medray.serving.ratelimit import RateLimiter, key_id, retry_after
from medray.serving.settings import AppArgs

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refusal_with_the_wait_until_a_request_fits():
    clock = Clock()
    rl = RateLimiter(per_second=2.0, burst=3, clock=clock)
    assert [rl.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.acquire("a") == pytest.approx(0.5)  # one token refills in 1/2 s
    clock.now += 0.25
    assert rl.acquire("a") == pytest.approx(0.25)  # a refused request cost nothing
    clock.now += 0.25
    assert rl.acquire("a") == 0.0
    assert rl.acquire("a") == pytest.approx(0.5)


def test_buckets_are_per_client_and_refill_up_to_the_burst_only():
    clock = Clock()
    rl = RateLimiter(per_second=1.0, burst=2, clock=clock)
    assert rl.acquire("a", 2) == 0.0
    assert rl.acquire("b", 2) == 0.0  # b has its own bucket
    assert rl.acquire("a") == pytest.approx(1.0)
    clock.now += 3600  # an hour idle refills to 2, not 3600
    assert rl.acquire("a", 2) == 0.0
    assert rl.acquire("a") == pytest.approx(1.0)


def test_cost_over_the_burst_is_an_error_and_old_clients_are_dropped():
    clock = Clock()
    rl = RateLimiter(per_second=1.0, burst=2, max_clients=2, clock=clock)
    with pytest.raises(ValueError, match="exceeds the bucket size"):
        rl.acquire("a", 3)
    rl.acquire("a", 2)
    rl.acquire("b")
    rl.acquire("c")  # drops a, the least recently seen
    assert len(rl) == 2
    assert rl.acquire("a", 2) == 0.0  # a starts again with a full bucket


def test_retry_after_rounds_up_to_whole_seconds_and_key_ids_hide_the_key():
    assert [retry_after(x) for x in (0.01, 1.0, 1.2, 7.9)] == ["1", "1", "2", "8"]
    kid = key_id("s3cret-key")
    assert kid == key_id("s3cret-key") != key_id("other") and "s3cret" not in kid
    assert len(kid) == len("key-") + 12


def test_settings_validate_the_limits():
    args = from_dict(AppArgs, {})
    assert args.rate_limit.enabled and args.rate_limit.burst >= args.rate_limit.analyze_cost
    assert args.timeouts.analyze_s > args.timeouts.search_s > 0
    with pytest.raises(ConfigError, match="analyze_cost"):
        from_dict(AppArgs, {"rate_limit": {"burst": 2, "analyze_cost": 4}})
    with pytest.raises(ConfigError, match="timeouts.chat_s"):
        from_dict(AppArgs, {"timeouts": {"chat_s": 0}})
    with pytest.raises(ConfigError, match="max_prompt_chars"):
        from_dict(AppArgs, {"limits": {"max_prompt_chars": 0}})
