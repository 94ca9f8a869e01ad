"""Reads of jobs and their steps, shared by the API and the admin's timelines."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from hub.pipeline.models import Job, Step


def steps_in_order() -> QuerySet[Step]:
    """Steps as a timeline shows them: by position, with what a compensation undoes."""
    return Step.objects.select_related("compensates").order_by("position")


def step_timeline(*, job_id: int | None) -> QuerySet[Step]:
    """One job's steps, in order (none for no job)."""
    return steps_in_order().filter(job_id=job_id) if job_id is not None else Step.objects.none()


def jobs_with_steps() -> QuerySet[Job]:
    """Jobs with their steps in order, in two queries for a whole page."""
    return Job.objects.prefetch_related(Prefetch("steps", queryset=steps_in_order()))
