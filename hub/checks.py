from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def broker_timeouts_check(app_configs: Any, **kwargs: Any) -> list[Error]:
    """Redis redelivers a message nobody acked within the visibility timeout. If a
    step or a countdown could outlast it, the broker itself would run work twice."""
    errors: list[Error] = []
    longest = settings.PIPELINE_MAX_STEP_TIMEOUT + settings.PIPELINE_MAX_BROKER_COUNTDOWN
    if settings.CELERY_BROKER_VISIBILITY_TIMEOUT <= longest:
        errors.append(
            Error(
                f"CELERY_BROKER_VISIBILITY_TIMEOUT ({settings.CELERY_BROKER_VISIBILITY_TIMEOUT}s) must exceed the "
                f"longest step plus the longest countdown ({longest}s)",
                id="hub.E001",
            )
        )
    if settings.CELERY_TASK_TIME_LIMIT >= settings.CELERY_BROKER_VISIBILITY_TIMEOUT:
        errors.append(Error("CELERY_TASK_TIME_LIMIT must be under the visibility timeout", id="hub.E002"))
    if settings.PIPELINE_LEASE_SECONDS * 2 > settings.PIPELINE_MAX_STEP_TIMEOUT:
        errors.append(Error("PIPELINE_LEASE_SECONDS is too long for the step timeout", id="hub.E003"))
    return errors


@register()
def heartbeat_history_check(app_configs: Any, **kwargs: Any) -> list[Error]:
    """The 5-minute rollups are condensed into hours: a bucket must not straddle one."""
    seconds = settings.HEARTBEAT_ROLLUP_SECONDS
    if seconds <= 0 or 3600 % seconds:
        return [Error(f"HEARTBEAT_ROLLUP_SECONDS ({seconds}) must divide an hour (3600)", id="hub.E004")]
    return []
