from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "rollouts"

    def ready(self) -> None:
        from hub.freeze import fleet_freeze_listen
        from hub.releases import current_releases_answered_by
        from rollouts.selectors import current_release_pins
        from rollouts.services.freeze import rollouts_on_freeze_change

        current_releases_answered_by(current_release_pins)
        fleet_freeze_listen(rollouts_on_freeze_change)
