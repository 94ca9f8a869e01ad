"""Releases: one deployable version of one component, pinned by digest."""

from __future__ import annotations

import re

from django.db import transaction

from hub.audit import audit_record
from hub.errors import DomainError
from rollouts.models import (
    Release,
)
from tenants.commands import NAME_RE, VERSION_RE

# repository[:tag]@sha256:<64 hex>: a release is pinned by digest, never by tag alone.
IMAGE_RE = re.compile(r"^[a-z0-9][A-Za-z0-9._/:-]{0,250}@sha256:[0-9a-f]{64}$")


def release_spec_errors(*, component: str, version: str, image: str) -> list[str]:
    errors = []
    if not NAME_RE.match(component):
        errors.append("component must be a name (letters, digits, . _ -)")
    if not VERSION_RE.match(version):
        errors.append("version must be a version string (letters, digits, . _ + : -)")
    if not IMAGE_RE.match(image):
        errors.append("image must be pinned by digest: repository[:tag]@sha256:<64 hex digits>")
    return errors


@transaction.atomic
def release_create(*, component: str, version: str, image: str, notes: str = "", actor: str) -> Release:
    errors = release_spec_errors(component=component, version=version, image=image)
    if errors:
        raise DomainError("; ".join(errors), code="invalid_release")
    if Release.objects.filter(component=component, version=version).exists():
        raise DomainError(f"release {component} {version} exists already", code="release_exists")
    release = Release.objects.create(component=component, version=version, image=image, notes=notes, created_by=actor)
    audit_record(
        actor=actor,
        action="release.create",
        object_type="release",
        object_id=release.pk,
        new={"component": component, "version": version, "image": image},
    )
    return release


@transaction.atomic
def release_get_or_create(*, component: str, version: str, image: str, notes: str = "", actor: str) -> Release:
    """The release CI names inline: the same component, version and image is the same
    release; the same version with another image is refused (a digest is immutable)."""
    existing = Release.objects.filter(component=component, version=version).first()
    if existing is None:
        return release_create(component=component, version=version, image=image, notes=notes, actor=actor)
    if existing.image != image:
        raise DomainError(
            f"release {component} {version} exists with image {existing.image}; a version is never re-pinned",
            code="release_conflict",
        )
    return existing
