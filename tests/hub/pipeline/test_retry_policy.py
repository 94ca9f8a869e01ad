import random

from hub.pipeline.spec import PermanentStepError, RetryPolicy


def test_backoff_waits_grow_with_each_attempt_despite_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=1000)
    for seed in range(50):
        rng = random.Random(seed)
        waits = [policy.delay_after(attempt, rng=rng) for attempt in range(1, 8)]
        assert waits == sorted(waits)
        assert 0.5 <= waits[0] <= 1.0
        assert 32 <= waits[6] <= 64


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(base_delay=10, max_delay=60)
    waits = {round(policy.delay_after(20, rng=random.Random(seed)), 3) for seed in range(20)}
    assert max(waits) <= 60
    assert min(waits) >= 30
    assert len(waits) > 10, "jitter spreads concurrent retries"


def test_permanent_errors_are_not_retried() -> None:
    policy = RetryPolicy()
    assert policy.is_retryable(RuntimeError("flaky"))
    assert not policy.is_retryable(PermanentStepError("422"))
    assert not RetryPolicy(retry_on=(TimeoutError,)).is_retryable(ValueError("bad"))
