"""Waking a step that waits on an event the Hub itself receives (an agent registering),
so that it goes on at once instead of at its next poll; the poll stays, less often, as
the fallback for a wake that never came (the web process died after its commit).

The app that receives the event and the app whose step waits on it stand on different
floors, and neither may import the other's models: the waiting app says when it starts
which of its steps wait on an event and how to find the jobs waiting on one subject
(`wake_on`); the receiving app announces the event in the transaction that records it
(`event_received`), and the steps are woken once that commits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from django.db import transaction

from hub.pipeline.transitions import step_wake

logger = logging.getLogger(__name__)

# The tenant's agent traded its registration token for a key; the subject is the tenant's id.
AGENT_REGISTERED = "tenant.agent_registered"

# The event's subject id -> the ids of the jobs that may be waiting on it.
WaitingJobs = Callable[[str], Iterable[int]]

_waiting: dict[str, list[tuple[str, WaitingJobs]]] = {}


def wake_on(event: str, *, step_name: str, waiting_jobs: WaitingJobs) -> None:
    """The step `step_name` of the jobs `waiting_jobs` finds is woken by `event`."""
    waiters = _waiting.setdefault(event, [])
    if (step_name, waiting_jobs) not in waiters:
        waiters.append((step_name, waiting_jobs))


def waiting_on(event: str) -> list[tuple[str, WaitingJobs]]:
    """The steps `event` wakes, each with how the jobs waiting on it are found."""
    return list(_waiting.get(event, ()))


def event_received(event: str, subject_id: int | str) -> None:
    """Wake the steps waiting on this event once the surrounding transaction commits."""
    transaction.on_commit(lambda: wake_waiting(event, str(subject_id)))


def wake_waiting(event: str, subject_id: str) -> int:
    """Wake now; the number of steps woken. A wake that fails is logged and left to the
    step's poll: the event was recorded, and receiving it must not fail for this."""
    woken = 0
    for step_name, waiting_jobs in _waiting.get(event, ()):
        try:
            for job_id in waiting_jobs(subject_id):
                woken += step_wake(job_id=job_id, step_name=step_name, reason=event)
        except Exception:
            logger.exception("waking %s on %s %s failed; its poll will find it", step_name, event, subject_id)
    return woken
