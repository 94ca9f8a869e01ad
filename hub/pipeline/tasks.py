import logging

from celery import shared_task

from hub.pipeline.engine import execute_step
from hub.pipeline.reaper import pipeline_reap
from hub.pipeline.transitions import RUN_STEP
from hub.workers import broker_watch

logger = logging.getLogger(__name__)


@shared_task(name=RUN_STEP, ignore_result=True)
def run_step(step_id: int) -> None:
    """Run one step. Delivery is at least once; the claim in the database makes the
    step's action run once per attempt however often the message arrives."""
    execute_step(step_id)


@shared_task(name="hub.pipeline.reap", ignore_result=True)
def reap() -> None:
    """Beat's job: the pipeline's lost work first, then the broker's round (queues
    declared again, a canary to every worker: hub/workers.py)."""
    pipeline_reap()
    try:
        broker_watch()
    except Exception:
        logger.exception("reaper: the broker round failed")
