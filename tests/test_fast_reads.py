"""Cache hits of GET /api/v1/users/<id>/segments answered before Flask (segsvc/fast_reads.py):
the same answer, access line, metrics and token check as Flask's route; everything else goes
to Flask."""

import pytest
from prometheus_client import REGISTRY
from support import change_segments, create_segment
from test_auth import READ, TOKENS, WRITE
from test_logging import access_lines, capture
from test_read_cache import listening

from segsvc.config import parse_api_tokens

USER_ID = 1000
PATH = f"/api/v1/users/{USER_ID}/segments"
ROUTE = "/api/v1/users/<user_id>/segments"


def requests_counted(status: str = "200") -> float:
    labels = {"method": "GET", "route": ROUTE, "status": status}
    return REGISTRY.get_sample_value("segsvc_http_requests_total", labels) or 0


def cache_lookups(result: str) -> float:
    labels = {"result": result}
    return REGISTRY.get_sample_value("segsvc_read_cache_lookups_total", labels) or 0


class ViewCalls:
    """Counts the calls of Flask's view for the route: a hit answered before Flask makes none."""

    def __init__(self, app) -> None:
        self.count = 0
        view = app.view_functions["users.get_user_segments"]

        def counted(*args, **kwargs):
            self.count += 1
            return view(*args, **kwargs)

        app.view_functions["users.get_user_segments"] = counted


def served(app, headers: dict | None = None):
    """A user in two segments and the cache listening."""
    client = app.test_client()
    for slug in ("VOICE", "DISCOUNT_30"):
        created = client.post("/api/v1/segments", json={"slug": slug}, headers=headers)
        assert created.status_code == 201
    change = {"add": ["VOICE", "DISCOUNT_30"], "remove": []}
    assert client.patch(PATH, json=change, headers=headers).status_code == 200
    listening(app)
    return client


@pytest.fixture
def logged():
    yield from capture("json")


def test_a_hit_is_answered_before_flask_exactly_as_flask_answers(app, logged):
    client = served(app)
    calls = ViewCalls(app)
    headers = {"User-Agent": "probe/2.0", "X-Request-ID": "page-view-1"}
    first = client.get(PATH, headers=headers)  # a miss: Flask reads and caches
    hits, counted = cache_lookups("hit"), requests_counted()
    second = client.get(PATH, headers=headers)
    assert calls.count == 1
    assert cache_lookups("hit") == hits + 1
    assert requests_counted() == counted + 1
    assert second.status_code == first.status_code == 200
    assert second.get_data() == first.get_data()
    assert [s["slug"] for s in second.get_json()["segments"]] == ["DISCOUNT_30", "VOICE"]
    assert sorted(second.headers.items()) == sorted(first.headers.items())
    assert second.headers["X-Request-ID"] == "page-view-1"
    flask_line, fast_line = access_lines(logged)[-2:]
    for line in (flask_line, fast_line):
        line.pop("time")
        line.pop("duration_ms")
        line.pop("message")
    assert fast_line == flask_line
    assert fast_line["route"] == ROUTE
    assert fast_line["user_agent"] == "probe/2.0"


def test_a_hit_gets_a_new_request_id_unless_it_brings_a_sane_one(app):
    client = served(app)
    client.get(PATH)
    ids = {client.get(PATH).headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5
    hostile = client.get(PATH, headers={"X-Request-ID": "bad id\twith tab"})
    assert hostile.headers["X-Request-ID"] != "bad id\twith tab"
    assert len(hostile.headers["X-Request-ID"]) == 32


def test_a_change_is_read_by_flask_then_hit_again(app):
    client = served(app)
    calls = ViewCalls(app)
    client.get(PATH)
    client.get(PATH)
    assert change_segments(client, USER_ID, remove=["VOICE"]).status_code == 200
    assert [s["slug"] for s in client.get(PATH).get_json()["segments"]] == ["DISCOUNT_30"]
    assert [s["slug"] for s in client.get(PATH).get_json()["segments"]] == ["DISCOUNT_30"]
    assert calls.count == 2  # the first read and the one after the change


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("HEAD", PATH),
        ("GET", f"/api/v1/users/0{USER_ID}/segments"),
        ("GET", f"/api/v1/users/{USER_ID}/segments/"),
        ("GET", f"/api/v1/users/{2**63}/segments"),
        ("GET", "/api/v1/users/abc/segments"),
    ],
)
def test_anything_but_a_canonical_get_goes_to_flask(app, method, path):
    client = served(app)
    client.get(PATH)
    calls = ViewCalls(app)
    before = (cache_lookups("hit"), requests_counted())
    response = client.open(path, method=method)
    flask_answered = calls.count == 1 or response.status_code in (308, 404, 422)
    assert flask_answered
    if response.status_code == 200:
        assert cache_lookups("hit") == before[0] + 1  # counted by Flask's lookup, once
    else:
        assert response.mimetype == "application/problem+json"
    assert requests_counted() <= before[1] + 1


def test_tokens_are_checked_before_a_hit_and_refusals_are_flasks(make_app):
    tokens = parse_api_tokens(TOKENS)
    app = make_app(api_tokens=tokens)
    client = served(app, headers=WRITE)
    assert client.get(PATH, headers=READ).status_code == 200
    calls = ViewCalls(app)
    assert client.get(PATH, headers=READ).status_code == 200
    assert calls.count == 0
    missing = client.get(PATH)
    wrong = client.get(PATH, headers={"Authorization": "Bearer not-a-token"})
    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.mimetype == "application/problem+json"
    assert calls.count == 0  # refused by the auth hook, before the view


def test_without_a_listener_every_read_goes_to_flask(app):
    client = app.test_client()
    create_segment(client, "VOICE")
    assert change_segments(client, USER_ID, add=["VOICE"]).status_code == 200
    calls = ViewCalls(app)
    bypassed = cache_lookups("bypass")
    for _ in range(3):
        assert client.get(PATH).status_code == 200
    assert calls.count == 3
    assert cache_lookups("bypass") == bypassed + 3


def test_the_switched_off_cache_serves_nothing_before_flask(make_app):
    app = make_app(read_cache=False)
    client = app.test_client()
    calls = ViewCalls(app)
    for _ in range(2):
        assert client.get(PATH).status_code == 200
    assert calls.count == 2
