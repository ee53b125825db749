"""Bearer tokens on /api/v1 (`SEGSVC_API_TOKENS`): open when unset, else read and write scopes."""

import logging
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from test_openapi import PROBLEM_MIMETYPE, assert_documented, served_spec

from segsvc import create_app, db
from segsvc.config import Config, ConfigError, parse_api_tokens

READ_TOKEN = "r3ad-T0ken.for_tests~1"
WRITE_TOKEN = "wr1te-T0ken.for_tests~2"
TOKENS = f"reader:{READ_TOKEN},writer:{WRITE_TOKEN}"
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
WRITE = {"Authorization": f"Bearer {WRITE_TOKEN}"}


@pytest.fixture
def secured_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(api_tokens=parse_api_tokens(TOKENS))


@pytest.fixture
def secured(secured_app: Flask) -> FlaskClient:
    """A client of the secured app with test data made by the write token."""
    client = secured_app.test_client()
    assert client.post("/api/v1/segments", json={"slug": "A"}, headers=WRITE).status_code == 201
    assert client.post("/api/v1/segments", json={"slug": "B"}, headers=WRITE).status_code == 201
    users = client.post("/api/v1/users", json={"user_ids": [1, 2]}, headers=WRITE)
    assert users.status_code == 200
    return client


READS = [
    ("GET", "/api/v1/segments", None),
    ("GET", "/api/v1/segments/A", None),
    ("GET", "/api/v1/segments/A/members", None),
    ("GET", "/api/v1/segments/A/members.csv", None),
    ("GET", "/api/v1/users/1", None),
    ("GET", "/api/v1/users/1/segments", None),
    ("GET", "/api/v1/reports/history.csv?from=2023-08", None),
    ("POST", "/api/v1/reports", {"from": "2023-08"}),
]
WRITES = [
    ("POST", "/api/v1/segments", {"slug": "C"}),
    ("PATCH", "/api/v1/segments/A", {"description": "a"}),
    ("PATCH", "/api/v1/users/1/segments", {"add": ["A"]}),
    ("POST", "/api/v1/segments/A/members", {"add": [4], "remove": [1]}),
    ("POST", "/api/v1/users", {"user_ids": [3]}),
    ("DELETE", "/api/v1/segments/B", None),
    ("DELETE", "/api/v1/users/2", None),
]


def call(client: FlaskClient, method: str, url: str, body: object, headers: dict) -> object:
    response = client.open(url, method=method, json=body, headers=headers)
    response.get_data()
    response.close()
    return response


def assert_unauthorized(response) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.mimetype == PROBLEM_MIMETYPE
    assert response.get_json()["code"] == "unauthorized"


def test_without_tokens_the_api_is_open(client):
    assert client.post("/api/v1/segments", json={"slug": "A"}).status_code == 201
    assert client.get("/api/v1/segments").status_code == 200
    assert client.delete("/api/v1/segments/A").status_code == 204


def test_an_open_api_is_announced_with_a_warning_at_start(config, caplog):
    with caplog.at_level(logging.WARNING, logger="segsvc.auth"):
        app = create_app(config)
        db.close_pools(app)
    assert any(
        record.levelno == logging.WARNING and "SEGSVC_API_TOKENS" in record.getMessage()
        for record in caplog.records
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {READ_TOKEN}"},
        {"Authorization": READ_TOKEN},
        {"Authorization": "Bearer unknown-token"},
        {"Authorization": f"Bearer {READ_TOKEN}x"},
        {"Authorization": f"Bearer {READ_TOKEN[:-1]}"},
        {"Authorization": "Bearer caf\u00e9"},
    ],
    ids=[
        "missing",
        "empty",
        "no-token",
        "blank-token",
        "basic",
        "no-scheme",
        "unknown",
        "longer",
        "prefix",
        "non-ascii",
    ],
)
def test_calls_without_a_known_token_are_unauthorized(secured, headers, subtests):
    for method, url, body in READS + WRITES:
        with subtests.test(method=method, url=url):
            assert_unauthorized(call(secured, method, url, body, headers))


def test_unknown_routes_and_methods_under_the_api_are_unauthorized_too(secured):
    assert_unauthorized(secured.get("/api/v1/no/such/route"))
    assert_unauthorized(secured.put("/api/v1/segments"))
    assert secured.get("/api/v1/no/such/route", headers=READ).status_code == 404


def test_the_bearer_scheme_is_case_insensitive(secured):
    response = secured.get("/api/v1/segments", headers={"Authorization": f"bearer {READ_TOKEN}"})
    assert response.status_code == 200


def test_a_read_token_reads_and_gets_report_links_and_downloads(secured, subtests):
    for method, url, body in READS:
        with subtests.test(method=method, url=url):
            response = call(secured, method, url, body, READ)
            assert response.status_code in (200, 201), response.get_data(as_text=True)


def test_the_report_link_works_for_the_read_token_that_asked_for_it(secured):
    link = secured.post("/api/v1/reports", json={"from": "2023-08"}, headers=READ)
    assert link.status_code == 201
    url = link.get_json()["url"]
    assert READ_TOKEN not in url
    assert_unauthorized(call(secured, "GET", url, None, {}))
    download = secured.get(url, headers=READ)
    assert download.status_code == 200
    assert download.mimetype == "text/csv"
    download.close()


def test_a_read_token_cannot_write(secured, subtests):
    for method, url, body in WRITES:
        with subtests.test(method=method, url=url):
            response = call(secured, method, url, body, READ)
            assert response.status_code == 403, response.get_data(as_text=True)
            assert response.mimetype == PROBLEM_MIMETYPE
            assert response.get_json()["code"] == "forbidden"
    assert secured.get("/api/v1/segments/B", headers=READ).status_code == 200


def test_a_write_token_does_everything(secured, subtests):
    for method, url, body in READS + WRITES:
        with subtests.test(method=method, url=url):
            response = call(secured, method, url, body, WRITE)
            assert response.status_code < 300, response.get_data(as_text=True)


def test_health_and_docs_stay_open_with_tokens(secured, subtests):
    for url in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        with subtests.test(url=url):
            assert secured.get(url).status_code == 200


def test_refusals_are_described_by_the_served_description(secured, subtests):
    spec = served_spec(secured)
    cases = [
        ("GET", "/api/v1/segments", "/api/v1/segments", {}),
        ("PATCH", "/api/v1/users/{user_id}/segments", "/api/v1/users/1/segments", READ),
        ("DELETE", "/api/v1/segments/{slug}", "/api/v1/segments/A", READ),
    ]
    for method, path, url, headers in cases:
        with subtests.test(method=method, url=url):
            response = secured.open(url, method=method, json={"add": ["A"]}, headers=headers)
            assert response.status_code in (401, 403)
            assert_documented(spec, method, path, response)


def test_the_description_declares_the_bearer_scheme_for_the_api_only(client):
    spec = served_spec(client)
    assert spec["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearerAuth": []}]
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if path.startswith("/api/v1"):
                assert "security" not in operation, (method, path)
                assert "401" in operation["responses"], (method, path)
                read_only_posts = {"/api/v1/reports", "/api/v1/users/segments/lookup"}
                writes = method != "get" and path not in read_only_posts
                assert ("403" in operation["responses"]) == writes, (method, path)
            else:
                assert operation["security"] == [], (method, path)


def test_tokens_are_never_logged_nor_answered(secured_app, caplog):
    with caplog.at_level(logging.DEBUG):
        client = secured_app.test_client()
        responses = [
            client.get("/api/v1/segments", headers=READ),
            client.get("/api/v1/segments", headers={"Authorization": f"Bearer {WRITE_TOKEN}x"}),
            client.get("/api/v1/segments", headers={"Authorization": f"Basic {READ_TOKEN}"}),
            client.post("/api/v1/segments", json={"slug": "A"}, headers=READ),
            client.post("/api/v1/segments", json={"slug": "A"}, headers=WRITE),
            client.post("/api/v1/segments", json={"slug": "A"}, headers=WRITE),
            client.get("/api/v1/segments/NOPE", headers=WRITE),
        ]
        assert [response.status_code for response in responses] == [
            200,
            401,
            401,
            403,
            201,
            409,
            404,
        ]
    texts = [response.get_data(as_text=True) for response in responses]
    texts += [str(response.headers) for response in responses]
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(secured_app.config["SEGSVC"])]
    assert len(caplog.records) >= len(responses)
    for text in texts:
        assert READ_TOKEN not in text
        assert WRITE_TOKEN not in text


# Configuration


def test_tokens_are_read_by_scope_with_both_spellings():
    tokens = parse_api_tokens(" read:a1 , writer:b2,reader:c3,WRITE:d4 ")
    assert sorted(tokens) == [
        ("read", "a1", "read"),
        ("read", "c3", "read"),
        ("write", "b2", "write"),
        ("write", "d4", "write"),
    ]


def test_unset_or_blank_tokens_leave_the_api_open():
    assert Config.from_environ({"DATABASE_URL": "x"}).api_tokens == ()
    assert Config.from_environ({"DATABASE_URL": "x", "SEGSVC_API_TOKENS": "  "}).api_tokens == ()


def test_tokens_are_read_from_a_file_with_comments(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"# reporting\nreader:{READ_TOKEN}\n\n  # deploys\n writer : {WRITE_TOKEN}\n")
    config = Config.from_environ({"DATABASE_URL": "x", "SEGSVC_API_TOKENS": str(path)})
    assert sorted(config.api_tokens) == [
        ("read", READ_TOKEN, "read"),
        ("write", WRITE_TOKEN, "write"),
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f"admin:{READ_TOKEN}", "entry 1 has an unknown scope"),
        (f"read:{READ_TOKEN},{WRITE_TOKEN}", "entry 2 is not `name:scope:token`"),
        (f"read:{READ_TOKEN},write:", "entry 2 has an empty token"),
        (f"read:{READ_TOKEN},", "entry 2 is not `name:scope:token`"),
        (f"read:{READ_TOKEN},write:{READ_TOKEN}", "entry 2 repeats an earlier token"),
        (f"read:{READ_TOKEN}\u00e9", "entry 1 has a token that is not printable ASCII"),
        (f"{READ_TOKEN}:{WRITE_TOKEN}", "entry 1 has an unknown scope"),
    ],
)
def test_bad_tokens_stop_the_start_without_showing_a_token(value, message):
    with pytest.raises(ConfigError, match=message) as raised:
        Config.from_environ({"DATABASE_URL": "x", "SEGSVC_API_TOKENS": value})
    assert "SEGSVC_API_TOKENS" in str(raised.value)
    assert READ_TOKEN not in str(raised.value)
    assert WRITE_TOKEN not in str(raised.value)


def test_bad_lines_of_a_token_file_are_named_by_line(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"reader:{READ_TOKEN}\n# comment\nowner:{WRITE_TOKEN}\n")
    with pytest.raises(ConfigError, match=f"line 3 of {path} has an unknown scope") as raised:
        Config.from_environ({"DATABASE_URL": "x", "SEGSVC_API_TOKENS": str(path)})
    assert WRITE_TOKEN not in str(raised.value)
    path.write_text("# nothing but comments\n")
    with pytest.raises(ConfigError, match="has no `name:scope:token` lines"):
        Config.from_environ({"DATABASE_URL": "x", "SEGSVC_API_TOKENS": str(path)})
