from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from provisioning import catalog
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
            message=welcome_body(order),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[order.customer_email],
        )
        order.welcome_sent_at = timezone.now()
        order.save(update_fields=["welcome_sent_at", "updated_at"])
    return True


def tool_urls(*, domain: str, tools: list[str]) -> dict[str, str]:
    """Each chosen tool's address on the customer's domain (the subdomain its nginx
    vhost answers), in the order the customer chose them."""
    urls = {}
    for name in tools:
        tool = catalog.TOOLS.get(name)
        if tool is not None and tool.subdomain:
            urls[name] = f"https://{tool.subdomain}.{domain}/"
    return urls


def welcome_body(order: Order) -> str:
    lines = [f"Welcome! Your AI stack on {order.domain} is up.", ""]
    urls = tool_urls(domain=order.domain, tools=list(order.tools))
    if urls:
        lines.append("Your tools:")
        lines += [f"  {name}: {url}" for name, url in urls.items()]
    else:
        lines.append("No tools chosen yet.")
    links = settings.APP_DOWNLOAD_LINKS
    if links:
        lines += ["", "Get the app:"]
        lines += [f"  {platform}: {url}" for platform, url in links.items()]
    return "\n".join(lines) + "\n"
