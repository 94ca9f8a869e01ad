"""The error shape every endpoint answers with: `{"error": code, "detail": ...}`, under
/api/ whatever failed and wherever (DRF's handler, Django's handlers, a middleware)."""

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from hub.errors import DomainError
from hub.middleware import SyncAndAsyncMiddleware


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error is JSON with an `error` code and a `detail`; domain errors from the
    services answer with their own status (409 for a legal request the current state
    refuses, 404 for an object that does not exist), never a 500."""
    if isinstance(exc, DomainError):
        return Response({"error": exc.code, "detail": str(exc)}, status=exc.http_status)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=exc.messages)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"error": "invalid", "detail": response.data}
    elif isinstance(exc, Http404 | exceptions.NotFound):
        response.data = {"error": "not_found", "detail": "Not found."}
    elif isinstance(exc, exceptions.APIException):
        response.data = {"error": exc.default_code, "detail": response.data.get("detail", response.data)}
    return response


class ApiErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="a code")
    detail = serializers.JSONField(help_text="what is wrong")


# --- Outside DRF: every answer under /api/ is JSON, whatever failed ---------------------
# DRF's exception handler shapes the errors a view raises. These cover what never
# reaches a view or escapes it: a body too large for Django (RequestDataTooBig, which
# Django answers 400 with an HTML page), a URL no route matches, a method a plain
# Django view refuses, and an unhandled exception (handler500). HTML stays HTML
# everywhere else (the admin, /metrics).

API_PREFIX = "/api/"

_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "throttled",
    500: "server_error",
}


def is_api_request(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


def json_error(status: int, detail: str, *, code: str | None = None) -> JsonResponse:
    return JsonResponse({"error": code or _CODES.get(status, "error"), "detail": detail}, status=status)


def _body_too_large(request: HttpRequest) -> JsonResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return json_error(413, f"the request body is larger than {limit} bytes")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: Django's answer to a SuspiciousOperation, a too large body included."""
    if not is_api_request(request):
        return defaults.bad_request(request, exception)  # type: ignore[arg-type]
    if isinstance(exception, RequestDataTooBig):
        return _body_too_large(request)
    return json_error(400, "the request could not be read")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not is_api_request(request):
        return defaults.permission_denied(request, exception)  # type: ignore[arg-type]
    return json_error(403, "You do not have permission to perform this action.")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not is_api_request(request):
        return defaults.page_not_found(request, exception)
    return json_error(404, "Not found.")


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: nothing of the exception is told (it is logged, with its traceback)."""
    if not is_api_request(request):
        return defaults.server_error(request)
    return json_error(500, "The server failed to answer this request; it has been logged.")


class ApiJsonErrorsMiddleware(SyncAndAsyncMiddleware):
    """Under /api/: refuses a body larger than DATA_UPLOAD_MAX_MEMORY_SIZE with 413
    before any view reads it (DRF streams a body and would not be stopped by Django's
    own limit), and turns any error answer that is not JSON (a plain Django 405, a
    404 raised before routing) into the `{"error", "detail"}` shape. Elsewhere it
    does nothing."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        if not is_api_request(request):
            return self.get_response(request)
        refused = _refused_before_the_view(request)
        return refused or _json_if_error(self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if not is_api_request(request):
            return await self.get_response(request)
        refused = _refused_before_the_view(request)
        return refused or _json_if_error(await self.get_response(request))


def _refused_before_the_view(request: HttpRequest) -> HttpResponse | None:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return json_error(400, "the Content-Length header is not a number")
    if limit is not None and length > limit:
        return _body_too_large(request)
    return None


def _json_if_error(response: HttpResponse) -> HttpResponse:
    if response.status_code >= 400 and not _is_json(response):
        return _as_json(response)
    return response


def _is_json(response: HttpResponse) -> bool:
    content_type = response.get("Content-Type", "")
    return content_type.startswith("application/json") or content_type.startswith("application/problem+json")


def _as_json(response: HttpResponse) -> HttpResponse:
    status = response.status_code
    detail = response.reason_phrase or "error"
    converted = json_error(status, f"{detail}.")
    for header in ("Allow", "Retry-After", "WWW-Authenticate"):
        if header in response:
            converted[header] = response[header]
    return converted
