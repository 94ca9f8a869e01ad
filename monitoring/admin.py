"""The monitoring records: each check's last run, the Hub's presence, its backups."""

from __future__ import annotations

from django.contrib import admin

from hub.admin_actions import ReadOnlyAdmin
from monitoring.models import CheckRun, HubBackup, HubPresence, RestoreDrill


@admin.register(CheckRun)
class CheckRunAdmin(ReadOnlyAdmin):
    list_display = ("name", "last_outcome", "last_started_at", "last_duration_ms", "runs", "last_error")


@admin.register(HubPresence)
class HubPresenceAdmin(ReadOnlyAdmin):
    list_display = ("beat_seen_at", "intake_seen_at", "resumed_at", "outage_reason")


@admin.register(HubBackup)
class HubBackupAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "status", "path", "keys_path", "size_bytes", "uploaded", "finished_at", "error")
    list_filter = ("status",)


@admin.register(RestoreDrill)
class RestoreDrillAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "outcome", "backup_id", "backup_time", "files_restored", "started_at")
    list_filter = ("outcome",)
    search_fields = ("=tenant__id", "tenant__domain", "backup_id")
    list_select_related = ("tenant",)
