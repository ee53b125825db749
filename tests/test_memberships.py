"""A user's segments: the all-or-nothing PATCH and the hot read."""

import datetime as dt

import pytest
from support import change_segments, create_segment, expire_membership, segment_slugs

from segsvc import db

SEGMENTS = [
    "AVITO_VOICE_MESSAGES",
    "AVITO_PERFORMANCE_VAS",
    "AVITO_DISCOUNT_30",
    "AVITO_DISCOUNT_50",
]


@pytest.fixture
def segments(client):
    for slug in SEGMENTS:
        create_segment(client, slug)
    return SEGMENTS


def test_the_assignments_example(client, segments):
    change_segments(
        client, 1000, add=["AVITO_VOICE_MESSAGES", "AVITO_PERFORMANCE_VAS", "AVITO_DISCOUNT_30"]
    )
    change_segments(client, 1002, add=["AVITO_VOICE_MESSAGES", "AVITO_DISCOUNT_50"])
    assert segment_slugs(client, 1000) == [
        "AVITO_DISCOUNT_30",
        "AVITO_PERFORMANCE_VAS",
        "AVITO_VOICE_MESSAGES",
    ]
    assert segment_slugs(client, 1002) == ["AVITO_DISCOUNT_50", "AVITO_VOICE_MESSAGES"]
    assert segment_slugs(client, 1004) == []


def test_an_unknown_user_has_no_segments(client):
    response = client.get("/api/v1/users/1004/segments")
    assert response.status_code == 200
    assert response.get_json() == {"user_id": 1004, "segments": []}


def test_patch_answers_the_segments_a_read_returns(client, segments):
    response = change_segments(
        client,
        1000,
        add=["AVITO_DISCOUNT_30", "AVITO_VOICE_MESSAGES"],
        remove=["AVITO_DISCOUNT_50"],
    )
    assert response.status_code == 200
    assert response.get_json() == client.get("/api/v1/users/1000/segments").get_json()
    assert [s["slug"] for s in response.get_json()["segments"]] == [
        "AVITO_DISCOUNT_30",
        "AVITO_VOICE_MESSAGES",
    ]


def test_adding_keeps_the_segments_the_user_already_has(client, segments):
    change_segments(client, 1000, add=["AVITO_VOICE_MESSAGES"])
    change_segments(client, 1000, add=["AVITO_DISCOUNT_30"])
    assert segment_slugs(client, 1000) == ["AVITO_DISCOUNT_30", "AVITO_VOICE_MESSAGES"]


def test_adding_an_existing_segment_keeps_added_at_and_writes_no_history(client, segments, sql):
    first = change_segments(client, 1000, add=["AVITO_VOICE_MESSAGES"]).get_json()
    second = change_segments(client, 1000, add=["AVITO_VOICE_MESSAGES"]).get_json()
    assert second["segments"][0]["added_at"] == first["segments"][0]["added_at"]
    assert sql.value("SELECT count(*) FROM membership_history") == 1


def test_adding_an_existing_segment_takes_the_requested_expiry(client, segments):
    expires_at = "2099-01-01T00:00:00Z"
    add = [{"slug": "AVITO_DISCOUNT_30", "expires_at": expires_at}]
    body = change_segments(client, 1000, add=add).get_json()
    assert body["segments"][0]["expires_at"] == expires_at
    body = change_segments(client, 1000, add=["AVITO_DISCOUNT_30"]).get_json()
    assert body["segments"][0]["expires_at"] is None


def test_removing_a_segment_the_user_lacks_is_a_no_op(client, segments, sql):
    response = change_segments(client, 1000, remove=["AVITO_DISCOUNT_50"])
    assert response.status_code == 200
    assert response.get_json()["segments"] == []
    assert sql.value("SELECT count(*) FROM membership_history") == 0


def test_removing_writes_a_history_row(client, segments, sql):
    change_segments(client, 1000, add=["AVITO_DISCOUNT_50"])
    change_segments(client, 1000, remove=["AVITO_DISCOUNT_50"])
    assert segment_slugs(client, 1000) == []
    assert sql.rows("SELECT operation, reason FROM membership_history ORDER BY history_id") == [
        ("added", "manual"),
        ("removed", "manual"),
    ]


def test_unknown_slugs_fail_the_whole_change_and_are_all_named(client, segments, sql):
    response = change_segments(
        client, 1000, add=["AVITO_VOICE_MESSAGES", "NOPE_1"], remove=["NOPE_2"]
    )
    assert response.status_code == 404
    body = response.get_json()
    assert body["code"] == "segment_not_found"
    assert body["slugs"] == ["NOPE_1", "NOPE_2"]
    assert sql.value("SELECT count(*) FROM memberships") == 0
    assert sql.value("SELECT count(*) FROM membership_history") == 0
    assert sql.value("SELECT count(*) FROM users") == 0


def test_unknown_slugs_past_the_first_100_are_counted_not_listed(client, segments, sql):
    unknown = [f"NOPE_{number:04d}" for number in range(999)]
    response = change_segments(client, 1000, add=["AVITO_VOICE_MESSAGES"], remove=unknown)
    assert response.status_code == 404
    body = response.get_json()
    assert body["slugs"] == unknown[:100]
    assert body["slugs_omitted"] == 899
    assert body["detail"].endswith("NOPE_0098, NOPE_0099 and 899 more.")
    assert len(response.get_data()) < 5000
    assert sql.value("SELECT count(*) FROM memberships") == 0
    assert sql.value("SELECT count(*) FROM users") == 0


def test_100_unknown_slugs_are_all_listed(client, segments):
    unknown = [f"NOPE_{number:04d}" for number in range(100)]
    body = change_segments(client, 1000, add=unknown).get_json()
    assert body["slugs"] == unknown
    assert "slugs_omitted" not in body


def test_a_deleted_segment_is_unknown(client, segments):
    client.delete("/api/v1/segments/AVITO_DISCOUNT_50")
    response = change_segments(client, 1000, add=["AVITO_DISCOUNT_50"])
    assert response.status_code == 404
    assert response.get_json()["slugs"] == ["AVITO_DISCOUNT_50"]


def test_ttl_seconds_sets_the_expiry_from_the_database_clock(client, segments, sql):
    add = [{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 172800}]
    segment = change_segments(client, 1000, add=add).get_json()["segments"][0]
    added_at = dt.datetime.fromisoformat(segment["added_at"])
    expires_at = dt.datetime.fromisoformat(segment["expires_at"])
    assert expires_at - added_at == dt.timedelta(days=2)


def test_expires_at_in_any_offset_is_stored_and_answered_in_utc(client, segments):
    add = [{"slug": "AVITO_DISCOUNT_30", "expires_at": "2099-06-01T03:00:00+03:00"}]
    segment = change_segments(client, 1000, add=add).get_json()["segments"][0]
    assert segment["expires_at"] == "2099-06-01T00:00:00Z"


def test_an_expired_membership_is_never_read_even_before_cleanup(client, segments, sql):
    change_segments(client, 1000, add=[{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 3600}])
    change_segments(client, 1000, add=["AVITO_VOICE_MESSAGES"])
    expire_membership(sql, 1000, "AVITO_DISCOUNT_30")
    assert sql.value("SELECT count(*) FROM memberships") == 2
    assert segment_slugs(client, 1000) == ["AVITO_VOICE_MESSAGES"]
    assert client.get("/api/v1/segments/AVITO_DISCOUNT_30").get_json()["member_count"] == 0


def test_a_membership_with_a_short_ttl_disappears_from_reads_at_its_expiry(client, segments):
    add = [{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 1}]
    expires_at = change_segments(client, 1000, add=add).get_json()["segments"][0]["expires_at"]
    deadline = dt.datetime.fromisoformat(expires_at)
    while dt.datetime.now(dt.UTC) < deadline - dt.timedelta(milliseconds=200):
        assert segment_slugs(client, 1000) == ["AVITO_DISCOUNT_30"]
    while dt.datetime.now(dt.UTC) <= deadline + dt.timedelta(milliseconds=50):
        pass
    assert segment_slugs(client, 1000) == []


def test_re_adding_after_expiry_records_added_removed_added(client, segments, sql):
    change_segments(client, 1000, add=[{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 60}])
    expire_membership(sql, 1000, "AVITO_DISCOUNT_30")
    expires_at = sql.value("SELECT expires_at FROM memberships")
    body = change_segments(client, 1000, add=["AVITO_DISCOUNT_30"]).get_json()
    assert body["segments"][0]["expires_at"] is None
    assert dt.datetime.fromisoformat(body["segments"][0]["added_at"]) > expires_at
    history = sql.rows(
        "SELECT operation, reason, at FROM membership_history ORDER BY at, history_id"
    )
    assert [(operation, reason) for operation, reason, _ in history] == [
        ("added", "manual"),
        ("removed", "expired"),
        ("added", "manual"),
    ]
    assert history[1][2] == expires_at


def test_an_expiry_in_the_past_is_rejected_by_the_database_clock(client, segments, sql):
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat()
    response = change_segments(
        client, 1000, add=[{"slug": "AVITO_DISCOUNT_30", "expires_at": past}]
    )
    assert response.status_code == 422
    assert response.get_json()["errors"] == {
        "add": {"0": {"expires_at": ["Must be in the future."]}}
    }
    assert sql.value("SELECT count(*) FROM users") == 0


def test_the_hand_built_read_body_is_what_the_schema_would_dump(app, client, segments, sql):
    from segsvc.api.users import user_segments_body
    from segsvc.memberships import user_segments
    from segsvc.schemas import UserSegmentsSchema

    change_segments(
        client,
        1000,
        add=[
            "AVITO_VOICE_MESSAGES",
            {"slug": "AVITO_DISCOUNT_30", "expires_at": "2099-06-01T03:00:00.5+03:00"},
        ],
    )
    with app.app_context():
        pool = db.get_pool(app)
        connection = pool.acquire()
        try:
            rows = user_segments(connection, 1000)
        finally:
            connection.rollback()
            pool.release(connection)
    by_hand = user_segments_body(1000, rows)
    assert by_hand == UserSegmentsSchema().dump({"user_id": 1000, "segments": rows})
    assert client.get("/api/v1/users/1000/segments").get_json() == by_hand
