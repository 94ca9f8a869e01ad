from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView

from hub import views
from hub.api_urls import routes_of

# The API first, and its routes in place: see hub.api_urls.
api_v1: list[URLPattern | URLResolver] = [
    *routes_of("hub.api_urls"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("", include("ops.urls")),
]

# JSON under /api/, Django's own pages elsewhere (hub.api.errors).
handler400 = "hub.api.errors.bad_request"
handler403 = "hub.api.errors.permission_denied"
handler404 = "hub.api.errors.page_not_found"
handler500 = "hub.api.errors.server_error"
