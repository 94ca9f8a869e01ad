from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "rollouts"

    def ready(self) -> None:
        from hub.releases import current_releases_answered_by
        from rollouts.selectors import current_release_pins

        current_releases_answered_by(current_release_pins)
