"""Deleting a segment of any size: gone at once, its members leaving in chunks afterwards."""

from support import (
    assert_history_replays_to_current_state,
    change_segments,
    converge,
    create_segment,
    segment_slugs,
)

MEMBERS = 500_000


def fill_members(sql, slug: str, count: int) -> None:
    """`count` users in the segment, with the `added` rows a PATCH would have written."""
    sql.execute(
        "INSERT INTO users (user_id, registered_at)"
        " SELECT id, now() - interval '1 day' FROM generate_series(1, %s) AS id",
        (count,),
    )
    sql.execute(
        "INSERT INTO memberships (user_id, segment_id, added_at)"
        " SELECT id, s.segment_id, now() - interval '1 day'"
        "   FROM generate_series(1, %s) AS id, segments s WHERE s.slug = %s",
        (count, slug),
    )
    sql.execute(
        "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
        " SELECT user_id, segment_id, 'added', 'manual', added_at FROM memberships"
    )


def test_a_segment_of_half_a_million_members_is_deleted_at_once(make_app, sql):
    """Before, the members left in the deleting statement, which the statement timeout
    cancelled (503 database_timeout) every time, and the segment stayed."""
    app = make_app(statement_timeout_seconds=1)
    client = app.test_client()
    create_segment(client, "BIG")
    fill_members(sql, "BIG", MEMBERS)

    response = client.delete("/api/v1/segments/BIG")

    assert response.status_code == 204, response.get_json()
    assert client.get("/api/v1/segments/BIG").status_code == 404
    assert client.get("/api/v1/segments").get_json()["segments"] == []
    assert segment_slugs(client, 1) == []
    assert client.patch("/api/v1/users/1/segments", json={"add": ["BIG"]}).status_code == 404
    converge(app)
    assert sql.value("SELECT count(*) FROM memberships") == 0
    assert sql.value("SELECT is_active FROM segments") is False
    assert sql.rows(
        "SELECT h.reason, h.at = s.deleted_at, count(*) FROM membership_history h"
        " JOIN segments s USING (segment_id) WHERE h.operation = 'removed' GROUP BY 1, 2"
    ) == [("segment_deleted", True, MEMBERS)]


def test_a_deleted_slug_can_be_created_again_while_the_old_members_still_leave(app, client, sql):
    create_segment(client, "A")
    change_segments(client, 1000, add=["A"])
    assert client.delete("/api/v1/segments/A").status_code == 204
    create_segment(client, "A")
    assert segment_slugs(client, 1000) == []
    change_segments(client, 1000, add=["A"])
    assert segment_slugs(client, 1000) == ["A"]
    converge(app)
    assert segment_slugs(client, 1000) == ["A"]
    assert_history_replays_to_current_state(sql)


def test_members_leaving_a_deleted_segment_end_at_the_deletion_or_their_earlier_expiry(
    app, client, sql
):
    """A user's change, the expiry job or a user's deletion may end a leaving member before the
    chunks do: whoever ends it, no row is dated after the deletion."""
    create_segment(client, "A")
    for user_id in (1, 2, 3, 4):
        change_segments(client, user_id, add=[{"slug": "A", "ttl_seconds": 3600}])
    assert client.delete("/api/v1/segments/A").status_code == 204
    deleted_at = sql.value("SELECT deleted_at FROM segments")
    # User 1's membership ran out just before the deletion, user 2's just after; nobody has
    # ended either yet.
    sql.execute(
        "UPDATE memberships SET expires_at = %s"
        " + CASE user_id WHEN 1 THEN interval '-1 microsecond' ELSE interval '1 microsecond' END"
        " WHERE user_id IN (1, 2)",
        (deleted_at,),
    )
    create_segment(client, "B")
    change_segments(client, 2, add=["B"])  # settles the user's expiries
    assert client.delete("/api/v1/users/3").status_code == 204
    converge(app)
    rows = sql.rows(
        "SELECT user_id, reason, at FROM membership_history"
        " WHERE operation = 'removed' ORDER BY user_id"
    )
    assert [(user_id, reason) for user_id, reason, _ in rows] == [
        (1, "expired"),
        (2, "segment_deleted"),
        (3, "segment_deleted"),
        (4, "segment_deleted"),
    ]
    assert all(at <= deleted_at for _, _, at in rows)
    assert [at for user_id, _, at in rows if user_id != 1] == [deleted_at] * 3
    assert_history_replays_to_current_state(sql)
