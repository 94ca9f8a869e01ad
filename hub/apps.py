from django.apps import AppConfig


class HubConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "hub"
    verbose_name = "Hub core"

    def ready(self) -> None:
        from hub import checks  # noqa: F401 - registers the system checks
        from hub.admin import admin_log_audit_install
        from hub.api import schema  # noqa: F401 - registers the OpenAPI extensions
        from hub.pipeline import registry

        registry.autodiscover()
        admin_log_audit_install()
