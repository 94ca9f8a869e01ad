"""What the pipeline-overhead benchmark runs on its worker: no-op pipelines of the
step engine and raw no-op Celery tasks. Both end by setting a Redis key the bench
waits for, so the two are timed the same way."""

from __future__ import annotations

from typing import Any

import redis
from celery import shared_task
from django.conf import settings
from django.db import transaction

from hub.pipeline.context import StepContext
from hub.pipeline.models import Job
from hub.pipeline.registry import register
from hub.pipeline.spec import Pipeline, StepSpec

QUEUE = "bench"
# The same pipelines on a queue whose worker sends every step through the broker
# (PIPELINE_RUN_ON_SECONDS=0): the engine as it ran before claim-next-in-record.
HOP_QUEUE = "bench-hop"
STEP_COUNTS = (5, 20)


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def _noop_step(ctx: StepContext) -> None:
    return None


def _job_finished(job: Job) -> None:
    key = str(job.context.get("done_key", ""))
    if key:
        transaction.on_commit(lambda: _client().set(key, job.status, ex=600))


def pipeline_name(steps: int, *, hop: bool = False) -> str:
    return f"bench.{'hop' if hop else 'noop'}{steps}"


for _count in STEP_COUNTS:
    for _hop in (False, True):
        register(
            Pipeline(
                name=pipeline_name(_count, hop=_hop),
                queue=HOP_QUEUE if _hop else QUEUE,
                on_finish=_job_finished,
                steps=tuple(StepSpec(name=f"noop{i}", action=_noop_step) for i in range(1, _count + 1)),
            )
        )


@shared_task(name="bench.noop", ignore_result=True)
def noop() -> None:
    return None


@shared_task(name="bench.mark", ignore_result=True)
def mark(key: str) -> None:
    _client().set(key, "SUCCEEDED", ex=600)


def raw_chain(steps: int, key: str) -> Any:
    """A chain of `steps` immutable no-op signatures whose last one sets `key`."""
    from celery import chain

    signatures = [noop.si().set(queue=QUEUE) for _ in range(steps - 1)]
    signatures.append(mark.si(key).set(queue=QUEUE))
    return chain(*signatures)
