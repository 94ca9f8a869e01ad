"""Which release of a component a new tenant gets.

Rollouts owns releases and rollouts; provisioning installs them. The two stand on the
same floor and never import each other, so provisioning asks here, on the floor below,
and the rollouts app answers: it registers its answer when it starts
(rollouts.apps.RolloutsConfig.ready), as every app registers its pipelines. The answer
is plain values, so nothing of the rollouts app's models leaks into provisioning."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class CurrentRelease:
    component: str
    version: str
    # The image reference, pinned by digest (…@sha256:…).
    image: str


CurrentReleases = Callable[[Collection[str]], Mapping[str, CurrentRelease]]

_source: CurrentReleases | None = None


def current_releases_answered_by(source: CurrentReleases) -> None:
    global _source
    _source = source


def current_releases(components: Collection[str]) -> Mapping[str, CurrentRelease]:
    """component -> its current release; a component that has none is absent."""
    if _source is None:
        raise ImproperlyConfigured("no app answers which release is current (is rollouts installed?)")
    return _source(components)
