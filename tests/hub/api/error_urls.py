"""The Hub's URLs plus two test-only routes: one under /api/ and one outside it whose
views raise, to prove what handler500 answers in each place."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from hub.urls import handler400, handler403, handler404, handler500
from hub.urls import urlpatterns as hub_urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


def explode(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret detail that must not reach the client")


urlpatterns = [
    path("api/v1/test-only/explode/", explode),
    path("test-only/explode/", explode),
    *hub_urlpatterns,
]
