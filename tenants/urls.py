from django.urls import path

from tenants import apis

# Ids are matched as strings and checked by the views, so a malformed one gets the
# JSON 404 every API error has rather than the HTML page of the URL resolver.
urlpatterns = [
    path("agent/register", apis.AgentRegisterApi.as_view(), name="agent-register"),
    path("agent/heartbeat", apis.AgentHeartbeatApi.as_view(), name="agent-heartbeat"),
    path("agent/backups", apis.AgentBackupReportApi.as_view(), name="agent-backups"),
    path("agent/usage", apis.AgentUsageReportApi.as_view(), name="agent-usage"),
    path("agent/rotate-key", apis.AgentKeyRotateApi.as_view(), name="agent-rotate-key"),
    path("agent/commands/<str:pk>/result", apis.AgentCommandResultApi.as_view(), name="agent-command-result"),
    path("tenants/", apis.TenantListApi.as_view(), name="tenant-list"),
    path("tenants/<str:pk>/", apis.TenantDetailApi.as_view(), name="tenant-detail"),
    path("tenants/<str:pk>/history/", apis.TenantHistoryApi.as_view(), name="tenant-history"),
    path("tenants/<str:pk>/commands/", apis.TenantCommandListApi.as_view(), name="tenant-commands"),
    path(
        "tenants/<str:pk>/registration-token/",
        apis.TenantRegistrationTokenApi.as_view(),
        name="tenant-registration-token",
    ),
    path("tenants/<str:pk>/revoke-keys/", apis.TenantKeysRevokeApi.as_view(), name="tenant-revoke-keys"),
]
