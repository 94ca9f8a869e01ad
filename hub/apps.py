from django.apps import AppConfig


class HubConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "hub"
    verbose_name = "Hub core"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from hub import checks  # noqa: F401 - registers the system checks
        from hub.admin import admin_log_audit_install
        from hub.api import schema  # noqa: F401 - registers the OpenAPI extensions
        from hub.pipeline import registry
        from hub.selfwatch.database import install_on

        registry.autodiscover()
        connection_created.connect(install_on, dispatch_uid="hub.selfwatch.database")
        admin_log_audit_install()
