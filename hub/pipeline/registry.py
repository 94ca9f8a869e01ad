"""Pipelines by name. Apps declare theirs in a `pipelines` module, found at start-up."""

from importlib import import_module
from importlib.util import find_spec

from django.apps import apps
from django.conf import settings

from hub.pipeline.spec import Pipeline

_pipelines: dict[str, Pipeline] = {}


def register(pipeline: Pipeline) -> Pipeline:
    existing = _pipelines.get(pipeline.name)
    if existing is not None and existing is not pipeline:
        raise ValueError(f"pipeline {pipeline.name!r} is registered twice")
    _pipelines[pipeline.name] = pipeline
    return pipeline


def get(name: str) -> Pipeline:
    try:
        return _pipelines[name]
    except KeyError:
        raise LookupError(f"unknown pipeline {name!r}") from None


def names() -> list[str]:
    return sorted(_pipelines)


def autodiscover() -> None:
    for app_config in apps.get_app_configs():
        module = f"{app_config.name}.pipelines"
        if find_spec(module) is not None:
            import_module(module)
    for module in settings.PIPELINE_MODULES:
        import_module(module)
