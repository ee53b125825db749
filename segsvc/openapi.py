"""The OpenAPI 3 description, built from the routes and the marshmallow schemas they use.

Each view declares its contract with `@operation(...)`, next to its code; `build_spec` walks
the URL map, so a route without a declaration fails the spec test instead of going undocumented.
"""

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema

from . import auth, schemas

View = TypeVar("View", bound=Callable[..., Any])

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0.0"
_SECURITY_SCHEME = "bearerAuth"
_PATH_PARAMETER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")

_PATH_PARAMETERS = {
    "slug": {"type": "string", "pattern": schemas.SLUG_PATTERN, "example": "AVITO_VOICE_MESSAGES"},
    "user_id": {
        "type": "integer",
        "format": "int64",
        "minimum": 1,
        "maximum": schemas.MAX_USER_ID,
        "example": 1000,
    },
}

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No content",
    400: "Malformed JSON",
    401: "Missing or unknown bearer token (only when the service is started with tokens)",
    403: "The token's scope does not allow this call (a read token on a write)",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    415: "Body is not JSON",
    422: "Validation failed",
    503: "Database unavailable or too slow (`database_unavailable`, `database_timeout`)",
}


def operation(
    summary: str,
    *,
    tag: str,
    responses: Mapping[int, type[Schema] | None],
    body: type[Schema] | None = None,
    query: type[Schema] | None = None,
    description: str | None = None,
    content_type: str = "application/json",
    uses_database: bool = True,
) -> Callable[[View], View]:
    """Attaches the OpenAPI operation of a view; problem responses use the problem schema.

    An operation that uses the database can also answer 503 when it is unreachable.
    """

    def attach(view: View) -> View:
        view.openapi_operation = {  # type: ignore[attr-defined]
            "summary": summary,
            "description": description,
            "tag": tag,
            "responses": {**responses, **({503: None} if uses_database else {})},
            "body": body,
            "query": query,
            "content_type": content_type,
        }
        return view

    return attach


def hidden(view: View) -> View:
    """Marks a route as deliberately absent from the spec (static assets)."""
    view.openapi_operation = None  # type: ignore[attr-defined]
    return view


def _response(status: int, schema: type[Schema] | None, content_type: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": _STATUS_TEXT.get(status, str(status))}
    if status >= 400:
        response["content"] = {"application/problem+json": {"schema": schemas.ProblemSchema}}
    elif schema is not None:
        response["content"] = {content_type: {"schema": schema}}
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}
        }
    return response


def _operation_spec(declared: Mapping[str, Any], path_parameters: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "summary": declared["summary"],
        "tags": [declared["tag"]],
        "responses": {
            str(status): _response(status, schema, declared["content_type"])
            for status, schema in declared["responses"].items()
        },
        "parameters": [
            {"in": "path", "name": name, "required": True, "schema": _PATH_PARAMETERS[name]}
            for name in path_parameters
        ],
    }
    if declared["description"]:
        spec["description"] = declared["description"]
    if declared["query"] is not None:
        spec["parameters"].append({"in": "query", "schema": declared["query"]})
    if declared["body"] is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": declared["body"]}},
        }
    return spec


def _secured(
    operation_spec: dict[str, Any], rule: str, method: str, view: Callable[..., Any]
) -> dict[str, Any]:
    """/api/v1 needs a bearer token when tokens are configured, and may answer 401 and 403;
    everything else is open (`security: []` overrides the document's requirement)."""
    if not auth.is_protected(rule):
        return {**operation_spec, "security": []}
    responses = {**operation_spec["responses"], "401": _response(401, None, "")}
    if auth.required_scope(method, view) == auth.WRITE:
        responses["403"] = _response(403, None, "")
    return {**operation_spec, "responses": responses}


def build_spec(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title="segsvc",
        version=API_VERSION,
        openapi_version=OPENAPI_VERSION,
        info={"description": "Dynamic user segmentation: segments, memberships and history."},
        plugins=[MarshmallowPlugin()],
        security=[{_SECURITY_SCHEME: []}],
    )
    spec.components.security_scheme(
        _SECURITY_SCHEME,
        {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "Needed under /api/v1 when the service is started with `SEGSVC_API_TOKENS`: "
                "a read token allows GETs, report links and downloads; a write token everything."
            ),
        },
    )
    # Also registers AddItem, which only field metadata refers to.
    for schema, rules in schemas.OBJECT_RULES.items():
        spec.components.schema(schema.__name__.removesuffix("Schema"), rules, schema=schema)
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        view = app.view_functions[rule.endpoint]
        declared = getattr(view, "openapi_operation", None)
        if declared is None:
            continue
        path = _PATH_PARAMETER.sub(r"{\1}", rule.rule)
        operations = {
            method.lower(): _secured(
                _operation_spec(declared, _PATH_PARAMETER.findall(rule.rule)),
                rule.rule,
                method,
                view,
            )
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
        }
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def undocumented_routes(app: Flask) -> list[str]:
    """Routes that declare neither an operation nor that they are hidden."""
    return sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if not hasattr(app.view_functions[rule.endpoint], "openapi_operation")
    )
