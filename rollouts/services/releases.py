"""Releases: one deployable version of one component, pinned by digest."""

from __future__ import annotations

import re

from django.db import transaction

from hub.audit import audit_record
from hub.db.locks import xact_lock
from hub.errors import DomainError, NotFound
from rollouts.models import (
    Release,
)
from tenants.command_payloads import NAME_RE, VERSION_RE

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
def release_create(
    *, component: str, version: str, image: str, notes: str = "", is_default: bool = False, actor: str
) -> Release:
    errors = release_spec_errors(component=component, version=version, image=image)
    if errors:
        raise DomainError("; ".join(errors), code="invalid_release")
    if Release.objects.filter(component=component, version=version).exists():
        raise DomainError(f"release {component} {version} exists already", code="release_exists")
    previous = _default_unset(component=component, actor=actor) if is_default else None
    release = Release.objects.create(
        component=component, version=version, image=image, notes=notes, is_default=is_default, created_by=actor
    )
    audit_record(
        actor=actor,
        action="release.create",
        object_type="release",
        object_id=release.pk,
        new={"component": component, "version": version, "image": image, "is_default": is_default},
        reason=f"replaces {previous.version} as the default" if previous else "",
    )
    return release


def _default_unset(*, component: str, actor: str) -> Release | None:
    """Clear the component's default under a lock on the component, so two staff
    marking defaults at once end with one (the database allows one per component)."""
    xact_lock(f"release.default:{component}")
    current = Release.objects.select_for_update().filter(component=component, is_default=True).first()
    if current is None:
        return None
    current.is_default = False
    current.save(update_fields=["is_default"])
    audit_record(
        actor=actor, action="release.default", object_type="release", object_id=current.pk, old=True, new=False
    )
    return current


@transaction.atomic
def release_mark_default(*, release_id: int, actor: str) -> Release:
    """Make the release what new tenants of its component get while no rollout of the
    component has COMPLETED (a completed rollout's release wins over the default)."""
    release = Release.objects.select_for_update().filter(pk=release_id).first()
    if release is None:
        raise NotFound(f"release {release_id} does not exist")
    if release.is_default:
        return release
    _default_unset(component=release.component, actor=actor)
    release.is_default = True
    release.save(update_fields=["is_default"])
    audit_record(
        actor=actor, action="release.default", object_type="release", object_id=release.pk, old=False, new=True
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
