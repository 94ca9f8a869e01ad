from django.apps import AppConfig


class OpsConfig(AppConfig):
    """The top floor: the operator's views over every app (dashboard, /metrics) and the
    commands a person types (demo, sandbox, fleet simulation). Nothing imports it."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "ops"
    verbose_name = "Operations"
