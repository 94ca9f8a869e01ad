from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings


def test_celery_is_configured_to_lose_nothing_and_do_nothing_twice() -> None:
    assert settings.CELERY_TASK_ACKS_LATE is True
    assert settings.CELERY_TASK_REJECT_ON_WORKER_LOST is True
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS is True
    assert settings.CELERY_ACCEPT_CONTENT == ["json"]
    assert settings.CELERY_TASK_SOFT_TIME_LIMIT < settings.CELERY_TASK_TIME_LIMIT
    assert settings.CELERY_TASK_TIME_LIMIT < settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert {q.name for q in settings.CELERY_TASK_QUEUES} == {
        "provisioning",
        "rollouts",
        "monitoring",
        "billing",
        "default",
    }


def test_system_check_refuses_a_visibility_timeout_shorter_than_a_step() -> None:
    assert not [e for e in run_checks() if e.id is not None and e.id.startswith("hub.")]
    with override_settings(CELERY_BROKER_VISIBILITY_TIMEOUT=600, PIPELINE_MAX_STEP_TIMEOUT=1800):
        assert "hub.E001" in {e.id for e in run_checks()}
