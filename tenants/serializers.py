"""Input serializers validate strictly (types, ranges, sizes, no unknown fields);
output serializers shape the answers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from hub.api.fields import (
    BoundedDateTimeField,
    FieldsBuiltOnce,
    JSONObjectField,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
    StrictUUIDField,
)
from tenants.command_payloads import NAME_RE, command_payload_errors
from tenants.models import BackupReport, Command, CommandType, Tenant, UsageReport

MAX_CONTAINERS = 500
MAX_VERSIONS = 200
MAX_DATABASES = 200
MAX_OUTPUT_CHARS = 32_768


class ContainerSerializer(StrictSerializer):
    """Schema of one container in a heartbeat (validated by ContainersField)."""

    name = StrictCharField(min_length=1, max_length=128)
    state = StrictCharField(max_length=32)
    health = StrictCharField(max_length=32, allow_null=True, required=False)


@extend_schema_field(ContainerSerializer(many=True))
class ContainersField(serializers.Field):
    """The heartbeat's container list, validated by hand: a nested serializer per
    container would cost more than the rest of the heartbeat together."""

    default_error_messages = {
        "invalid": "Expected a list of objects with 'name', 'state' and optional 'health' strings.",
        "too_many": f"At most {MAX_CONTAINERS} containers.",
    }
    _keys = frozenset({"name", "state", "health"})
    _limits = {"name": 128, "state": 32, "health": 32}

    def to_internal_value(self, data: Any) -> list[dict[str, Any]]:
        if not isinstance(data, list):
            self.fail("invalid")
        if len(data) > MAX_CONTAINERS:
            self.fail("too_many")
        containers = []
        for item in data:
            if not isinstance(item, dict) or not item.keys() <= self._keys:
                self.fail("invalid")
            name, state, health = item.get("name"), item.get("state"), item.get("health")
            if (
                not isinstance(name, str)
                or not isinstance(state, str)
                or not (health is None or isinstance(health, str))
            ):
                self.fail("invalid")
            if not name or len(name) > 128 or len(state) > 32 or (health is not None and len(health) > 32):
                self.fail("invalid")
            containers.append({"name": name, "state": state, "health": health})
        return containers

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(
    {
        "type": "object",
        "maxProperties": MAX_VERSIONS,
        "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 128},
    }
)
class VersionsField(serializers.Field):
    """component name -> version string."""

    default_error_messages = {"invalid": "Expected an object of component name -> version string."}

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict) or len(data) > MAX_VERSIONS:
            self.fail("invalid")
        for component, version in data.items():
            if not NAME_RE.match(component) or not isinstance(version, str) or not 0 < len(version) <= 128:
                self.fail("invalid")
        return data

    def to_representation(self, value: Any) -> Any:
        return value


# --- Agent endpoints -----------------------------------------------------------------


class RegisterInputSerializer(StrictSerializer):
    """The agent's one-time registration."""

    registration_token = StrictCharField(min_length=1, max_length=128)
    hostname = StrictCharField(min_length=1, max_length=253)
    agent_version = StrictCharField(min_length=1, max_length=64)


class RegisterOutputSerializer(serializers.Serializer):
    tenant_id = serializers.IntegerField()
    api_key = serializers.CharField()
    heartbeat_interval = serializers.IntegerField()


class HeartbeatInputSerializer(FieldsBuiltOnce, StrictSerializer):
    """The agent's health readings, every heartbeat interval."""

    disk_percent = StrictFloatField(min_value=0, max_value=100)
    memory_percent = StrictFloatField(min_value=0, max_value=100)
    load = StrictFloatField(min_value=0, max_value=100_000)
    uptime_seconds = StrictIntegerField(min_value=0, max_value=10**10)
    containers = ContainersField(required=False, default=list)
    versions = VersionsField(required=False, default=dict)
    tls_expires_at = BoundedDateTimeField(required=False, allow_null=True, default=None)

    # (name, upper bound) of the readings that are numbers from 0 up; uptime is an int.
    _readings = (("disk_percent", 100), ("memory_percent", 100), ("load", 100_000))
    _max_uptime = 10**10
    _quick: ClassVar[HeartbeatInputSerializer]

    @classmethod
    def validated(cls, data: Any) -> dict[str, Any]:
        """`data` validated, raising DRF's ValidationError as `is_valid(raise_exception=True)`
        would. A heartbeat the quick check accepts costs no serializer instance of its
        own (DRF's set-up of one costs about 0.04 ms of CPU, some 5% of a heartbeat)."""
        if "_quick" not in cls.__dict__:
            cls._quick = cls()
        quick = cls.__dict__["_quick"]._validated_quickly(data)
        if quick is not None:
            return quick
        serializer = cls(data=data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def run_validation(self, data: Any = empty) -> Any:
        # The heartbeat is the hot path of the Hub: a well-formed one is checked here,
        # by the same rules as the fields above and in a fraction of the time. Anything
        # this does not accept goes through DRF, which decides and words the error.
        validated = self._validated_quickly(data)
        return super().run_validation(data) if validated is None else validated

    def _validated_quickly(self, data: Any) -> dict[str, Any] | None:
        """What DRF would validate `data` to, or None to leave the decision to DRF."""
        if type(data) is not dict or not data.keys() <= self._declared_fields.keys():
            return None
        validated: dict[str, Any] = {}
        for name, upper in self._readings:
            value = data.get(name)
            # type() rather than isinstance(): a boolean is no number here.
            if (type(value) is not float and type(value) is not int) or not 0 <= value <= upper:
                return None
            validated[name] = float(value)
        uptime = data.get("uptime_seconds")
        if type(uptime) is not int or not 0 <= uptime <= self._max_uptime:
            return None
        validated["uptime_seconds"] = uptime
        fields = self.fields
        try:
            validated["containers"] = (
                fields["containers"].to_internal_value(data["containers"]) if "containers" in data else []
            )
            validated["versions"] = fields["versions"].to_internal_value(data["versions"]) if "versions" in data else {}
        except serializers.ValidationError:
            return None
        tls = data.get("tls_expires_at")
        if tls is None:
            validated["tls_expires_at"] = None
        else:
            # DRF parses with fromisoformat too, then converts through the current
            # time zone, which costs more than the rest; a naive moment is left to it.
            try:
                moment = datetime.fromisoformat(tls) if type(tls) is str else None
                if moment is None or moment.tzinfo is None:
                    return None
                moment = moment.astimezone(UTC)
            except (ValueError, OverflowError):
                return None
            if not 2000 <= moment.year <= 2200:
                return None
            validated["tls_expires_at"] = moment
        return validated


class CommandDeliverySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    type = serializers.ChoiceField(choices=CommandType.choices)
    payload = JSONObjectField()


class HeartbeatOutputSerializer(FieldsBuiltOnce, serializers.Serializer):
    """When to heartbeat next, and the commands to run (each executed once, by id)."""

    heartbeat_interval = serializers.IntegerField()
    commands = CommandDeliverySerializer(many=True)


class BackupDatabaseSerializer(StrictSerializer):
    """One database in backup-status.json."""

    status = serializers.ChoiceField(choices=["success", "failed", "skipped"])
    size_mb = StrictFloatField(min_value=0, max_value=10**9, required=False)
    error = StrictCharField(max_length=2000, required=False, allow_blank=True)


class RemoteSyncSerializer(StrictSerializer):
    """The off-site copy in backup-status.json."""

    status = serializers.ChoiceField(choices=["success", "failed", "skipped"])
    uploaded_mb = StrictFloatField(min_value=0, max_value=10**9, required=False)
    error = StrictCharField(max_length=2000, required=False, allow_blank=True)


class BackupReportInputSerializer(StrictSerializer):
    """The tenant's backup-status.json plus the agent's report_id."""

    report_id = StrictUUIDField()
    last_run = BoundedDateTimeField()
    duration_seconds = StrictIntegerField(min_value=0, max_value=7 * 86400)
    databases = serializers.DictField(child=BackupDatabaseSerializer())
    remote_sync = RemoteSyncSerializer(required=False, allow_null=True, default=None)

    def validate_databases(self, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > MAX_DATABASES:
            raise serializers.ValidationError(f"At most {MAX_DATABASES} databases.")
        bad = [name for name in value if not NAME_RE.match(name)]
        if bad:
            raise serializers.ValidationError(f"Invalid database name(s): {', '.join(b[:64] for b in bad[:5])}")
        return value


class BackupReportOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = BackupReport
        fields = ["report_id", "received_at", "last_run", "duration_seconds", "databases", "remote_sync", "outcome"]
        read_only_fields = fields


class UsageReportInputSerializer(StrictSerializer):
    """AI token usage of one billing period, stored once per report_id."""

    report_id = StrictUUIDField()
    period = serializers.RegexField(re.compile(r"^\d{4}-(0[1-9]|1[0-2])$"), max_length=7)
    tokens = StrictIntegerField(min_value=0, max_value=10**15)


class UsageReportOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = UsageReport
        fields = ["report_id", "period", "tokens", "received_at"]
        read_only_fields = fields


class CommandResultInputSerializer(StrictSerializer):
    """The outcome of one command."""

    status = serializers.ChoiceField(choices=["succeeded", "failed"])
    output = StrictCharField(max_length=MAX_OUTPUT_CHARS, allow_blank=True, trim_whitespace=False)
    version = StrictCharField(max_length=128, required=False)
    rolled_back = StrictBooleanField(required=False)
    details = JSONObjectField(required=False)


class KeyRotateOutputSerializer(serializers.Serializer):
    api_key = serializers.CharField()
    old_keys_expire_at = serializers.DateTimeField()


# --- Staff endpoints -----------------------------------------------------------------


class TenantOutputSerializer(serializers.ModelSerializer):
    containers = ContainerSerializer(many=True, read_only=True)

    class Meta:
        model = Tenant
        fields = [
            "id",
            "domain",
            "status",
            "server",
            "plan",
            "region",
            "is_internal",
            "created_at",
            "registered_at",
            "agent_hostname",
            "agent_version",
            "heartbeat_interval",
            "last_heartbeat_at",
            "versions",
            "disk_percent",
            "memory_percent",
            "load",
            "uptime_seconds",
            "containers",
            "tls_expires_at",
        ]
        read_only_fields = fields


class CommandOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Command
        fields = [
            "id",
            "tenant",
            "type",
            "payload",
            "status",
            "created_by",
            "created_at",
            "expires_at",
            "delivered_at",
            "delivery_count",
            "finished_at",
            "result",
        ]
        read_only_fields = fields


class CommandQueueInputSerializer(StrictSerializer):
    """A command for the tenant's agent, delivered with its next heartbeat."""

    type = serializers.ChoiceField(choices=CommandType.choices)
    payload = JSONObjectField(required=False, default=dict)
    ttl_seconds = StrictIntegerField(min_value=10, max_value=30 * 86400, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors = command_payload_errors(type=attrs["type"], payload=attrs["payload"])
        if errors:
            raise serializers.ValidationError({"payload": errors})
        return attrs


class RegistrationTokenInputSerializer(StrictSerializer):
    """How long the token lives (default AGENT_REGISTRATION_TOKEN_TTL)."""

    ttl_seconds = StrictIntegerField(min_value=60, max_value=7 * 86400, required=False)


class RegistrationTokenOutputSerializer(serializers.Serializer):
    registration_token = serializers.CharField()
    expires_at = serializers.DateTimeField()


class KeysRevokeOutputSerializer(serializers.Serializer):
    revoked = serializers.IntegerField()


class HistoryQuerySerializer(StrictSerializer):
    """The span of a tenant's history to read (ISO 8601); the last 24 hours by default."""

    since = BoundedDateTimeField(required=False)
    until = BoundedDateTimeField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        until = attrs.get("until") or timezone.now()
        since = attrs.get("since") or until - timedelta(hours=24)
        if since >= until:
            raise serializers.ValidationError({"since": ["Must be before until."]})
        return {"since": since, "until": until}


class HistoryPointSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    seconds = serializers.IntegerField(help_text="the bucket's width: 300 (5 minutes) or 3600 (an hour)")
    samples = serializers.IntegerField()
    disk_avg = serializers.FloatField()
    disk_max = serializers.FloatField()
    memory_avg = serializers.FloatField()
    memory_max = serializers.FloatField()
    load_avg = serializers.FloatField()
    load_max = serializers.FloatField()
    uptime_min = serializers.IntegerField()


class HistoryOutputSerializer(serializers.Serializer):
    tenant = serializers.IntegerField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    points = HistoryPointSerializer(many=True)
