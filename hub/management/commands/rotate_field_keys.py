"""Re-encrypt every secret at rest under the newest FIELD_ENCRYPTION_KEY, so an old key
can be retired: put the new key first, run this, then drop the old key."""

from typing import Any

from django.core.management.base import BaseCommand

from hub.crypto import encrypted_values_rotate


class Command(BaseCommand):
    help = "Re-encrypt every encrypted column under the first FIELD_ENCRYPTION_KEY."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, **options: Any) -> None:
        for label, count in encrypted_values_rotate(batch_size=options["batch_size"]).items():
            self.stdout.write(f"{label}: {count} values re-encrypted")
