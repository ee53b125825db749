"""Who changed what: token names, the actor and request id of history rows, and the segment
audit log (segsvc/audit.py, migrations/0007)."""

import pytest
from support import converge, create_segment

from segsvc import db
from segsvc.config import ApiToken, ConfigError, parse_api_tokens

ALICE_TOKEN = "alice-T0ken.for_tests~1"
AUDITOR_TOKEN = "aud1tor-T0ken.for_tests~2"
ALICE = {"Authorization": f"Bearer {ALICE_TOKEN}"}
AUDITOR = {"Authorization": f"Bearer {AUDITOR_TOKEN}"}


def history(sql, user_id: int) -> list[tuple]:
    return sql.rows(
        "SELECT s.slug, h.operation, h.reason, h.actor, h.request_id"
        "  FROM membership_history h JOIN segments s USING (segment_id)"
        " WHERE h.user_id = %s ORDER BY h.history_id",
        (user_id,),
    )


def events(client, path: str = "/api/v1/events", headers: dict | None = None, **query) -> dict:
    response = client.get(path, query_string=query, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.fixture
def named(make_app):
    tokens = parse_api_tokens(f"alice:write:{ALICE_TOKEN},auditor:read:{AUDITOR_TOKEN}")
    return make_app(api_tokens=tokens).test_client()


def test_tokens_have_names_and_the_earlier_form_is_named_after_its_scope():
    assert parse_api_tokens("alice:write:tok-1,read:tok-2,carol.ops@example:reader:tok:3") == (
        ApiToken("write", "tok-1", "alice"),
        ApiToken("read", "tok-2", "read"),
        ApiToken("read", "tok:3", "carol.ops@example"),
    )
    # A first part that is a scope word is the earlier form, whose token may hold colons.
    assert parse_api_tokens("write:alice:tok") == (ApiToken("write", "alice:tok", "write"),)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("alice:admin:tok", "unknown scope"),
        ("al ice:write:tok", "bad name"),
        ("-alice:write:tok", "bad name"),
        (f"{'a' * 65}:write:tok", "bad name"),
        ("alice:write:tok,bob:write:tok", "another scope or name"),
        ("alice:tok", "is not `name:scope:token`"),
    ],
)
def test_bad_token_entries_are_refused_without_showing_the_token(value, message):
    with pytest.raises(ConfigError, match=message) as raised:
        parse_api_tokens(value)
    assert "tok" not in str(raised.value).replace("token", "")


def test_a_tokens_changes_record_its_name_and_the_request_id(named, sql):
    create_segment_as = named.post("/api/v1/segments", json={"slug": "VOICE"}, headers=ALICE)
    assert create_segment_as.status_code == 201
    first = named.patch("/api/v1/users/7/segments", json={"add": ["VOICE"]}, headers=ALICE)
    second = named.patch(
        "/api/v1/users/7/segments", json={"remove": ["VOICE"]}, headers=ALICE | {"X-Actor": "eve"}
    )
    assert first.status_code == second.status_code == 200
    # The first PATCH registered user 7 (a transaction), the second is one statement.
    assert history(sql, 7) == [
        ("VOICE", "added", "manual", "alice", first.headers["X-Request-ID"]),
        ("VOICE", "removed", "manual", "alice", second.headers["X-Request-ID"]),
    ]
    created = events(named, headers=AUDITOR)["events"]
    assert [(e["kind"], e["actor"]) for e in created] == [("created", "alice")]
    assert created[0]["request_id"] == create_segment_as.headers["X-Request-ID"]


def test_an_open_apis_actor_is_the_x_actor_header_else_none(client, sql):
    create_segment(client, "VOICE")
    assert (
        client.patch(
            "/api/v1/users/8/segments",
            json={"add": ["VOICE"]},
            headers={"X-Actor": "Анна (CRM)".encode().decode("latin-1")},
        ).status_code
        == 200
    )
    response = client.patch("/api/v1/users/8/segments", json={"remove": ["VOICE"]})
    assert response.status_code == 200
    assert [row[3] for row in history(sql, 8)] == ["Анна (CRM)", None]


@pytest.mark.parametrize("actor", ["", "a" * 65, "tab\there", "bell\x07", "\x85next line"])
def test_a_bad_x_actor_is_422_and_changes_nothing(client, sql, actor):
    create_segment(client, "VOICE")
    response = client.patch(
        "/api/v1/users/9/segments",
        json={"add": ["VOICE"]},
        headers={"X-Actor": actor.encode().decode("latin-1")},
    )
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["errors"] == {"X-Actor": ["Must be 1 to 64 printable characters."]}
    assert history(sql, 9) == []
    assert sql.value("SELECT count(*) FROM users WHERE user_id = 9") == 0


def test_x_actor_is_ignored_on_reads(client):
    response = client.get("/api/v1/users/9/segments", headers={"X-Actor": "a" * 65})
    assert response.status_code == 200


def test_every_kind_of_segment_change_is_one_event_with_before_and_after(client):
    headers = {"X-Actor": "ops"}
    assert (
        client.post(
            "/api/v1/segments", json={"slug": "HALF", "auto_percent": 50}, headers=headers
        ).status_code
        == 201
    )
    client.patch("/api/v1/segments/HALF", json={"description": "Half"}, headers=headers)
    client.patch(
        "/api/v1/segments/HALF", json={"description": "Most", "auto_percent": 75}, headers=headers
    )
    client.patch("/api/v1/segments/HALF", json={"auto_percent": 75}, headers=headers)  # no change
    assert client.delete("/api/v1/segments/HALF", headers=headers).status_code == 204
    found = events(client, "/api/v1/segments/HALF/events")
    assert found["next_after"] is None
    assert [(e["kind"], e["before"], e["after"]) for e in found["events"]] == [
        ("created", None, {"description": None, "auto_percent": 50}),
        ("description_changed", {"description": None}, {"description": "Half"}),
        ("description_changed", {"description": "Half"}, {"description": "Most"}),
        ("percentage_changed", {"auto_percent": 50}, {"auto_percent": 75}),
        ("deleted", {"description": "Most", "auto_percent": 75}, None),
    ]
    assert {e["actor"] for e in found["events"]} == {"ops"}
    both = found["events"][2:4]
    assert both[0]["request_id"] == both[1]["request_id"]
    assert both[0]["at"] == both[1]["at"]
    assert all(e["at"].endswith("Z") for e in found["events"])


def test_a_slugs_events_span_every_segment_that_had_it_and_page(client):
    create_segment(client, "VOICE")
    client.delete("/api/v1/segments/VOICE")
    create_segment(client, "VOICE")
    create_segment(client, "OTHER")
    page = events(client, "/api/v1/segments/VOICE/events", limit=2)
    assert [e["kind"] for e in page["events"]] == ["created", "deleted"]
    rest = events(client, "/api/v1/segments/VOICE/events", after=page["next_after"], limit=2)
    assert [e["kind"] for e in rest["events"]] == ["created"]
    assert rest["next_after"] is None
    assert page["events"][0]["segment_id"] != rest["events"][0]["segment_id"]
    everything = events(client, limit=3)
    assert [e["slug"] for e in everything["events"]] == ["VOICE", "VOICE", "VOICE"]
    last = events(client, after=everything["next_after"])
    assert [e["slug"] for e in last["events"]] == ["OTHER"]


def test_events_of_a_slug_no_segment_ever_had_is_404(client):
    response = client.get("/api/v1/segments/NEVER/events")
    assert response.status_code == 404
    assert response.get_json()["code"] == "segment_not_found"


def test_a_read_token_may_read_events_and_not_change(named):
    assert named.get("/api/v1/events", headers=AUDITOR).status_code == 200
    response = named.post("/api/v1/segments", json={"slug": "X"}, headers=AUDITOR)
    assert response.status_code == 403


def test_background_rows_have_no_actor_even_on_a_connection_a_request_tagged(app, client, sql):
    """The tags end with their transaction: the rollout job, on the same pool, records none."""
    assert (
        client.post(
            "/api/v1/users", json={"user_ids": list(range(1, 41))}, headers={"X-Actor": "ops"}
        ).status_code
        == 200
    )
    assert (
        client.post(
            "/api/v1/segments",
            json={"slug": "HALF", "auto_percent": 50},
            headers={"X-Actor": "ops"},
        ).status_code
        == 201
    )
    assert db.get_pool(app).in_use() == 0
    converge(app)
    automatic = sql.rows("SELECT actor, request_id FROM membership_history WHERE reason = 'auto'")
    assert automatic
    assert set(automatic) == {(None, None)}
