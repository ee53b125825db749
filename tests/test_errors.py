"""The one error contract: every error is RFC 9457 problem+json with a stable `code`.

Bad input is a 4xx that leaves the database as it was; nothing a client sends is a 500, and no
body carries a stack trace or SQL text. Cases of one kind share a test (and so one database
clone) as subtests, which keeps the module fast while each case still reports on its own.
"""

import dataclasses
import datetime as dt
import io
import json
import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest
from flask import Flask
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError
from support import create_segment

from segsvc import create_app, db, segments
from segsvc.api import load_path
from segsvc.config import Config
from segsvc.console import PREFIX as CONSOLE_PREFIX
from segsvc.db import get_connection
from segsvc.schemas import MAX_TTL_SECONDS, MAX_USER_ID, SLUG_PATTERN, UserPathSchema

PROBLEM_MIMETYPE = "application/problem+json"
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}
TABLES = ("segments", "users", "memberships", "membership_history", "auto_exclusions")
MEBIBYTE = 1024 * 1024
SEGMENTS = "/api/v1/segments"
USERS = "/api/v1/users"
CHANGE = "/api/v1/users/1/segments"

FAST = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    text = response.get_data(as_text=True)
    assert response.status_code == status, text
    assert response.mimetype == PROBLEM_MIMETYPE
    body = json.loads(text)
    assert body.keys() >= PROBLEM_MEMBERS, body
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:segsvc:problem:{code}"
    assert body["title"]
    assert body["title"] == str(body["title"])
    assert body["detail"]
    assert body["detail"] == str(body["detail"])
    assert "Traceback" not in text
    assert "SELECT" not in text
    return body


def assert_invalid(response: Any, *fields: str) -> dict[str, Any]:
    """A 422 whose `errors` object names each of `fields`."""
    body = assert_problem(response, 422, "validation_failed")
    assert isinstance(body["errors"], dict)
    for field in fields:
        assert field in body["errors"], body["errors"]
    return body["errors"]


def row_counts(sql: Any) -> dict[str, int]:
    return {table: sql.value(f"SELECT count(*) FROM {table}") for table in TABLES}


def padded_json(document: Any, size: int) -> bytes:
    """`document` as JSON followed by whitespace up to exactly `size` bytes (still valid JSON)."""
    encoded = json.dumps(document).encode()
    return encoded + b" " * (size - len(encoded))


def send_json(client: Any, method: str, url: str, raw: bytes) -> Any:
    return client.open(url, method=method, data=raw, content_type="application/json")


def stream_json(client: Any, method: str, url: str, raw: bytes) -> Any:
    """A chunked body without Content-Length, as gunicorn hands it to the app."""
    return client.open(
        url,
        method=method,
        input_stream=io.BytesIO(raw),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@pytest.fixture
def stored(client: Any, sql: Any) -> dict[str, int]:
    """Segments A and B, user 1 in A: "unchanged" is then about rows that exist."""
    create_segment(client, "A")
    create_segment(client, "B")
    response = client.patch(CHANGE, json={"add": ["A"]})
    assert response.status_code == 200, response.get_json()
    return row_counts(sql)


# A valid request per route that takes a body; the tests below break it in one way each.
BODY_ROUTES = {
    "create segment": ("POST", SEGMENTS, {"slug": "NEW"}),
    "register users": ("POST", USERS, {"user_ids": [2]}),
    "change segments": ("PATCH", CHANGE, {"add": ["B"]}),
    "update segment": ("PATCH", "/api/v1/segments/B", {"auto_percent": 10}),
    "report link": ("POST", "/api/v1/reports", {"from": "2023-08"}),
}


# Routing


def test_unknown_route_is_404_not_found(client):
    assert_problem(client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_problem(client.get("/api/v1/users/1/segments/A/extra"), 404, "not_found")
    assert_problem(client.post("/"), 404, "not_found")


WRONG_METHODS = [
    ("PUT", SEGMENTS, {"GET", "POST"}),
    ("DELETE", SEGMENTS, {"GET", "POST"}),
    ("PUT", "/api/v1/segments/A", {"GET", "DELETE", "PATCH"}),
    ("POST", "/api/v1/users/1", {"GET", "DELETE"}),
    ("PUT", CHANGE, {"GET", "PATCH"}),
    ("POST", "/healthz", {"GET"}),
]


def test_wrong_method_is_405_with_an_allow_header(client, subtests):
    for method, url, allowed in WRONG_METHODS:
        with subtests.test(method=method, url=url):
            response = client.open(url, method=method)
            assert_problem(response, 405, "method_not_allowed")
            listed = {name.strip() for name in response.headers["Allow"].split(",")}
            assert allowed <= listed
            assert method not in listed


# Body size


def test_body_over_one_mebibyte_is_413(client, sql, stored, subtests):
    for route, (method, url, document) in BODY_ROUTES.items():
        with subtests.test(route=route):
            response = send_json(client, method, url, padded_json(document, MEBIBYTE + 1))
            assert_problem(response, 413, "payload_too_large")
            assert row_counts(sql) == stored


def test_ten_mebibyte_body_is_413(client, sql, stored, subtests):
    for route, (method, url, document) in BODY_ROUTES.items():
        with subtests.test(route=route):
            response = send_json(client, method, url, padded_json(document, 10 * MEBIBYTE))
            assert_problem(response, 413, "payload_too_large")
            assert row_counts(sql) == stored


def test_body_of_exactly_one_mebibyte_is_accepted(client):
    response = send_json(client, "POST", SEGMENTS, padded_json({"slug": "EDGE"}, MEBIBYTE))
    assert response.status_code == 201, response.get_json()


def test_streamed_body_over_one_mebibyte_is_413_not_cut_to_the_limit(client, sql, stored, subtests):
    """The first mebibyte alone is valid JSON: reading only that far would accept it."""
    for route, (method, url, document) in BODY_ROUTES.items():
        with subtests.test(route=route):
            response = stream_json(client, method, url, padded_json(document, 2 * MEBIBYTE))
            assert_problem(response, 413, "payload_too_large")
            assert row_counts(sql) == stored


def test_streamed_body_of_exactly_one_mebibyte_is_accepted(client):
    response = stream_json(client, "POST", SEGMENTS, padded_json({"slug": "EDGE"}, MEBIBYTE))
    assert response.status_code == 201, response.get_json()


# Media type

# Request arguments made fresh per request: a multipart file is consumed by one request.
NOT_JSON = {
    "text/plain": lambda: {"data": '{"slug": "A"}', "content_type": "text/plain"},
    "form": lambda: {"data": {"slug": "A"}},
    "multipart": lambda: {"data": {"file": (io.BytesIO(b"{}"), "body.json")}},
    "no content type": lambda: {"data": b'{"slug": "A"}'},
    "no body": dict,
}


def test_body_that_is_not_json_is_415(client, sql, stored, subtests):
    for route, (method, url, _) in BODY_ROUTES.items():
        for kind, arguments in NOT_JSON.items():
            with subtests.test(route=route, kind=kind):
                response = client.open(url, method=method, **arguments())
                assert_problem(response, 415, "unsupported_media_type")
                assert row_counts(sql) == stored


# Malformed JSON

MALFORMED = {
    "empty": b"",
    "whitespace": b"  \n ",
    "truncated": b'{"slug": ',
    "trailing comma": b'{"slug": "X",}',
    "single quotes": b"{'slug': 'X'}",
    "trailing garbage": b'{"slug": "X"} x',
    "two documents": b'{"slug": "X"}{"slug": "Y"}',
    "invalid utf-8": b'{"slug": "\xc3\x28"}',
    "latin-1": '{"slug": "X", "description": "café"}'.encode("latin-1"),
    "utf-16": '{"slug": "X"}'.encode("utf-16"),
    "NaN": b'{"slug": "X", "user_ids": [NaN], "add": [NaN]}',
    "Infinity": b'{"slug": "X", "user_ids": [Infinity], "add": [Infinity]}',
    "-Infinity": b'{"slug": "X", "user_ids": [-Infinity], "add": [-Infinity]}',
    "100000 levels of [": b"[" * 100_000,
    "100000 levels of [] closed": b"[" * 100_000 + b"]" * 100_000,
    "100000 levels of objects": b'{"a":' * 100_000,
}


def test_malformed_json_is_400(client, sql, stored, subtests):
    for route, (method, url, _) in BODY_ROUTES.items():
        for kind, raw in MALFORMED.items():
            with subtests.test(route=route, kind=kind):
                assert_problem(send_json(client, method, url, raw), 400, "malformed_json")
                assert row_counts(sql) == stored


# A key given twice, at any depth: (method, url, body, the key named).
REPEATED_KEYS = {
    "top level": ("POST", SEGMENTS, b'{"slug": "A", "slug": "B"}', "slug"),
    "spelled with an escape": ("POST", SEGMENTS, b'{"slug": "NEW", "\\u0073lug": "B"}', "slug"),
    "same value twice": ("POST", USERS, b'{"user_ids": [2], "user_ids": [2]}', "user_ids"),
    "in a list item": ("PATCH", CHANGE, b'{"add": [{"slug": "B", "slug": "A"}]}', "slug"),
    "three levels down": (
        "POST",
        "/api/v1/segments/B/members",
        b'{"add": [3, {"user_id": 4, "ttl_seconds": 5, "ttl_seconds": 6}]}',
        "ttl_seconds",
    ),
    "in an object the schema refuses": (
        "POST",
        USERS,
        b'{"user_ids": [2], "x": {"a": 1, "a": 1}}',
        "a",
    ),
}


def test_a_key_given_twice_in_an_object_is_400_malformed_json(client, sql, stored, subtests):
    """Python would keep the last value, other parsers the first: neither is guessed."""
    for kind, (method, url, raw, key) in REPEATED_KEYS.items():
        with subtests.test(kind=kind):
            body = assert_problem(send_json(client, method, url, raw), 400, "malformed_json")
            assert body["detail"] == (
                f'An object in the request body has the key "{key}" more than once.'
            )
            assert row_counts(sql) == stored


def test_a_long_key_given_twice_is_named_shortened(client, stored):
    key = "k" * 10_000
    raw = json.dumps({"slug": "NEW"}).encode()[:-1] + f', "{key}": 1, "{key}": 2}}'.encode()
    body = assert_problem(send_json(client, "POST", SEGMENTS, raw), 400, "malformed_json")
    assert body["detail"] == (
        f'An object in the request body has the key "{"k" * 64}..." more than once.'
    )


def test_equal_keys_in_different_objects_are_accepted(client, stored):
    raw = b'{"add": [{"slug": "A", "ttl_seconds": 60}, {"slug": "B", "ttl_seconds": 60}]}'
    assert send_json(client, "PATCH", CHANGE, raw).status_code == 200


def test_number_too_long_to_parse_is_400_malformed_json(client, sql, stored):
    """CPython refuses to parse integers over 4300 digits; that refusal must not be a 500."""
    raw = b'{"user_ids": [' + b"9" * 5000 + b"]}"
    assert_problem(send_json(client, "POST", USERS, raw), 400, "malformed_json")
    assert row_counts(sql) == stored


# Validation: segments


def test_unknown_field_is_422_naming_the_field(client, sql, stored):
    errors = assert_invalid(client.post(SEGMENTS, json={"slug": "X", "colour": "red"}), "colour")
    assert errors["colour"] == ["Unknown field."]
    assert row_counts(sql) == stored


def test_body_that_is_not_an_object_is_422(client, subtests):
    for raw in (b"[]", b'[{"slug": "X"}]', b'"X"', b"1", b"null", b"true"):
        with subtests.test(body=raw):
            assert_invalid(send_json(client, "POST", SEGMENTS, raw), "_schema")


BAD_SLUGS = {
    "empty": "",
    "65 characters": "A" * 65,
    "10000 characters": "A" * 10_000,
    "leading dash": "-A",
    "leading underscore": "_A",
    "leading dot": ".A",
    "space": "A B",
    "slash": "A/B",
    "semicolon": "A;DROP TABLE segments",
    "quote": "A'B",
    "non-ascii letter": "ÄPFEL",
    "fullwidth digit": "\uff11",
    "trailing newline": "A\n",
    "leading newline": "\nA",
    "NUL": "A\x00",
    "lone surrogate": "A\ud800",
}


def test_bad_slug_is_422(client, sql, stored, subtests):
    for kind, slug in BAD_SLUGS.items():
        with subtests.test(kind=kind):
            assert_invalid(client.post(SEGMENTS, json={"slug": slug}), "slug")
            assert row_counts(sql) == stored


def test_slug_of_wrong_type_or_missing_is_422(client, subtests):
    for body in ({"slug": 1}, {"slug": 1.5}, {"slug": True}, {"slug": None}, {"slug": ["A"]},
                 {"slug": {"slug": "A"}}, {"description": "no slug"}):  # fmt: skip
        with subtests.test(body=body):
            assert_invalid(client.post(SEGMENTS, json=body), "slug")


def test_slug_of_64_characters_is_accepted(client):
    assert client.post(SEGMENTS, json={"slug": "A" * 64}).status_code == 201


PATH_SLUG_KINDS = ["65 characters", "10000 characters", "leading dash", "space", "trailing newline"]


def test_bad_slug_in_the_path_is_422(client, sql, stored, subtests):
    """`A\\n` in the path is not the segment `A`: it is refused, not looked up."""
    for kind in PATH_SLUG_KINDS:
        for method in ("GET", "DELETE"):
            with subtests.test(kind=kind, method=method):
                url = f"{SEGMENTS}/{quote(BAD_SLUGS[kind], safe='')}"
                assert_invalid(client.open(url, method=method), "slug")
                assert row_counts(sql) == stored


def test_description_over_1000_characters_is_422(client, sql, stored):
    response = client.post(SEGMENTS, json={"slug": "X", "description": "d" * 1001})
    assert_invalid(response, "description")
    assert row_counts(sql) == stored


def test_description_of_1000_characters_is_accepted(client):
    response = client.post(SEGMENTS, json={"slug": "X", "description": "d" * 1000})
    assert response.status_code == 201


UNSTORABLE_DESCRIPTIONS = {
    "int": 1,
    "bool": True,
    "list": ["d"],
    "object": {"d": 1},
    "NUL": "NUL \x00 inside",
    "high surrogate": "lone \ud800",
    "low surrogate": "\udfff",
}


def test_description_that_is_not_storable_text_is_422(client, sql, stored, subtests):
    for kind, description in UNSTORABLE_DESCRIPTIONS.items():
        with subtests.test(kind=kind):
            response = client.post(SEGMENTS, json={"slug": "X", "description": description})
            assert_invalid(response, "description")
            assert row_counts(sql) == stored


def test_description_with_an_escaped_surrogate_pair_is_one_character_and_accepted(client):
    raw = b'{"slug": "X", "description": "\\ud83d\\ude00"}'
    response = send_json(client, "POST", SEGMENTS, raw)
    assert response.status_code == 201
    assert response.get_json()["description"] == "\U0001f600"


def test_include_deleted_that_is_not_a_boolean_is_422(client, subtests):
    for value in ("notabool", "2", "", "yes please"):
        with subtests.test(value=value):
            response = client.get(SEGMENTS, query_string={"include_deleted": value})
            assert_invalid(response, "include_deleted")


def test_unknown_query_parameter_is_422(client):
    assert_invalid(client.get(SEGMENTS, query_string={"limit": "10"}), "limit")


# One wording per rule, wherever the value came from

USER_ID_RULE = "Must be an integer from 1 to 9223372036854775807."
SLUG_RULE = "Must be 1-64 characters of A-Z a-z 0-9 _ - ., starting with a letter or digit."
# (method, url, body): each has one bad user id, at `path` in `errors`.
BAD_USER_IDS = {
    "path, out of range": ("GET", f"{USERS}/0", None, ["user_id"]),
    "path, not digits": ("DELETE", f"{USERS}/1.5", None, ["user_id"]),
    "query `after`": ("GET", f"{SEGMENTS}/A/members?after=0", None, ["after"]),
    "query `user_id`": (
        "GET",
        "/api/v1/reports/history.csv?from=2023-08&user_id=x",
        None,
        ["user_id"],
    ),
    "registration, out of range": ("POST", USERS, {"user_ids": [2**63]}, ["user_ids", "0"]),
    "registration, a string": ("POST", USERS, {"user_ids": [2, "3"]}, ["user_ids", "1"]),
    "lookup, a float": ("POST", f"{USERS}/segments/lookup", {"user_ids": [1.5]}, ["user_ids", "0"]),
    "report link": ("POST", "/api/v1/reports", {"from": "2023-08", "user_id": 0}, ["user_id"]),
    "members, add": ("POST", f"{SEGMENTS}/A/members", {"add": [-1]}, ["add", "0"]),
    "members, add object": (
        "POST",
        f"{SEGMENTS}/A/members",
        {"add": [{"user_id": True}]},
        ["add", "0", "user_id"],
    ),
    "members, remove": ("POST", f"{SEGMENTS}/A/members", {"remove": [0]}, ["remove", "0"]),
}
BAD_SLUGS_ANYWHERE = {
    "body": ("POST", SEGMENTS, {"slug": "-A"}, ["slug"]),
    "body, not a string": ("POST", SEGMENTS, {"slug": 7}, ["slug"]),
    "path": ("GET", f"{SEGMENTS}/A%0A", None, ["slug"]),
    "added as a string": ("PATCH", CHANGE, {"add": ["A" * 65]}, ["add", "0"]),
    "added as an object": ("PATCH", CHANGE, {"add": [{"slug": "A b"}]}, ["add", "0", "slug"]),
    "removed": ("PATCH", CHANGE, {"remove": [""]}, ["remove", "0"]),
}


def messages_at(errors: dict[str, Any], path: list[str]) -> Any:
    for name in path:
        errors = errors[name]
    return errors


@pytest.mark.parametrize(
    ("cases", "rule"),
    [(BAD_USER_IDS, USER_ID_RULE), (BAD_SLUGS_ANYWHERE, SLUG_RULE)],
    ids=["user id", "slug"],
)
def test_a_rule_has_one_wording_wherever_the_value_came_from(client, stored, subtests, cases, rule):
    for kind, (method, url, body, path) in cases.items():
        with subtests.test(kind=kind):
            errors = assert_invalid(client.open(url, method=method, json=body))
            assert messages_at(errors, path) == [rule], errors


def test_a_count_limit_has_one_wording_below_and_above(client, stored, subtests):
    cases = {
        "registration": (USERS, 10_000),
        "lookup": (f"{USERS}/segments/lookup", 1000),
    }
    for kind, (url, max_ids) in cases.items():
        for ids in ([], list(range(1, max_ids + 2))):
            with subtests.test(kind=kind, ids=len(ids)):
                errors = assert_invalid(client.post(url, json={"user_ids": ids}), "user_ids")
                assert errors == {"user_ids": [f"Give 1 to {max_ids} user ids."]}
    for body in ({}, {"add": [], "remove": []}, {"remove": [f"S{n}" for n in range(1001)]}):
        with subtests.test(change=str(body)[:30]):
            errors = assert_invalid(client.patch(CHANGE, json=body), "_schema")
            assert errors == {"_schema": ["Give 1 to 1000 slugs in `add` and `remove` together."]}


def test_an_integer_range_has_the_same_wording_for_every_integer(client, subtests):
    cases = {
        "page size": ("GET", f"{SEGMENTS}/A/members?limit=10001", None, ["limit"]),
        "page size, not a number": ("GET", f"{SEGMENTS}/A/members?limit=many", None, ["limit"]),
        "ttl_seconds": ("PATCH", CHANGE, add_item(ttl_seconds=0), ["add", "0", "ttl_seconds"]),
        "ttl_seconds, a float": (
            "PATCH",
            CHANGE,
            add_item(ttl_seconds=1.5),
            ["add", "0", "ttl_seconds"],
        ),
    }
    rules = {"limit": "Must be an integer from 1 to 10000."}
    ttl_rule = f"Must be an integer from 1 to {MAX_TTL_SECONDS}."
    for kind, (method, url, body, path) in cases.items():
        with subtests.test(kind=kind):
            errors = assert_invalid(client.open(url, method=method, json=body))
            assert messages_at(errors, path) == [rules.get(path[-1], ttl_rule)]


# Validation: users

OUT_OF_RANGE_IDS = [0, -1, 2**63, 2**64, 10**30, -(2**63)]
# As JSON text, so that 1e400 (a valid JSON number, an infinite float) is sent as written.
WRONG_TYPE_IDS = ["1.0", "1.5", "-0.0", "1e400", '"1"', "true", "false", "null", "[1]", '{"id": 1}']


def test_user_id_out_of_range_in_a_body_is_422(client, sql, stored, subtests):
    for user_id in OUT_OF_RANGE_IDS:
        with subtests.test(user_id=user_id):
            assert_invalid(client.post(USERS, json={"user_ids": [user_id]}), "user_ids")
            assert row_counts(sql) == stored


def test_user_id_of_wrong_type_in_a_body_is_422(client, sql, stored, subtests):
    for user_id in WRONG_TYPE_IDS:
        with subtests.test(user_id=user_id):
            raw = f'{{"user_ids": [2, {user_id}]}}'.encode()
            errors = assert_invalid(send_json(client, "POST", USERS, raw), "user_ids")
            assert list(errors["user_ids"]) == ["1"]
            assert row_counts(sql) == stored


def test_user_ids_that_are_not_a_list_of_ids_are_422(client, sql, stored, subtests):
    for user_ids in ([], "1", 1, None, {"1": 1}, list(range(1, 10_002))):
        with subtests.test(user_ids=str(user_ids)[:20]):
            assert_invalid(client.post(USERS, json={"user_ids": user_ids}), "user_ids")
            assert row_counts(sql) == stored


def test_10000_user_ids_are_accepted(client):
    response = client.post(USERS, json={"user_ids": list(range(1, 10_001))})
    assert response.status_code == 200
    assert response.get_json() == {"registered": 10_000}


def test_largest_user_id_is_accepted(client):
    response = client.post(USERS, json={"user_ids": [MAX_USER_ID]})
    assert response.status_code == 200
    assert client.get(f"{USERS}/{MAX_USER_ID}").status_code == 200


# Already percent-encoded where a character needs it.
BAD_PATH_USER_IDS = {
    "20 nines": "99999999999999999999",
    "2**63": str(2**63),
    "2**64": str(2**64),
    "50 digits": "9" * 50,
    "letters": "abc",
    "zero": "0",
    "zeros": "000",
    "negative": "-1",
    "plus sign": "+1",
    "decimal point": "1.0",
    "exponent": "1e3",
    "hex": "0x10",
    "leading space": "%201",
    "trailing newline": "1%0A",
    "fullwidth digit": "%EF%BC%91",
    "arabic-indic digit": "%D9%A1",
}
USER_ID_ROUTES = {
    "read user": ("GET", "/api/v1/users/{}"),
    "delete user": ("DELETE", "/api/v1/users/{}"),
    "read segments": ("GET", "/api/v1/users/{}/segments"),
    "change segments": ("PATCH", "/api/v1/users/{}/segments"),
}


def test_bad_user_id_in_the_path_is_422(client, sql, stored, subtests):
    for route, (method, template) in USER_ID_ROUTES.items():
        for kind, user_id in BAD_PATH_USER_IDS.items():
            with subtests.test(route=route, kind=kind):
                body = {"add": ["B"]} if method == "PATCH" else None
                response = client.open(template.format(user_id), method=method, json=body)
                assert_invalid(response, "user_id")
                assert row_counts(sql) == stored


def marshmallow_load(schema: Schema, values: dict[str, Any]) -> Any:
    try:
        return schema.load(values)
    except ValidationError as error:
        return error.messages


def path_load(values: dict[str, Any]) -> Any:
    try:
        return load_path(UserPathSchema, **values)
    except ValidationError as error:
        return error.messages


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=25)
    | st.integers(min_value=-1, max_value=2**64).map(str)
    | st.sampled_from([unquote(user_id) for user_id in BAD_PATH_USER_IDS.values()])
)
@example(str(MAX_USER_ID))
def test_a_user_id_in_the_path_loads_as_its_marshmallow_schema_would(user_id):
    """load_path checks a PathSchema with its fields' `parse` alone: same values, same messages."""
    values = {"user_id": user_id}
    assert path_load(values) == marshmallow_load(UserPathSchema(), values)


# Validation: membership changes


def add_item(**fields: Any) -> dict[str, Any]:
    return {"add": [{"slug": "B", **fields}]}


BAD_CHANGES = {
    "both lists empty": ({"add": [], "remove": []}, "_schema"),
    "both lists missing": ({}, "_schema"),
    "same slug twice in add": ({"add": ["B", "B"]}, "_schema"),
    "same slug twice in remove": ({"remove": ["A", "A"]}, "_schema"),
    "same slug added as string and object": ({"add": ["B", {"slug": "B"}]}, "_schema"),
    "slug in both lists": ({"add": ["A"], "remove": ["A"]}, "_schema"),
    "unknown field": ({"add": ["B"], "replace": ["A"]}, "replace"),
    "add is not a list": ({"add": "B"}, "add"),
    "remove is not a list": ({"remove": "A"}, "remove"),
    "add item is a number": ({"add": [1]}, "add"),
    "add item is null": ({"add": [None]}, "add"),
    "add item is a bad slug": ({"add": ["-B"]}, "add"),
    "add item slug with trailing newline": ({"add": ["B\n"]}, "add"),
    "add object slug with trailing newline": ({"add": [{"slug": "B\n"}]}, "add"),
    "add item without slug": ({"add": [{"ttl_seconds": 60}]}, "add"),
    "add item with unknown field": (add_item(until="later"), "add"),
    "remove item is a number": ({"remove": [1]}, "remove"),
    "remove item with trailing newline": ({"remove": ["A\n"]}, "remove"),
    "both expires_at and ttl_seconds": (
        add_item(expires_at="2999-01-01T00:00:00Z", ttl_seconds=60),
        "add",
    ),
    "ttl_seconds 0": (add_item(ttl_seconds=0), "add"),
    "ttl_seconds negative": (add_item(ttl_seconds=-1), "add"),
    "ttl_seconds over 100 years": (add_item(ttl_seconds=MAX_TTL_SECONDS + 1), "add"),
    "ttl_seconds 2**64": (add_item(ttl_seconds=2**64), "add"),
    "ttl_seconds float": (add_item(ttl_seconds=60.0), "add"),
    "ttl_seconds string": (add_item(ttl_seconds="60"), "add"),
    "ttl_seconds bool": (add_item(ttl_seconds=True), "add"),
    "expires_at in the past": (add_item(expires_at="2001-01-01T00:00:00Z"), "add"),
    "expires_at without timezone": (add_item(expires_at="2999-01-01T00:00:00"), "add"),
    "expires_at a date": (add_item(expires_at="2999-01-01"), "add"),
    "expires_at not a time": (add_item(expires_at="tomorrow"), "add"),
    "expires_at a number": (add_item(expires_at=4102444800), "add"),
    "expires_at after 9000": (add_item(expires_at="9000-01-01T00:00:01Z"), "add"),
    "expires_at in year 9999 west of UTC": (
        add_item(expires_at="9999-12-31T23:59:59-14:00"),
        "add",
    ),
    "expires_at in year 1 east of UTC": (add_item(expires_at="0001-01-01T00:00:00+14:00"), "add"),
}


def test_bad_membership_change_is_422_and_changes_nothing(client, sql, stored, subtests):
    for kind, (body, field) in BAD_CHANGES.items():
        for user_id in (1, 2):  # a member, and a user the change would otherwise register
            with subtests.test(kind=kind, user_id=user_id):
                response = client.patch(f"/api/v1/users/{user_id}/segments", json=body)
                assert_invalid(response, field)
                assert row_counts(sql) == stored


def test_expires_at_in_the_past_names_the_item(client, stored):
    body = {"add": ["A", {"slug": "B", "expires_at": "2001-01-01T00:00:00Z"}]}
    errors = assert_invalid(client.patch(CHANGE, json=body), "add")
    assert errors["add"] == {"1": {"expires_at": ["Must be in the future."]}}


def test_expires_at_with_any_offset_within_a_day_is_accepted(client, stored, subtests):
    """RFC 3339 allows offsets up to 23:59; PostgreSQL parses only up to 15:59."""
    for offset in ("+15:59", "-15:59", "+16:00", "+23:59", "-23:59", "+05:30", "Z"):
        with subtests.test(offset=offset):
            response = client.patch(
                CHANGE, json=add_item(expires_at=f"2999-01-01T00:00:00{offset}")
            )
            assert response.status_code == 200, response.get_json()
            expiry = dt.datetime.fromisoformat(f"2999-01-01T00:00:00{offset}").astimezone(dt.UTC)
            found = {item["slug"]: item for item in response.get_json()["segments"]}
            assert found["B"]["expires_at"] == expiry.isoformat().replace("+00:00", "Z")


def test_unknown_slug_in_a_change_is_404_listing_the_slugs(client, sql, stored):
    response = client.patch(CHANGE, json={"add": ["B", "NOPE"], "remove": ["GONE"]})
    body = assert_problem(response, 404, "segment_not_found")
    assert body["slugs"] == ["GONE", "NOPE"]
    assert row_counts(sql) == stored


# Limits against amplification: a request is refused before costly work, an answer stays small


def error_leaves(errors: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The field path of every entry with messages in a (nested) `errors` object."""
    found = []
    for key, value in errors.items():
        if isinstance(value, dict):
            found += error_leaves(value, (*path, key))
        else:
            found.append((*path, key))
    return found


def test_a_change_of_over_1000_items_is_refused_before_any_item_is_checked(client, sql, stored):
    body = {"add": ["-bad"] * 600, "remove": ["-bad"] * 401}
    errors = assert_invalid(client.patch(CHANGE, json=body), "_schema")
    assert list(errors) == ["_schema"]
    assert "1000" in errors["_schema"][0]
    assert row_counts(sql) == stored


def test_a_change_naming_40000_slugs_is_refused_with_a_short_answer(client, sql, stored):
    raw = json.dumps({"add": [f"SEGMENT_{number:06d}" for number in range(40_000)]}).encode()
    assert 600_000 < len(raw) < MEBIBYTE
    response = send_json(client, "PATCH", CHANGE, raw)
    assert list(assert_invalid(response, "_schema")) == ["_schema"]
    assert len(response.get_data()) < 1000
    assert row_counts(sql) == stored


def test_a_change_of_1000_items_is_within_the_limit(client, stored):
    response = client.patch(CHANGE, json={"add": ["B"], "remove": [f"R{n}" for n in range(999)]})
    assert_problem(response, 404, "segment_not_found")


def test_a_registration_of_over_10000_ids_is_refused_before_any_id_is_checked(client, sql, stored):
    """A body at the size limit holds half a million ids; each would cost a check and a message."""
    raw = padded_json({"user_ids": [0] * 10_001}, MEBIBYTE)
    many = b'{"user_ids": [' + b",".join([b"0"] * (MEBIBYTE // 2 - 16)) + b"]}"
    for body in (raw, many):
        response = send_json(client, "POST", USERS, body)
        errors = assert_invalid(response, "user_ids")
        assert errors == {"user_ids": ["Give 1 to 10000 user ids."]}
        assert len(response.get_data()) < 1000
    assert row_counts(sql) == stored


def test_a_422_lists_its_first_100_errors_and_counts_the_rest(client, subtests):
    invalid_ids = {"user_ids": [0] * 10_000}
    with subtests.test(errors="10000 ids"):
        body = assert_problem(client.post(USERS, json=invalid_ids), 422, "validation_failed")
        assert list(body["errors"]) == ["user_ids"]
        assert list(body["errors"]["user_ids"]) == [str(index) for index in range(100)]
        assert body["errors_omitted"] == 9_900
    with subtests.test(errors="exactly 100"):
        body = assert_problem(
            client.post(USERS, json={"user_ids": [0] * 100}), 422, "validation_failed"
        )
        assert len(error_leaves(body["errors"])) == 100
        assert "errors_omitted" not in body
    with subtests.test(errors="two per item"):
        item = {"slug": "-bad", "ttl_seconds": 0}
        response = client.patch(CHANGE, json={"add": [item] * 1000})
        body = assert_problem(response, 422, "validation_failed")
        assert list(body["errors"]["add"]) == [str(index) for index in range(50)]
        assert set(body["errors"]["add"]["49"]) == {"slug", "ttl_seconds"}
        assert body["errors_omitted"] == 1_900


def test_80000_unknown_fields_answer_the_first_100_by_name(client, sql, stored):
    unknown = {f"k{number}": 0 for number in range(80_000)}
    raw = json.dumps({"add": ["B"], **unknown}).encode()
    assert len(raw) <= MEBIBYTE
    response = send_json(client, "PATCH", CHANGE, raw)
    body = assert_problem(response, 422, "validation_failed")
    assert list(body["errors"]) == sorted(unknown)[:100]
    assert body["errors"]["k0"] == ["Unknown field."]
    assert body["errors_omitted"] == 79_900
    assert len(response.get_data()) < 10_000
    assert row_counts(sql) == stored


# Every route keeps the contract

GOOD_PATH_VALUES = {"slug": "A", "user_id": "1", "filename": "swagger-ui.css"}
BAD_PATH_VALUES = {
    "slug": ("-not-a-slug", 422, "validation_failed"),
    "user_id": ("abc", 422, "validation_failed"),
    "filename": ("no-such-asset.js", 404, "not_found"),
}
BODY_FAULTS = [
    (b"{", "application/json", 400, "malformed_json"),
    (b"{}", "text/plain", 415, "unsupported_media_type"),
    (b" " * (MEBIBYTE + 1), "application/json", 413, "payload_too_large"),
]


def route_walk_app() -> Flask:
    """The app whose routes are read at collection time; its pool is lazy, so no database."""
    return create_app(Config(database_url="postgresql://localhost/route_walk_only"))


def bad_requests(app: Flask, rule: Any) -> list[tuple[str, str, dict[str, Any], int, str]]:
    """A wrong method, and per method a bad path value, body or query, as far as the view's
    OpenAPI declaration says it takes them: (method, url, request arguments, status, code)."""
    missing = rule.arguments - BAD_PATH_VALUES.keys()
    assert not missing, f"give BAD_PATH_VALUES a bad value for {missing} in {rule.rule}"
    good_values = {name: GOOD_PATH_VALUES[name] for name in rule.arguments}
    good_url = rule.build(good_values)[1]
    allowed = app.url_map.bind("localhost").allowed_methods(good_url)
    wrong = next(method for method in ("PUT", "PATCH", "DELETE", "POST") if method not in allowed)
    requests = [(wrong, good_url, {}, 405, "method_not_allowed")]
    declared = getattr(app.view_functions[rule.endpoint], "openapi_operation", None) or {}
    for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
        for name in sorted(rule.arguments):
            value, status, code = BAD_PATH_VALUES[name]
            requests.append((method, rule.build({**good_values, name: value})[1], {}, status, code))
        if declared.get("body") is not None:
            for data, content_type, status, code in BODY_FAULTS:
                arguments = {"data": data, "content_type": content_type}
                requests.append((method, good_url, arguments, status, code))
        if declared.get("query") is not None:
            url = f"{good_url}?no_such_parameter=1"
            requests.append((method, url, {}, 422, "validation_failed"))
    return requests


def api_rules(app: Flask) -> list[Any]:
    """Every route but the web console's, which answers with pages (tests/test_console.py walks
    them)."""
    return sorted(
        (rule for rule in app.url_map.iter_rules() if not rule.rule.startswith(CONSOLE_PREFIX)),
        key=lambda rule: (rule.rule, rule.endpoint),
    )


ROUTES = api_rules(route_walk_app())


@pytest.mark.parametrize(
    "endpoint",
    [rule.endpoint for rule in ROUTES],
    ids=[f"{rule} {rule.endpoint}" for rule in ROUTES],
)
def test_every_route_answers_bad_requests_with_problem_json(
    app, client, sql, stored, subtests, endpoint
):
    (rule,) = [rule for rule in app.url_map.iter_rules() if rule.endpoint == endpoint]
    for method, url, arguments, status, code in bad_requests(app, rule):
        with subtests.test(method=method, url=url[:60], status=status):
            assert_problem(client.open(url, method=method, **arguments), status, code)
            assert row_counts(sql) == stored


def test_route_walk_was_built_from_the_routes_of_the_app_under_test(app):
    assert sorted(map(str, ROUTES)) == sorted(map(str, api_rules(app)))


# Server-side failures


def test_unexpected_exception_is_a_generic_500_that_rolls_back(app, client, sql):
    def fail_after_writing() -> None:
        segments.create_segment(get_connection(), "WRITTEN_BEFORE_FAILURE", None)
        raise RuntimeError("secret-token-42 SELECT * FROM users")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.add_url_rule("/test-only/fail", "test_only_fail", fail_after_writing, methods=["POST"])

    response = client.post("/test-only/fail")

    body = assert_problem(response, 500, "internal_error")
    assert body["detail"] == "The server failed to handle the request."
    assert "secret-token-42" not in response.get_data(as_text=True)
    assert sql.value("SELECT count(*) FROM segments") == 0


def test_unreachable_database_is_503_database_unavailable(config):
    parts = urlsplit(config.database_url)
    missing = urlunsplit(parts._replace(path="/segsvc_no_such_database"))
    app = create_app(dataclasses.replace(config, database_url=missing))
    try:
        client = app.test_client()
        for url in ("/readyz", "/api/v1/users/1/segments", SEGMENTS):
            body = assert_problem(client.get(url), 503, "database_unavailable")
            assert "segsvc_no_such_database" not in json.dumps(body)
        assert client.get("/healthz").status_code == 200
    finally:
        db.close_pools(app)


# Properties: whatever a client sends, the answer is a 2xx or a 4xx problem

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# from_regex may end a slug with "\n", which `$` in SLUG_PATTERN lets through in Python.
slugs = (
    st.sampled_from(["A", "B", "C", "NOPE"]) | st.from_regex(SLUG_PATTERN) | st.text(max_size=70)
)
offsets = st.integers(min_value=-1439, max_value=1439).map(
    lambda minutes: dt.timezone(dt.timedelta(minutes=minutes))
)
expiries = (
    st.datetimes(timezones=offsets).map(dt.datetime.isoformat)
    | st.datetimes().map(dt.datetime.isoformat)
    | st.text(max_size=30)
    | json_scalars
)
add_items = slugs | st.fixed_dictionaries(
    {"slug": slugs},
    optional={"expires_at": expiries, "ttl_seconds": st.integers() | json_scalars},
)
change_bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            "add": st.lists(add_items, max_size=4),
            "remove": st.lists(slugs, max_size=4),
        },
    )
    | json_values
)


def create_segment_once(client: Any, slug: str) -> None:
    assert client.post(SEGMENTS, json={"slug": slug}).status_code in (201, 409)


@FAST
@given(body=change_bodies)
@example(body=add_item(expires_at="2999-01-01T00:00:00+23:59"))
@example(body=add_item(expires_at="0001-01-01T00:00:00+14:00"))
def test_any_json_sent_as_a_change_is_applied_whole_or_refused_whole(client, sql, body):
    create_segment_once(client, "A")
    create_segment_once(client, "B")
    before = row_counts(sql)
    response = send_json(client, "PATCH", CHANGE, json.dumps(body).encode())
    if response.status_code == 200:
        assert response.mimetype == "application/json"
        return
    expected = {404: "segment_not_found", 422: "validation_failed"}
    assert response.status_code in expected, response.get_data(as_text=True)
    assert_problem(response, response.status_code, expected[response.status_code])
    assert row_counts(sql) == before


descriptions = st.none() | st.text(max_size=1010) | st.just("NUL\x00")


@FAST
@given(slug=slugs, description=descriptions)
@example(slug="A\n", description=None)
@example(slug="B", description="lone \ud800")
def test_segment_is_created_exactly_when_slug_and_description_are_valid(client, slug, description):
    response = client.post(SEGMENTS, json={"slug": slug, "description": description})
    slug_is_valid = re.fullmatch(SLUG_PATTERN.removesuffix("$"), slug) is not None
    description_is_valid = description is None or (
        len(description) <= 1000 and re.search("[\x00\ud800-\udfff]", description) is None
    )
    if not (slug_is_valid and description_is_valid):
        assert_problem(response, 422, "validation_failed")
    elif response.status_code != 201:
        assert_problem(response, 409, "segment_exists")


path_texts = st.text(min_size=1, max_size=25) | st.integers(-(2**70), 2**70).map(str)


@FAST
@given(text=path_texts)
@example(text="1\n")
@example(text=str(MAX_USER_ID))
def test_user_id_in_the_path_is_accepted_exactly_when_it_is_a_decimal_in_range(client, text):
    response = client.get(f"/api/v1/users/{quote(text, safe='')}/segments")
    if re.fullmatch("[0-9]{1,20}", text) and 1 <= int(text) <= MAX_USER_ID:
        assert response.status_code == 200
    elif "/" in text:  # another path: merged slashes redirect, or there is no such route
        assert response.status_code in (308, 404)
        if response.status_code == 404:
            assert_problem(response, 404, "not_found")
    else:
        assert_invalid(response, "user_id")
