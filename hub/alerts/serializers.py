"""The alerts API's shapes: the query it accepts, the alert it answers with."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from hub.alerts.models import Alert, AlertSeverity, AlertStatus
from hub.api.fields import StrictSerializer


class AlertQuerySerializer(StrictSerializer):
    """The list's filters; unknown parameters are refused (a typo must not silently
    widen the list). `page` belongs to the pagination."""

    status = serializers.ChoiceField(choices=AlertStatus.choices, required=False)
    severity = serializers.ChoiceField(choices=AlertSeverity.choices, required=False)
    kind = serializers.CharField(max_length=64, required=False)
    subject_type = serializers.CharField(max_length=50, required=False)
    subject_id = serializers.CharField(max_length=64, required=False)
    resolved_within_hours = serializers.IntegerField(
        min_value=0,
        max_value=24 * 366,
        required=False,
        help_text="how far back resolved alerts are listed (default ALERTS_API_RECENT_HOURS)",
    )
    page = serializers.IntegerField(min_value=1, required=False)

    def resolved_since(self) -> datetime:
        hours = self.validated_data.get("resolved_within_hours", settings.ALERTS_API_RECENT_HOURS)
        return timezone.now() - timedelta(hours=hours)


class AlertOutputSerializer(serializers.ModelSerializer):
    subject = serializers.SerializerMethodField(help_text='"<subject_type>:<subject_id>", e.g. "tenant:42"')
    opened_at = serializers.DateTimeField(source="first_seen_at")

    class Meta:
        model = Alert
        fields = [
            "id",
            "kind",
            "severity",
            "status",
            "subject",
            "subject_type",
            "subject_id",
            "message",
            "count",
            "opened_at",
            "last_seen_at",
            "resolved_at",
            "acknowledged_by",
            "acknowledged_at",
        ]
        read_only_fields = fields

    def get_subject(self, alert: Alert) -> str:
        return f"{alert.subject_type}:{alert.subject_id}"
