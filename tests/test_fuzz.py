"""Schemathesis fuzzes every operation of the served /openapi.json against the app itself.

Requests valid and invalid by the description go through WSGI to the app over its own test
database: no answer may be a server error, and each must be described (status, content type,
body schema). Each operation is one test, with its own app and database clone, seeded so that
the description's example slug and user id exist and successful answers are checked too.
"""

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support import change_segments, create_segment

from segsvc import create_app
from segsvc.config import Config

# No 5xx; status, content type, headers and body as described; what the description calls
# invalid is refused. Not `positive_data_acceptance` (what it calls valid is accepted): JSON
# Schema cannot state every rule the service checks (see `schemas.OBJECT_RULES`), so
# `{"add": ["A"], "remove": ["A"]}` is valid by the description and rightly answered 422.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# Schemathesis makes one test per operation at collection, before any database exists, so the
# description is read from an app that never connects (serving it needs no database); the
# requests go to each test's own app. (`schemathesis.pytest.from_fixture` would read it from
# the `app` fixture, but 4.32 fails under pytest 9.2: it sets `Function._nodeid`, now gone.
# Under pytest 9.2 the per-operation test ids also lose their `[METHOD /path]` suffix; the
# headers of failures still show it.)
NO_DATABASE = Config(database_url="postgresql://never-connected.invalid/segsvc")
schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(NO_DATABASE))
# The apps under test have no SEGSVC_API_TOKENS, so the API is open: a request without the
# described bearer token is rightly accepted. Tokens are tested in test_auth.py.
schema.config.generation.update(with_security_parameters=False)


def path_parameter_example(name: str) -> object:
    """The example of path parameter `name`, which the examples phase requests."""
    examples = {
        parameter["schema"]["example"]
        for item in schema.raw_schema["paths"].values()
        for operation in item.values()
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path" and parameter["name"] == name
    }
    assert len(examples) == 1, (name, examples)
    return examples.pop()


@pytest.fixture
def seeded_app(app: Flask, client: FlaskClient) -> Flask:
    """The example slug and user id exist, beside automatic, expiring and deleted data."""
    slug, user_id = path_parameter_example("slug"), path_parameter_example("user_id")
    assert client.post("/api/v1/users", json={"user_ids": list(range(1, 101))}).status_code == 200
    create_segment(client, slug, description="Voice messages in chats")
    create_segment(client, "AVITO_DISCOUNT_30", auto_percent=50)
    create_segment(client, "AVITO_RETIRED")
    assert client.delete("/api/v1/segments/AVITO_RETIRED").status_code == 204
    added = [slug, {"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 3600}]
    assert change_segments(client, user_id, add=added).status_code == 200
    assert change_segments(client, 1, add=[slug]).status_code == 200
    return app


def test_the_fuzzed_description_is_the_one_the_app_under_test_serves(client):
    assert client.get("/openapi.json").get_json() == schema.raw_schema


def call_and_validate(case: schemathesis.Case, app: Flask) -> schemathesis.Response:
    """Reads each response whole and then closes it, as a WSGI server does. Unclosed, a CSV
    download would keep its pooled connection, and requests after a few would answer 503."""
    return case.call_and_validate(app=app, checks=CHECKS, buffered=True)


def test_downloads_made_by_the_fuzzer_give_their_connections_back(seeded_app, config):
    download = schema["/api/v1/reports/history.csv"]["GET"]
    for _ in range(config.db_pool_max + 1):
        response = call_and_validate(download.Case(query={"from": "2023-08"}), seeded_app)
        assert response.status_code == 200


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    # All examples of one operation share its app and database, on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_every_operation_answers_as_described_and_never_with_a_server_error(
    case, seeded_app: Flask
):
    call_and_validate(case, seeded_app)
