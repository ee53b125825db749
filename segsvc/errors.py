"""The one error contract: every error leaves the service as RFC 9457 problem+json.

Domain code raises `ServiceError` subclasses; HTTP-level errors (unknown route, 405, 413, ...)
and unexpected exceptions are translated here, so no view builds an error response itself.
"""

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import psycopg2
import psycopg2.errors
from flask import Flask, Response
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from .request_log import current_request_id

PROBLEM_MIMETYPE = "application/problem+json"

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with a stable machine-readable `code`, answered as problem+json."""

    status = 500
    code = "internal_error"
    title = "Internal server error"
    headers: ClassVar[Mapping[str, str]] = {}  # added to the response, e.g. WWW-Authenticate

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class MalformedJson(ServiceError):
    status, code, title = 400, "malformed_json", "Malformed JSON"


class UnsupportedMediaType(ServiceError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class InputInvalid(ServiceError):
    status, code, title = 422, "validation_failed", "Validation failed"

    def __init__(self, errors: Mapping[str, Any]) -> None:
        super().__init__("The request has invalid fields; see `errors`.", errors=errors)


class SegmentNotFound(ServiceError):
    status, code, title = 404, "segment_not_found", "Segment not found"


class SegmentExists(ServiceError):
    status, code, title = 409, "segment_exists", "Segment already exists"


class UserNotFound(ServiceError):
    status, code, title = 404, "user_not_found", "User not found"


class DatabaseUnavailable(ServiceError):
    status, code, title = 503, "database_unavailable", "Database unavailable"


class DatabaseTimeout(ServiceError):
    status, code, title = 503, "database_timeout", "Database timeout"


class Unauthorized(ServiceError):
    status, code, title = 401, "unauthorized", "Unauthorized"
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    status, code, title = 403, "forbidden", "Forbidden"


# Werkzeug's HTTP errors that can reach a client, mapped to our stable codes.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def problem_response(status: int, code: str, title: str, detail: str, **extra: Any) -> Response:
    body = {
        "type": f"urn:segsvc:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    request_id = current_request_id()
    if request_id is not None:
        body["request_id"] = request_id
    return Response(
        json.dumps(body, separators=(",", ":")), status=status, mimetype=PROBLEM_MIMETYPE
    )


def handle_service_error(error: ServiceError) -> Response:
    response = problem_response(error.status, error.code, error.title, error.detail, **error.extra)
    response.headers.update(error.headers)
    return response


def handle_validation_error(error: ValidationError) -> Response:
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return handle_service_error(InputInvalid(messages))


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    response = problem_response(
        status,
        _HTTP_CODES.get(status, "http_error"),
        error.name,
        error.description or error.name,
    )
    if status == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
    return response


def handle_database_error(error: psycopg2.OperationalError | psycopg2.InterfaceError) -> Response:
    log.warning("database unavailable: %s", str(error).strip())
    return handle_service_error(DatabaseUnavailable("The database cannot be reached; retry later."))


def handle_statement_timeout(error: psycopg2.errors.QueryCanceled) -> Response:
    log.warning("statement timed out: %s", str(error).strip())
    return handle_service_error(
        DatabaseTimeout("The database did not answer in time; retry later.")
    )


def handle_unexpected_error(error: Exception) -> Response:
    log.exception("unhandled error", exc_info=error)
    return problem_response(
        500, "internal_error", "Internal server error", "The server failed to handle the request."
    )


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ServiceError, handle_service_error)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(psycopg2.OperationalError, handle_database_error)
    app.register_error_handler(psycopg2.InterfaceError, handle_database_error)
    app.register_error_handler(psycopg2.errors.QueryCanceled, handle_statement_timeout)
    app.register_error_handler(Exception, handle_unexpected_error)
