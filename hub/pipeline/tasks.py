from celery import shared_task

from hub.pipeline.engine import execute_step
from hub.pipeline.reaper import pipeline_reap
from hub.pipeline.transitions import RUN_STEP


@shared_task(name=RUN_STEP, ignore_result=True)
def run_step(step_id: int) -> None:
    """Run one step. Delivery is at least once; the claim in the database makes the
    step's action run once per attempt however often the message arrives."""
    execute_step(step_id)


@shared_task(name="hub.pipeline.reap", ignore_result=True)
def reap() -> None:
    pipeline_reap()
