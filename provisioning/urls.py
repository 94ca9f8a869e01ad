from django.urls import path

from provisioning import apis

urlpatterns = [
    path("orders/", apis.OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<int:pk>/", apis.OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<int:pk>/retry/", apis.OrderRetryApi.as_view(), name="order-retry"),
    path("orders/<int:pk>/cancel/", apis.OrderCancelApi.as_view(), name="order-cancel"),
    path("servers/", apis.ServerListCreateApi.as_view(), name="server-list"),
    path("tenants/<str:pk>/backup/", apis.TenantBackupApi.as_view(), name="tenant-backup"),
    path("tenants/<str:pk>/recover/", apis.TenantRecoverApi.as_view(), name="tenant-recover"),
    path("tenants/<str:pk>/migrate/", apis.TenantMigrateApi.as_view(), name="tenant-migrate"),
    path("agent/acme-challenge", apis.AgentAcmeChallengeApi.as_view(), name="agent-acme-challenge"),
]
