"""The API.md error body for DRF's exceptions."""

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

_CODES = {
    400: "invalid_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "invalid_request",
    409: "conflict",
    415: "invalid_request",
    422: "validation_failed",
    429: "throttled",
}


def error(status_code, message, details=None, headers=None):
    body = {"code": _CODES.get(status_code, "error"), "message": message}
    if details:
        body["details"] = details
    return Response({"error": body}, status=status_code, headers=headers)


def api_exception_handler(exc, context):
    response = exception_handler(exc, context)
    if response is None:
        return None
    code = response.status_code
    if isinstance(exc, exceptions.NotAuthenticated):
        code = status.HTTP_401_UNAUTHORIZED
    headers = {k: v for k, v in response.items() if k in ("Retry-After", "WWW-Authenticate")}
    if isinstance(exc, exceptions.Throttled):
        headers["Retry-After"] = str(int(exc.wait or 1))
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    return error(code, str(detail) if not isinstance(detail, (dict, list)) else "invalid request",
                 detail if isinstance(detail, dict) else None, headers)
