"""The API's input toolkit, shared by every app: a serializer that refuses unknown
fields, and fields that take only the JSON type they name (DRF would turn a boolean
into 1, or a number into a string)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, instead of silently dropping them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(name)[:64] for name in set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown[:20]})
        return super().to_internal_value(data)


class FieldsBuiltOnce:
    """DRF deep-copies every declared field for every serializer instance, which costs
    the heartbeat more than validating it. A serializer with this mixin builds its
    fields once per process and shares them: only for serializers whose fields keep no
    per-request state and use neither `context` nor `instance` (they stay bound to the
    first instance)."""

    _fields_built_once: Any

    @property
    def fields(self) -> Any:
        cls = type(self)
        if "_fields_built_once" not in cls.__dict__:
            cls._fields_built_once = super().fields  # type: ignore[misc]
        return cls.__dict__["_fields_built_once"]


class StrictCharField(serializers.CharField):
    """A string, not a number or a boolean turned into one."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictUUIDField(serializers.UUIDField):
    """A UUID string (DRF would also take an integer, or a boolean as 0 or 1)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid", value=str(data)[:64])
        return super().to_internal_value(data)


class BoundedDateTimeField(serializers.DateTimeField):
    """An ISO 8601 moment between 2000 and 2200 (anything else is a broken clock)."""

    default_error_messages = {"range": "Datetime out of range (2000-2200)."}

    def to_internal_value(self, value: Any) -> Any:
        if not isinstance(value, str):
            self.fail("invalid", format="ISO 8601")
        try:
            moment = super().to_internal_value(value)
        except (OverflowError, ValueError):
            self.fail("range")
        if not 2000 <= moment.year <= 2200:
            self.fail("range")
        return moment


@extend_schema_field(OpenApiTypes.OBJECT)
class JSONObjectField(serializers.Field):
    """Any JSON object (the parser already bounded its size and content)."""

    default_error_messages = {"invalid": "Expected a JSON object."}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("invalid")
        return data

    def to_representation(self, value: Any) -> Any:
        return value
