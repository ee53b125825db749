"""The schema itself guards the invariants, whatever the application does."""

import psycopg2
import pytest
from support import change_segments, converge, create_segment


def test_migrations_create_the_expected_tables(sql):
    tables = sql.rows(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_name NOT LIKE '\\_yoyo%%'"
        " AND table_name NOT LIKE 'yoyo%%' ORDER BY table_name"
    )
    assert tables == [
        ("auto_exclusions",),
        ("console_sign_outs",),
        ("membership_history",),
        ("memberships",),
        ("rollouts",),
        ("segment_events",),
        ("segments",),
        ("users",),
    ]


def test_a_segment_with_members_cannot_be_marked_deleted(client, sql):
    create_segment(client, "A")
    change_segments(client, 1000, add=["A"])
    with pytest.raises(psycopg2.errors.ForeignKeyViolation):
        sql.execute("UPDATE segments SET deleted_at = now(), is_active = false")


def test_no_membership_can_point_at_an_emptied_deleted_segment(client, sql):
    create_segment(client, "A")
    change_segments(client, 1000, add=["A"])
    client.delete("/api/v1/segments/A")
    converge(client.application)
    assert sql.value("SELECT is_active FROM segments") is False
    with pytest.raises(psycopg2.errors.ForeignKeyViolation):
        sql.execute(
            "INSERT INTO memberships (user_id, segment_id, added_at)"
            " SELECT 1000, segment_id, now() FROM segments"
        )


def test_two_active_segments_cannot_share_a_slug(client, sql):
    create_segment(client, "A")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        sql.execute("INSERT INTO segments (slug, created_at) VALUES ('A', now())")


def test_a_membership_is_stored_once_per_user_and_segment(client, sql):
    create_segment(client, "A")
    change_segments(client, 1000, add=["A"])
    with pytest.raises(psycopg2.errors.UniqueViolation):
        sql.execute("INSERT INTO memberships (user_id, segment_id, added_at) SELECT 1000, 1, now()")


def test_history_accepts_only_known_operations_and_reasons(client, sql):
    create_segment(client, "A")
    with pytest.raises(psycopg2.errors.CheckViolation):
        sql.execute(
            "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
            " VALUES (1, 1, 'added', 'because', now())"
        )


def test_the_read_path_uses_the_membership_primary_key(client, sql):
    sql.execute("SET enable_seqscan = off")
    plan = "\n".join(
        row[0]
        for row in sql.rows(
            "EXPLAIN SELECT s.slug FROM memberships m JOIN segments s USING (segment_id)"
            " WHERE m.user_id = 1000"
        )
    )
    assert "memberships_pkey" in plan


def test_a_rollout_belongs_to_a_segment_and_cannot_finish_before_it_started(client, sql):
    create_segment(client, "A", auto_percent=10)
    with pytest.raises(psycopg2.errors.CheckViolation):
        sql.execute("UPDATE rollouts SET finished_at = started_at - interval '1 second'")
    with pytest.raises(psycopg2.errors.ForeignKeyViolation):
        sql.execute("INSERT INTO rollouts (segment_id, started_at) VALUES (999, now())")
