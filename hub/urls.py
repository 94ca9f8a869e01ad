from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView

from hub import views

api_v1: list[URLPattern | URLResolver] = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("", include("hub.api_urls")),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("", include("ops.urls")),
]

# JSON under /api/, Django's own pages elsewhere (hub.api.errors).
handler400 = "hub.api.errors.bad_request"
handler403 = "hub.api.errors.permission_denied"
handler404 = "hub.api.errors.page_not_found"
handler500 = "hub.api.errors.server_error"
