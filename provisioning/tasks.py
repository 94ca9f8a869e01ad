from celery import shared_task

from provisioning.services.moves import OVERFLOW_CHECK
from provisioning.services.moves import overflow_check as overflow_check_run
from provisioning.services.welcome import SEND_WELCOME, welcome_send


@shared_task(name=SEND_WELCOME, autoretry_for=(Exception,), retry_backoff=5, max_retries=8)
def send_welcome(order_id: int) -> None:
    welcome_send(order_id=order_id)


@shared_task(name=OVERFLOW_CHECK)
def overflow_check() -> dict[str, object]:
    run = overflow_check_run()
    return {"started_moves": run.started, "skipped": run.skipped}
