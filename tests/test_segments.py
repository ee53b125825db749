"""Segments: create, list, read, delete; slugs of deleted segments can be reused."""

import datetime as dt

from support import change_segments, converge, create_segment, segment_slugs


def test_creating_a_segment_returns_it_with_location(client):
    response = client.post(
        "/api/v1/segments", json={"slug": "AVITO_VOICE_MESSAGES", "description": "Voice in chats"}
    )
    assert response.status_code == 201
    assert response.headers["Location"] == "/api/v1/segments/AVITO_VOICE_MESSAGES"
    body = response.get_json()
    assert body["slug"] == "AVITO_VOICE_MESSAGES"
    assert body["description"] == "Voice in chats"
    assert body["deleted_at"] is None
    assert body["member_count"] == 0
    created_at = dt.datetime.fromisoformat(body["created_at"])
    assert body["created_at"].endswith("Z")
    assert abs(dt.datetime.now(dt.UTC) - created_at) < dt.timedelta(minutes=1)


def test_description_is_optional(client):
    assert create_segment(client, "AVITO_DISCOUNT_30")["description"] is None


def test_creating_an_active_slug_again_is_409_and_changes_nothing(client, sql):
    create_segment(client, "AVITO_DISCOUNT_30", description="first")
    response = client.post("/api/v1/segments", json={"slug": "AVITO_DISCOUNT_30"})
    assert response.status_code == 409
    assert response.get_json()["code"] == "segment_exists"
    assert sql.rows("SELECT description FROM segments") == [("first",)]


def test_slugs_are_case_sensitive(client):
    create_segment(client, "avito_discount_30")
    create_segment(client, "AVITO_DISCOUNT_30")
    slugs = [s["slug"] for s in client.get("/api/v1/segments").get_json()["segments"]]
    assert slugs == ["AVITO_DISCOUNT_30", "avito_discount_30"]


def test_listing_shows_active_segments_ordered_by_slug_with_member_counts(client):
    for slug in ["b.2", "A-1", "c_3"]:
        create_segment(client, slug)
    change_segments(client, 1000, add=["A-1", "c_3"])
    change_segments(client, 1002, add=["A-1"])
    client.delete("/api/v1/segments/c_3")
    segments = client.get("/api/v1/segments").get_json()["segments"]
    assert [(s["slug"], s["member_count"]) for s in segments] == [("A-1", 2), ("b.2", 0)]


def test_listing_with_deleted_includes_deleted_segments(client):
    create_segment(client, "OLD")
    client.delete("/api/v1/segments/OLD")
    create_segment(client, "OLD")
    assert len(client.get("/api/v1/segments").get_json()["segments"]) == 1
    response = client.get("/api/v1/segments?include_deleted=true")
    segments = response.get_json()["segments"]
    assert [s["slug"] for s in segments] == ["OLD", "OLD"]
    assert segments[0]["deleted_at"] is not None
    assert segments[1]["deleted_at"] is None


def test_reading_a_segment(client):
    create_segment(client, "AVITO_PERFORMANCE_VAS", description="new promotion services")
    change_segments(client, 1000, add=["AVITO_PERFORMANCE_VAS"])
    response = client.get("/api/v1/segments/AVITO_PERFORMANCE_VAS")
    assert response.status_code == 200
    body = response.get_json()
    assert body["description"] == "new promotion services"
    assert body["member_count"] == 1


def test_reading_an_unknown_or_deleted_segment_is_404(client):
    assert client.get("/api/v1/segments/NOPE").get_json()["code"] == "segment_not_found"
    create_segment(client, "GONE")
    client.delete("/api/v1/segments/GONE")
    assert client.get("/api/v1/segments/GONE").status_code == 404


def test_deleting_a_segment_removes_every_member_with_history(client, sql):
    create_segment(client, "AVITO_DISCOUNT_50")
    create_segment(client, "AVITO_VOICE_MESSAGES")
    for user_id in (1000, 1002):
        change_segments(client, user_id, add=["AVITO_DISCOUNT_50", "AVITO_VOICE_MESSAGES"])
    response = client.delete("/api/v1/segments/AVITO_DISCOUNT_50")
    assert response.status_code == 204
    assert response.data == b""
    assert segment_slugs(client, 1000) == ["AVITO_VOICE_MESSAGES"]
    assert segment_slugs(client, 1002) == ["AVITO_VOICE_MESSAGES"]
    converge(client.application)  # the members leave in chunks after the answer
    removed = sql.rows(
        "SELECT h.user_id, h.reason, h.at = s.deleted_at FROM membership_history h"
        " JOIN segments s USING (segment_id) WHERE h.operation = 'removed' ORDER BY h.user_id"
    )
    assert removed == [(1000, "segment_deleted", True), (1002, "segment_deleted", True)]


def test_deleting_an_unknown_or_already_deleted_segment_is_404(client):
    assert client.delete("/api/v1/segments/NOPE").status_code == 404
    create_segment(client, "ONCE")
    assert client.delete("/api/v1/segments/ONCE").status_code == 204
    response = client.delete("/api/v1/segments/ONCE")
    assert response.status_code == 404
    assert response.get_json()["code"] == "segment_not_found"


def test_a_recreated_slug_is_a_new_segment_without_old_members(client, sql):
    create_segment(client, "AVITO_DISCOUNT_30")
    change_segments(client, 1000, add=["AVITO_DISCOUNT_30"])
    client.delete("/api/v1/segments/AVITO_DISCOUNT_30")
    create_segment(client, "AVITO_DISCOUNT_30")
    assert segment_slugs(client, 1000) == []
    assert client.get("/api/v1/segments/AVITO_DISCOUNT_30").get_json()["member_count"] == 0
    assert sql.value("SELECT count(DISTINCT segment_id) FROM segments") == 2
