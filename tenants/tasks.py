from celery import shared_task

from tenants.services import agents_sweep, heartbeat_flush


@shared_task(name="tenants.flush_heartbeats", ignore_result=True)
def flush_heartbeats() -> None:
    """Write the heartbeats buffered in Redis to Postgres (beat, every few seconds)."""
    heartbeat_flush()


@shared_task(name="tenants.sweep_agents", ignore_result=True)
def sweep_agents() -> None:
    """Expire commands, flag redeliveries, repair lost key-cache invalidations."""
    agents_sweep()
