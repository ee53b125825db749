"""HTTP blueprints, one per resource, and the helpers they share to read and answer requests."""

import functools
import json
from collections.abc import Callable
from typing import Any

from flask import Response, current_app, request
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import MalformedJson, UnsupportedMediaType
from ..schemas import PathSchema, PathValue

# What `json.dumps(body, allow_nan=False, separators=(",", ":"))` builds on every call; it keeps no
# state between calls.
_JSON_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _reject_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Python keeps the last of a key given twice in an object, where other parsers keep the
    first or refuse: a client may have meant either value, so none is guessed."""
    loaded = dict(pairs)
    if len(loaded) == len(pairs):
        return loaded
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            break
        seen.add(key)
    shown = json.dumps(key if len(key) <= 64 else key[:64] + "...")
    raise MalformedJson(f"An object in the request body has the key {shown} more than once.")


def _parse_json(raw: bytes) -> Any:
    """The body as JSON: UTF-8, no NaN or Infinity, no key twice in an object."""
    try:
        return json.loads(
            raw.decode("utf-8"),
            parse_constant=_reject_constant,
            object_pairs_hook=_reject_repeated_keys,
        )
    except (ValueError, RecursionError):
        raise MalformedJson("The request body is not valid UTF-8 JSON.") from None


def _read_body() -> bytes:
    """The whole body, or 413 when it is over the limit, also when streamed (chunked).

    werkzeug stops reading a streamed body at the limit without an error, so one more byte
    is asked of the server's stream: if there is one, the body was cut short.
    """
    body = request.get_data(cache=False)
    limit = request.max_content_length
    if (
        request.content_length is None
        and limit is not None
        and len(body) >= limit
        and request.environ["wsgi.input"].read(1)
    ):
        raise RequestEntityTooLarge()
    return body


@functools.cache
def _schema(schema_class: type[Schema]) -> Schema:
    """One instance per schema class: building one deep-copies its fields, which cost more
    than the rest of a read; instances hold no per-call state, so threads share them."""
    return schema_class()


def load_body(schema_class: type[Schema]) -> dict[str, Any]:
    """The JSON body validated by the schema; a non-JSON body is 415, broken JSON is 400."""
    if not request.is_json:
        raise UnsupportedMediaType("Send the body as JSON with `Content-Type: application/json`.")
    return _schema(schema_class).load(_parse_json(_read_body()))


def load_data(schema_class: type[Schema], data: Any) -> dict[str, Any]:
    """`data` as the schema loads it: what the web console builds from a form."""
    return _schema(schema_class).load(data)


def load_query(schema_class: type[Schema]) -> dict[str, Any]:
    return _schema(schema_class).load(request.args.to_dict())


def load_path(schema_class: type[Schema], **values: Any) -> dict[str, Any]:
    """The path's values as the schema loads them. A `PathSchema` is checked by its fields'
    `parse` alone: the same values and messages for a fifth of a marshmallow load's cost, on
    every read of a user's segments."""
    parsers = _path_parsers(schema_class)
    if parsers is None:
        return _schema(schema_class).load(values)
    loaded, errors = {}, {}
    for name, value in values.items():
        try:
            loaded[name] = parsers[name](value)
        except ValidationError as error:
            errors[name] = error.messages
    if errors:
        raise ValidationError(errors)
    return loaded


@functools.cache
def _path_parsers(schema_class: type[Schema]) -> dict[str, Callable[[Any], Any]] | None:
    if not issubclass(schema_class, PathSchema):
        return None
    parsers = {}
    for name, field in _schema(schema_class).load_fields.items():
        if not isinstance(field, PathValue) or field.validators or field.data_key is not None:
            raise TypeError(f"{schema_class.__name__}.{name}: a PathSchema takes plain PathValues")
        parsers[name] = field.parse
    return parsers


def dump(schema_class: type[Schema], payload: Any, status: int = 200, **headers: str) -> Response:
    return json_response(_schema(schema_class).dump(payload), status, **headers)


def json_response(body: Any, status: int = 200, **headers: str) -> Response:
    response = current_app.response_class(
        _JSON_ENCODER.encode(body), status=status, content_type="application/json"
    )
    if headers:
        response.headers.update(headers)
    return response


def no_content() -> Response:
    response = current_app.response_class(status=204)
    del response.headers["Content-Type"]
    return response
