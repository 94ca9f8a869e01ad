from celery import shared_task

from provisioning.services.welcome import SEND_WELCOME, welcome_send


@shared_task(name=SEND_WELCOME, autoretry_for=(Exception,), retry_backoff=5, max_retries=8)
def send_welcome(order_id: int) -> None:
    welcome_send(order_id=order_id)
