from celery import shared_task

from rollouts.services import rollouts_evaluate, stage_send_rest


@shared_task(name="rollouts.evaluate", ignore_result=True)
def evaluate() -> None:
    """Judge every running rollout's current stage (beat, every 15 seconds)."""
    rollouts_evaluate()


@shared_task(name="rollouts.send_updates", ignore_result=True)
def send_updates(rollout_id: int) -> None:
    """Queue the `update` commands a large stage's dispatch left for after its commit."""
    stage_send_rest(rollout_id=rollout_id)
