from typing import Any

from django.core.management.base import BaseCommand

from hub.pipeline.services import job_start


class Command(BaseCommand):
    help = "Start the demo pipeline and print the job's id."

    def handle(self, *args: Any, **options: Any) -> None:
        job = job_start(pipeline="hub.demo", subject_type="demo", actor="make demo")
        self.stdout.write(str(job.pk))
