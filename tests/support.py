"""Small helpers the tests share: API calls and reads of the stored history."""

from typing import Any

from flask.testing import FlaskClient

from benchmarks.consistency import history_violations
from segsvc import db, queries, rollout, segments


def create_segment(client: FlaskClient, slug: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/v1/segments", json={"slug": slug, **fields})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def change_segments(
    client: FlaskClient, user_id: int, add: list | None = None, remove: list | None = None
) -> Any:
    return client.patch(
        f"/api/v1/users/{user_id}/segments", json={"add": add or [], "remove": remove or []}
    )


def segment_slugs(client: FlaskClient, user_id: int) -> list[str]:
    response = client.get(f"/api/v1/users/{user_id}/segments")
    assert response.status_code == 200
    return [segment["slug"] for segment in response.get_json()["segments"]]


HISTORY_QUERY = """
SELECT h.user_id, s.slug, h.operation, h.reason, h.at
  FROM membership_history h JOIN segments s USING (segment_id)
 ORDER BY h.at, h.history_id
"""


def assert_history_replays_to_current_state(sql: Any) -> None:
    """Fails listing every way the history contradicts itself or the memberships."""
    assert history_violations(sql.rows) == []


def expire_membership(sql, user_id: int, slug: str, hours_ago: int = 1) -> None:
    """Moves a membership into the past so that it is expired now (no cleanup has run)."""
    sql.execute(
        "UPDATE memberships SET added_at = now() - %(ago)s * interval '1 hour' - interval '1 hour',"
        " expires_at = now() - %(ago)s * interval '1 hour'"
        " WHERE user_id = %(user_id)s"
        " AND segment_id = (SELECT segment_id FROM segments WHERE slug = %(slug)s"
        " AND deleted_at IS NULL)",
        {"ago": hours_ago, "user_id": user_id, "slug": slug},
    )
    sql.execute(
        "UPDATE membership_history SET at = at - %(ago)s * interval '1 hour' - interval '1 hour'"
        " WHERE user_id = %(user_id)s",
        {"ago": hours_ago, "user_id": user_id},
    )


def insert_due_memberships(sql, slug: str, count: int, first_user_id: int = 1) -> None:
    """`count` users in segment `slug`, each membership expired a little while ago, with the
    `added` history rows a PATCH would have written. Fast: one statement each."""
    params = {"slug": slug, "first": first_user_id, "last": first_user_id + count - 1}
    sql.execute(
        "INSERT INTO users (user_id, registered_at)"
        " SELECT id, now() - interval '1 day' FROM generate_series(%(first)s, %(last)s) AS id"
        " ON CONFLICT DO NOTHING",
        params,
    )
    sql.execute(
        "INSERT INTO memberships (user_id, segment_id, added_at, expires_at)"
        " SELECT id, s.segment_id, now() - interval '1 day',"
        "        now() - interval '1 hour' + (id %% 1000) * interval '1 second'"
        "   FROM generate_series(%(first)s, %(last)s) AS id, segments s"
        "  WHERE s.slug = %(slug)s AND s.deleted_at IS NULL",
        params,
    )
    sql.execute(
        "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
        " SELECT m.user_id, m.segment_id, 'added', 'manual', m.added_at"
        "   FROM memberships m JOIN segments s USING (segment_id)"
        "  WHERE s.slug = %(slug)s AND m.user_id BETWEEN %(first)s AND %(last)s",
        params,
    )


def converge(app: Any) -> None:
    """Runs the rollout job until every rollout has converged and every deleted segment is
    empty, as the scheduler does in every worker; fails if that does not happen."""
    pool = db.get_pool(app)
    for _ in range(10000):
        rollout.converge_rollouts(pool, chunk_users=1000, budget_seconds=5)
        segments.remove_members_of_deleted(pool, chunk_members=1000, budget_seconds=5)
        with db.single_statement(pool) as connection:
            converging = queries.fetch_one(connection, "count_converging_rollouts")["rollouts"]
            leaving = queries.fetch_one(connection, "leaving_segments_remain")["remain"]
        if not converging and not leaving:
            return
    raise AssertionError("the rollouts did not converge")


def register(client: FlaskClient, user_ids: Any) -> None:
    """Registers the ids through the API, 10,000 a request."""
    user_ids = list(user_ids)
    for start in range(0, len(user_ids), 10000):
        response = client.post("/api/v1/users", json={"user_ids": user_ids[start : start + 10000]})
        assert response.status_code == 200, response.get_json()


def members(sql, slug: str, source: str | None = None) -> set[int]:
    rows = sql.rows(
        "SELECT m.user_id FROM memberships m JOIN segments s USING (segment_id)"
        " WHERE s.slug = %s AND s.deleted_at IS NULL AND (%s::text IS NULL OR m.source = %s)",
        (slug, source, source),
    )
    return {user_id for (user_id,) in rows}


def selected(slug: str, user_ids, percent: float) -> set[int]:
    return {u for u in user_ids if rollout.bucket(slug, u) < rollout.bucket_limit(percent)}
