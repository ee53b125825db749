"""Small helpers the tests share: API calls and reads of the stored history."""

from typing import Any

from flask.testing import FlaskClient


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
    """Per (user, segment id) pair the history alternates added/removed, starting with added,
    and ends in `added` exactly when the membership exists now."""
    events: dict[tuple[int, int], list[str]] = {}
    for user_id, segment_id, operation in sql.rows(
        "SELECT user_id, segment_id, operation FROM membership_history ORDER BY at, history_id"
    ):
        events.setdefault((user_id, segment_id), []).append(operation)
    for pair, operations in events.items():
        expected = ["added", "removed"] * len(operations)
        assert operations == expected[: len(operations)], (pair, operations)
    members = set(sql.rows("SELECT user_id, segment_id FROM memberships"))
    ended_added = {pair for pair, operations in events.items() if operations[-1] == "added"}
    assert members == ended_added
