from rest_framework import serializers

from hub.pipeline.models import Job, Step, StopReason


class StepOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Step
        fields = [
            "position",
            "name",
            "kind",
            "status",
            "attempts",
            "max_attempts",
            "error",
            "started_at",
            "finished_at",
            "duration_seconds",
            "next_run_at",
        ]
        read_only_fields = fields


class JobOutputSerializer(serializers.ModelSerializer):
    steps = StepOutputSerializer(many=True, read_only=True)
    stop_reason = serializers.ChoiceField(choices=StopReason.choices, allow_blank=True, read_only=True)

    class Meta:
        model = Job
        fields = [
            "id",
            "pipeline",
            "status",
            "subject_type",
            "subject_id",
            "error",
            "stop_reason",
            "created_at",
            "started_at",
            "finished_at",
            "deadline_at",
            "steps",
        ]
        read_only_fields = fields
