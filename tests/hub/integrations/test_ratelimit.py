"""The provider token bucket lives in the real Redis and is shared by processes."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest

from hub.integrations.ratelimit import RateLimitTimeout, TokenBucket


def _hammer(name: str, limit: int, period: float, burst: int, until: float, out: multiprocessing.Queue) -> None:
    import django

    django.setup()
    bucket = TokenBucket(name=name, limit=limit, period_seconds=period, burst=burst)
    stamps = []
    while time.time() < until:
        bucket.take(max_wait=5)
        stamps.append(time.time())
    out.put(stamps)


def test_two_processes_together_never_exceed_the_shared_rate() -> None:
    # given a bucket of 20 requests/s with a burst of 5, shared through Redis
    name = f"test-{uuid.uuid4().hex[:8]}"
    queue: multiprocessing.Queue = multiprocessing.Queue()
    until = time.time() + 2.0
    workers = [
        multiprocessing.get_context("fork").Process(target=_hammer, args=(name, 20, 1.0, 5, until, queue))
        for _ in range(2)
    ]
    # when two processes take tokens as fast as they can for two seconds
    for worker in workers:
        worker.start()
    stamps = sorted(queue.get(timeout=20) + queue.get(timeout=20))
    for worker in workers:
        worker.join(timeout=10)
    # then together they got the burst plus the rate, not twice it
    elapsed = stamps[-1] - stamps[0]
    assert len(stamps) <= 5 + 20 * elapsed + 2
    assert len(stamps) >= 20 * elapsed * 0.7
    for start in stamps:
        in_window = [s for s in stamps if start <= s < start + 1.0]
        assert len(in_window) <= 5 + 20 + 1


def test_retry_after_closes_the_bucket_for_everyone() -> None:
    bucket = TokenBucket(name=f"test-{uuid.uuid4().hex[:8]}", limit=100, period_seconds=1, burst=100)
    bucket.close_for(0.6)
    other_process_view = TokenBucket(name=bucket.name, limit=100, period_seconds=1, burst=100)
    wait = other_process_view.try_take()
    assert 0.3 < wait <= 0.6
    started = time.monotonic()
    other_process_view.take(max_wait=5)
    assert time.monotonic() - started >= 0.3


def test_take_gives_up_past_its_patience() -> None:
    bucket = TokenBucket(name=f"test-{uuid.uuid4().hex[:8]}", limit=1, period_seconds=10, burst=1)
    bucket.take(max_wait=1)
    with pytest.raises(RateLimitTimeout):
        bucket.take(max_wait=1)
