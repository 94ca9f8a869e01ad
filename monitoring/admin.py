"""The monitoring records: each check's last run, the Hub's presence, its backups."""

from __future__ import annotations

from django.contrib import admin

from hub.admin_actions import ReadOnlyAdmin
from monitoring.models import CheckRun, HubBackup, HubPresence


@admin.register(CheckRun)
class CheckRunAdmin(ReadOnlyAdmin):
    list_display = ("name", "last_outcome", "last_started_at", "last_duration_ms", "runs", "last_error")


@admin.register(HubPresence)
class HubPresenceAdmin(ReadOnlyAdmin):
    list_display = ("beat_seen_at", "intake_seen_at", "resumed_at", "outage_reason")


@admin.register(HubBackup)
class HubBackupAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "status", "path", "size_bytes", "uploaded", "finished_at", "error")
    list_filter = ("status",)
