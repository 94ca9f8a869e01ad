from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from provisioning.models import Order

SEND_WELCOME = "provisioning.send_welcome"


def welcome_send(*, order_id: int) -> bool:
    """The customer's welcome email, sent once per order even when the task runs twice:
    the row is locked and marked in the same transaction as the send."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.welcome_sent_at is not None or not order.customer_email:
            return False
        send_mail(
            subject=f"Your server for {order.domain} is ready",
            message=(
                f"Welcome! Your AI stack on {order.domain} is up.\n"
                f"Tools: {', '.join(order.tools) or 'none yet'}.\n"
                f"Your tools live under their subdomains of {order.domain}.\n"
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[order.customer_email],
        )
        order.welcome_sent_at = timezone.now()
        order.save(update_fields=["welcome_sent_at", "updated_at"])
    return True
