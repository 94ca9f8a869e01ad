from __future__ import annotations

from django.contrib import admin

from hub.admin_actions import ReadOnlyAdmin
from hub.notices.models import CustomerNotice


@admin.register(CustomerNotice)
class CustomerNoticeAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "subject_type", "subject_id", "recipient", "status", "created_at", "sent_at")
    list_filter = ("kind", "status")
    search_fields = ("recipient", "subject_id", "dedup_key")
