"""The one error contract: every error leaves the service as RFC 9457 problem+json.

Domain code raises `ServiceError` subclasses; HTTP-level errors (unknown route, 405, 413, ...)
and unexpected exceptions are translated here, so no view builds an error response itself. The
gunicorn worker answers what never reaches the app (segsvc.gunicorn_worker) with the same
classes. Each class is one `code`, with one status and one title wherever it is answered.
"""

import heapq
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import psycopg2
import psycopg2.errors
from flask import Flask, Response, current_app
from gunicorn.http.errors import ParseException
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from .request_log import current_request_id

PROBLEM_MIMETYPE = "application/problem+json"
# Entries a problem lists in `errors` or `slugs`; `errors_omitted` or `slugs_omitted` counts the
# rest, so a hostile body cannot make an answer larger than itself.
MAX_LISTED_ENTRIES = 100

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


class BadRequest(ServiceError):
    status, code, title = 400, "bad_request", "Bad request"


class MalformedJson(ServiceError):
    status, code, title = 400, "malformed_json", "Malformed JSON"


class NotFound(ServiceError):
    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(ServiceError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class RequestTimeout(ServiceError):
    status, code, title = 408, "request_timeout", "Request timeout"


class PayloadTooLarge(ServiceError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UriTooLong(ServiceError):
    status, code, title = 414, "uri_too_long", "URI too long"


class UnsupportedMediaType(ServiceError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class RangeNotSatisfiable(ServiceError):
    status, code, title = 416, "range_not_satisfiable", "Range not satisfiable"


class ExpectationFailed(ServiceError):
    status, code, title = 417, "expectation_failed", "Expectation failed"


class HeaderFieldsTooLarge(ServiceError):
    status, code, title = 431, "request_header_fields_too_large", "Request header fields too large"


class TransferCodingNotImplemented(ServiceError):
    status, code, title = 501, "not_implemented", "Not implemented"


def listed(name: str, entries: Sequence[Any]) -> dict[str, Any]:
    """`{name: the first MAX_LISTED_ENTRIES}`, with `<name>_omitted` counting the rest if any."""
    return {name: list(entries[:MAX_LISTED_ENTRIES]), **_omitted(name, len(entries))}


def _omitted(name: str, count: int) -> dict[str, int]:
    return {f"{name}_omitted": count - MAX_LISTED_ENTRIES} if count > MAX_LISTED_ENTRIES else {}


def _key_order(key: Any) -> tuple[int, Any]:
    """List items (int keys) by index, then fields by name."""
    return (0, key) if isinstance(key, int) else (1, str(key))


def _count_errors(errors: Mapping[Any, Any]) -> int:
    """Fields with messages, however deep: list items nest under their index."""
    return sum(
        _count_errors(value) if isinstance(value, Mapping) else 1 for value in errors.values()
    )


def _first_errors(errors: Mapping[Any, Any], room: int) -> dict[Any, Any]:
    """The first `room` fields with messages by field path. Ordered, since marshmallow lists
    unknown fields in no fixed order; `nsmallest`, since there may be 80,000 of them."""
    kept: dict[Any, Any] = {}
    for key in heapq.nsmallest(room, errors, key=_key_order):
        if room == 0:
            break
        value = errors[key]
        if isinstance(value, Mapping):
            value = _first_errors(value, room)
            room -= _count_errors(value)
        else:
            room -= 1
        kept[key] = value
    return kept


class InputInvalid(ServiceError):
    status, code, title = 422, "validation_failed", "Validation failed"

    def __init__(self, errors: Mapping[Any, Any]) -> None:
        super().__init__(
            "The request has invalid fields; see `errors`.",
            errors=_first_errors(errors, MAX_LISTED_ENTRIES),
            **_omitted("errors", _count_errors(errors)),
        )


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


class TooManyReports(ServiceError):
    status, code, title = 503, "too_many_reports", "Too many report downloads"
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": "10"}


class Unauthorized(ServiceError):
    status, code, title = 401, "unauthorized", "Unauthorized"
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    status, code, title = 403, "forbidden", "Forbidden"


class FormNotTrusted(ServiceError):
    """A web console form without the session's anti-forgery token (segsvc/console)."""

    status, code, title = 403, "form_not_trusted", "Form not trusted"


# Werkzeug's HTTP errors that can reach a client, by status.
_HTTP_ERRORS: dict[int, type[ServiceError]] = {
    error.status: error
    for error in (
        BadRequest,
        NotFound,
        MethodNotAllowed,
        PayloadTooLarge,
        UnsupportedMediaType,
        RangeNotSatisfiable,
    )
}


def problem_body(
    status: int, code: str, title: str, detail: str, request_id: str | None, **extra: Any
) -> bytes:
    body = {
        "type": f"urn:segsvc:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    if request_id is not None:
        body["request_id"] = request_id
    return json.dumps(body, separators=(",", ":")).encode()


def problem_response(status: int, code: str, title: str, detail: str, **extra: Any) -> Response:
    body = problem_body(status, code, title, detail, current_request_id(), **extra)
    return Response(body, status=status, mimetype=PROBLEM_MIMETYPE)


def handle_service_error(error: ServiceError) -> Response:
    response = problem_response(error.status, error.code, error.title, error.detail, **error.extra)
    response.headers.update(error.headers)
    return response


def size_in_words(size: int) -> str:
    """`1 MiB` for 1048576, `1000 bytes` for 1000: a limit as a client reads it."""
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def handle_validation_error(error: ValidationError) -> Response:
    messages = error.messages if isinstance(error.messages, dict) else {"_schema": error.messages}
    return handle_service_error(InputInvalid(messages))


def handle_http_exception(error: HTTPException) -> Response:
    """An HTTP error of werkzeug's, with its headers (`Allow`, `Content-Range`); one it was not
    expected to raise is a bug, answered 500 and logged."""
    problem_class = _HTTP_ERRORS.get(error.code or 500)
    if problem_class is None:
        return handle_unexpected_error(error)
    if problem_class is PayloadTooLarge:
        limit = size_in_words(current_app.config["MAX_CONTENT_LENGTH"])
        detail = f"The request body is larger than {limit}."
    else:
        detail = error.description or error.name
    response = handle_service_error(problem_class(detail))
    for name, value in error.get_headers():
        if name == "Allow":
            response.headers[name] = ", ".join(sorted(error.valid_methods or ()))
        elif name != "Content-Type":
            response.headers[name] = value
    return response


def handle_malformed_body(error: ParseException) -> Response:
    """gunicorn raises these from `wsgi.input` while the app reads a chunked body."""
    log.warning("malformed request body: %s", error)
    return handle_service_error(BadRequest("The chunked request body is malformed."))


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


# What each error becomes, by class: Flask and `problem_for` both take the most specific one.
_HANDLERS: dict[type[BaseException], Callable[[Any], Response]] = {
    ServiceError: handle_service_error,
    ValidationError: handle_validation_error,
    HTTPException: handle_http_exception,
    ParseException: handle_malformed_body,
    psycopg2.OperationalError: handle_database_error,
    psycopg2.InterfaceError: handle_database_error,
    psycopg2.errors.QueryCanceled: handle_statement_timeout,
    Exception: handle_unexpected_error,
}
HANDLED_ERRORS = tuple(_HANDLERS)


def problem_for(error: Exception) -> Response:
    """The problem response the API answers `error` with, for a caller that shows it in
    another form (the web console's pages)."""
    for error_class in type(error).__mro__:
        handler = _HANDLERS.get(error_class)
        if handler is not None:
            return handler(error)
    return handle_unexpected_error(error)


def register_error_handlers(app: Flask) -> None:
    for error_class, handler in _HANDLERS.items():
        app.register_error_handler(error_class, handler)
