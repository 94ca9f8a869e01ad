"""Input serializers validate strictly (types, ranges, no unknown fields); output
serializers shape the answers."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from hub.api.fields import StrictBooleanField, StrictCharField, StrictFloatField, StrictIntegerField, StrictSerializer
from rollouts.models import OnHalt, Release, Rollout, RolloutStage, TenantUpdate
from rollouts.services import StageSpec, release_spec_errors, stage_spec_errors

# --- Releases ------------------------------------------------------------------------


class ReleaseInputSerializer(StrictSerializer):
    component = StrictCharField(max_length=64)
    version = StrictCharField(max_length=128)
    image = StrictCharField(max_length=400)
    notes = StrictCharField(max_length=20_000, required=False, allow_blank=True, default="")
    # What new tenants of the component get until a rollout of it completes; replaces
    # the component's current default.
    is_default = StrictBooleanField(required=False, default=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors = release_spec_errors(component=attrs["component"], version=attrs["version"], image=attrs["image"])
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class ReleaseOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Release
        fields = ["id", "component", "version", "image", "notes", "is_default", "created_by", "created_at"]


# --- Rollouts ------------------------------------------------------------------------


class StageInputSerializer(StrictSerializer):
    name = StrictCharField(max_length=32, required=False, allow_blank=True, default="")
    internal = StrictBooleanField(required=False, default=False)
    percent = StrictIntegerField(min_value=1, max_value=100, required=False, allow_null=True, default=None)
    soak_seconds = StrictIntegerField(min_value=0, max_value=60 * 86400)


class RolloutInputSerializer(StrictSerializer):
    """Either `release` (an id) or the release inline (`component`, `version`, `image`,
    `notes`), so CI can start a rollout with one POST (`"start": true`)."""

    release = StrictIntegerField(min_value=1, required=False)
    component = StrictCharField(max_length=64, required=False)
    version = StrictCharField(max_length=128, required=False)
    image = StrictCharField(max_length=400, required=False)
    notes = StrictCharField(max_length=20_000, required=False, allow_blank=True)
    stages = StageInputSerializer(many=True, required=False)
    auto_advance = StrictBooleanField(required=False)
    on_halt = serializers.ChoiceField(choices=OnHalt.choices, required=False)
    failure_rate = StrictFloatField(min_value=0.0001, max_value=1, required=False)
    min_failures = StrictIntegerField(min_value=1, max_value=1_000_000, required=False)
    min_finished = StrictIntegerField(min_value=1, max_value=1_000_000, required=False)
    heartbeat_loss_rate = StrictFloatField(min_value=0, max_value=1, required=False)
    update_timeout_seconds = StrictIntegerField(min_value=1, max_value=7 * 86400, required=False)
    stage_deadline_seconds = StrictIntegerField(min_value=1, max_value=60 * 86400, required=False)
    start = StrictBooleanField(required=False, default=False)
    dry_run = StrictBooleanField(required=False, default=False)

    RELEASE_FIELDS = ("component", "version", "image")

    def validate_stages(self, stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        errors = stage_spec_errors([StageSpec(**stage) for stage in stages])
        if errors:
            raise serializers.ValidationError(errors)
        return stages

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        inline = [name for name in (*self.RELEASE_FIELDS, "notes") if name in attrs]
        if "release" in attrs and inline:
            raise serializers.ValidationError("give either `release` or the release inline, not both")
        if "release" not in attrs:
            missing = [name for name in self.RELEASE_FIELDS if name not in attrs]
            if missing:
                raise serializers.ValidationError(f"`release`, or the release inline: missing {', '.join(missing)}")
            errors = release_spec_errors(component=attrs["component"], version=attrs["version"], image=attrs["image"])
            if errors:
                raise serializers.ValidationError(errors)
        if attrs.get("start") and attrs.get("dry_run"):
            raise serializers.ValidationError("a dry run starts nothing: drop `start` or `dry_run`")
        return attrs

    def service_options(self) -> dict[str, Any]:
        """The keyword arguments of `rollout_create`, besides the release."""
        data = self.validated_data
        options = {
            name: data[name]
            for name in (
                "auto_advance",
                "on_halt",
                "failure_rate",
                "min_failures",
                "min_finished",
                "heartbeat_loss_rate",
                "update_timeout_seconds",
                "stage_deadline_seconds",
            )
            if name in data
        }
        if "stages" in data:
            options["stages"] = [StageSpec(**stage) for stage in data["stages"]]
        return options

    def release_spec(self) -> dict[str, Any] | None:
        data = self.validated_data
        if "release" in data:
            return None
        return {name: data[name] for name in self.RELEASE_FIELDS} | {"notes": data.get("notes", "")}


class ReasonInputSerializer(StrictSerializer):
    reason = StrictCharField(max_length=2000, required=False, allow_blank=True, default="")


class StageOutputSerializer(serializers.ModelSerializer):
    counts = serializers.SerializerMethodField()

    class Meta:
        model = RolloutStage
        fields = [
            "position",
            "name",
            "internal",
            "percent",
            "soak_seconds",
            "status",
            "planned_size",
            "dispatched",
            "updates_unsent",
            "counts",
            "started_at",
            "updates_done_at",
            "awaiting_promote_since",
            "deadline_at",
            "finished_at",
            "gate",
            "gate_reason",
            "gate_at",
        ]

    def get_counts(self, stage: RolloutStage) -> dict[str, int] | None:
        counts = self.context.get("counts")
        return None if counts is None else counts.get(stage.pk, {})


class RolloutOutputSerializer(serializers.ModelSerializer):
    release = ReleaseOutputSerializer()
    stages = StageOutputSerializer(many=True)

    class Meta:
        model = Rollout
        fields = [
            "id",
            "release",
            "component",
            "target_version",
            "status",
            "status_reason",
            "auto_advance",
            "on_halt",
            "failure_rate",
            "min_failures",
            "min_finished",
            "heartbeat_loss_rate",
            "update_timeout_seconds",
            "stage_deadline_seconds",
            "population",
            "current_position",
            "created_by",
            "created_at",
            "started_at",
            "paused_at",
            "halted_at",
            "finished_at",
            "stages",
        ]


class FailingUpdateSerializer(serializers.ModelSerializer):
    domain = serializers.CharField(source="tenant.domain")
    stage = serializers.CharField(source="stage.name")

    class Meta:
        model = TenantUpdate
        fields = ["tenant", "domain", "stage", "status", "from_version", "to_version", "error", "rollback_error"]


class RolloutDetailOutputSerializer(RolloutOutputSerializer):
    failing = serializers.SerializerMethodField()

    class Meta(RolloutOutputSerializer.Meta):
        fields = [*RolloutOutputSerializer.Meta.fields, "failing"]

    def get_failing(self, rollout: Rollout) -> Any:
        return FailingUpdateSerializer(self.context.get("failing", []), many=True).data


class TenantUpdateOutputSerializer(serializers.ModelSerializer):
    stage = serializers.CharField(source="stage.name")

    class Meta:
        model = TenantUpdate
        fields = [
            "id",
            "tenant",
            "stage",
            "from_version",
            "to_version",
            "status",
            "command",
            "attempts",
            "sent_at",
            "finished_at",
            "error",
            "rollback_command",
            "rollback_sent_at",
            "rollback_finished_at",
            "rollback_error",
        ]


class StagePlanOutputSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    name = serializers.CharField()
    internal = serializers.BooleanField()
    percent = serializers.IntegerField(allow_null=True)
    soak_seconds = serializers.IntegerField()
    dispatched = serializers.BooleanField()
    size = serializers.SerializerMethodField()
    tenant_ids = serializers.ListField(child=serializers.IntegerField())

    def get_size(self, plan: Any) -> int:
        return len(plan.tenant_ids)


class RolloutPlanOutputSerializer(serializers.Serializer):
    rollout = serializers.IntegerField(allow_null=True)
    component = serializers.CharField()
    target_version = serializers.CharField()
    dry_run = serializers.BooleanField()
    stages = StagePlanOutputSerializer(many=True)
