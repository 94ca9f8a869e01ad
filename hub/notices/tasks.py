from __future__ import annotations

from celery import shared_task

from hub.notices.services import SEND_CUSTOMER_NOTICE, customer_notice_send


@shared_task(name=SEND_CUSTOMER_NOTICE, ignore_result=True)
def send_customer_notice(notice_id: int) -> bool:
    return customer_notice_send(notice_id=notice_id)
