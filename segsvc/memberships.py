"""Reading and changing a user's segments. Each function runs inside the caller's transaction."""

from collections.abc import Sequence
from typing import Any

from psycopg2.extensions import connection as Connection

from . import queries, read_cache, users
from .errors import InputInvalid, SegmentNotFound, listed


def user_segments(connection: Connection, user_id: int) -> list[dict[str, Any]]:
    """The user's active segments; expired memberships are filtered out in the query. An id that
    is not registered gets the percentage segments that would enrol it now, computed, not stored."""
    return queries.fetch_all(connection, "user_segments", user_id=user_id)


def users_segments(
    connection: Connection, user_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """`user_segments` of each user, in one statement; a user with none maps to []."""
    found: dict[int, list[dict[str, Any]]] = {user_id: [] for user_id in user_ids}
    literal = "{" + ",".join(str(user_id) for user_id in user_ids) + "}"
    for row in queries.fetch_all(connection, "users_segments", user_ids=literal):
        found[row.pop("user_id")].append(row)
    return found


def change_user_segments(
    connection: Connection,
    user_id: int,
    add: Sequence[dict[str, Any]],
    remove: Sequence[str],
) -> list[dict[str, Any]]:
    """Applies the adds and removes all together or not at all; returns the resulting segments.

    Lock order: the user row, the named segments (shared), the user's memberships. The change
    time is read after all of them, so the history of one user or one segment is in time order.
    """
    users.lock_or_register_user(connection, user_id)
    read_cache.note_users(connection, [user_id])
    slugs = [item["slug"] for item in add] + list(remove)
    found = queries.fetch_all(connection, "lock_active_segments_by_slug", slugs=slugs)
    segment_ids = {row["slug"]: row["segment_id"] for row in found}
    unknown = sorted(set(slugs) - segment_ids.keys())
    if unknown:
        raise _segments_not_found(unknown)

    queries.fetch_all(connection, "lock_user_memberships", user_id=user_id)
    at = queries.change_time(connection)
    _reject_past_expiries(add, at)
    queries.execute(connection, "settle_expired_user_memberships", user_id=user_id, at=at)
    if remove:
        queries.execute(
            connection,
            "remove_user_memberships",
            user_id=user_id,
            segment_ids=[segment_ids[slug] for slug in remove],
            at=at,
        )
    if add:
        queries.execute(
            connection,
            "add_user_memberships",
            user_id=user_id,
            segment_ids=[segment_ids[item["slug"]] for item in add],
            expires_at=[item.get("expires_at") for item in add],
            ttl_seconds=[item.get("ttl_seconds") for item in add],
            at=at,
        )
    return user_segments(connection, user_id)


def _segments_not_found(unknown: list[str]) -> SegmentNotFound:
    shown = listed("slugs", unknown)
    more = f" and {shown['slugs_omitted']} more" if "slugs_omitted" in shown else ""
    return SegmentNotFound(f"No active segment for: {', '.join(shown['slugs'])}{more}.", **shown)


def _reject_past_expiries(add: Sequence[dict[str, Any]], at: Any) -> None:
    """Judged against the database clock, the one every stored time comes from."""
    errors = {
        index: {"expires_at": ["Must be in the future."]}
        for index, item in enumerate(add)
        if item.get("expires_at") is not None and item["expires_at"] <= at
    }
    if errors:
        raise InputInvalid({"add": errors})
