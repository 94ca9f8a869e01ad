"""How an app declares a pipeline: an ordered list of steps, each with its action,
optional compensation, retry policy and timeout."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.pipeline.context import StepContext
    from hub.pipeline.models import Job


class PermanentStepError(Exception):
    """A failure that retrying cannot fix (a 4xx from a provider, bad input): the step
    fails for good at once."""


class StepDeferred(Exception):
    """The step cannot go on yet (waiting for staff, for a server to boot): run it again
    after `delay` seconds without counting an attempt.

    `hold_deadline`: the step waits on the outside world (a customer delegating their
    nameservers, for days), so the wait is not the job's: the job's deadline moves on
    by the time the step spends waiting, and bounds only the work itself."""

    def __init__(self, reason: str, *, delay: float = 30.0, hold_deadline: bool = False) -> None:
        super().__init__(reason)
        self.delay = delay
        self.hold_deadline = hold_deadline


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with equal jitter: the n-th retry waits between half and all
    of base * 2**(n-1) (capped), so waits grow while concurrent retries spread out."""

    max_attempts: int = 3
    base_delay: float = 5.0
    max_delay: float = 600.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = (PermanentStepError,)

    def is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self.retry_on) and not isinstance(exc, self.give_up_on)

    def delay_after(self, attempt: int, *, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1)))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


StepAction = Callable[["StepContext"], dict[str, Any] | None]
StepCompensation = Callable[["StepContext"], dict[str, Any] | None]
JobHook = Callable[["Job"], None]


@dataclass(frozen=True)
class StepSpec:
    name: str
    action: StepAction
    compensate: StepCompensation | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Past this the lease is no longer renewed: the reaper takes the step back.
    timeout: float = 300.0
    compensation_retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_attempts=5))
    # A step whose effect comes in parts (two DNS records, a server bought before it
    # was recorded) may have made some of them before it failed for good: its own
    # compensation, idempotent like every compensation, then runs first.
    compensate_if_failed: bool = False


@dataclass(frozen=True)
class Pipeline:
    name: str
    steps: tuple[StepSpec, ...]
    queue: str = "default"
    # The whole job must end by then, or it is rolled back.
    deadline: timedelta | None = None
    # Called inside the transaction that moves the job to a terminal status.
    on_finish: JobHook | None = None

    def __post_init__(self) -> None:
        names = [step.name for step in self.steps]
        if len(names) != len(set(names)):
            raise ValueError(f"pipeline {self.name}: step names must be unique")
        if not names:
            raise ValueError(f"pipeline {self.name}: needs at least one step")

    def step(self, name: str) -> StepSpec:
        for spec in self.steps:
            if spec.name == name:
                return spec
        raise KeyError(f"pipeline {self.name} has no step {name!r}")
