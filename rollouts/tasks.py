from celery import shared_task

from rollouts.services import rollouts_evaluate


@shared_task(name="rollouts.evaluate", ignore_result=True)
def evaluate() -> None:
    """Judge every running rollout's current stage (beat, every 15 seconds)."""
    rollouts_evaluate()
