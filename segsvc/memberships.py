"""Reading and changing a user's segments. Each function runs inside the caller's transaction."""

from collections.abc import Sequence
from typing import Any

import psycopg2
from psycopg2.extensions import connection as Connection

from . import audit, queries, read_cache, users
from .errors import InputInvalid, SegmentNotFound, listed


def user_segments(connection: Connection, user_id: int) -> list[dict[str, Any]]:
    """The user's active segments; expired memberships are filtered out in the query. An id that
    is not registered gets the percentage segments that would enrol it now, computed, not stored."""
    return queries.fetch_prepared(connection, "user_segments", user_id=user_id)


def users_segments(
    connection: Connection, user_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """`user_segments` of each user, in one statement; a user with none maps to []."""
    found: dict[int, list[dict[str, Any]]] = {user_id: [] for user_id in user_ids}
    literal = "{" + ",".join(str(user_id) for user_id in user_ids) + "}"
    for row in queries.fetch_prepared(connection, "users_segments", user_ids=literal):
        found[row.pop("user_id")].append(row)
    return found


def user_history(connection: Connection, user_id: int, limit: int) -> list[dict[str, Any]]:
    """The user's `limit` latest joins and leaves, newest first."""
    return queries.fetch_all(connection, "user_history", user_id=user_id, limit=limit)


def change_user_segments(
    connection: Connection,
    user_id: int,
    add: Sequence[dict[str, Any]],
    remove: Sequence[str],
) -> list[dict[str, Any]]:
    """Applies the adds and removes all together or not at all; returns the resulting segments.

    One statement does it all (migrations/0006: lock order, change time, history). On a
    connection in autocommit that statement is the whole transaction, with its NOTIFY inside:
    one round trip. A user not registered yet is registered first, by the rules of any
    registration, in a transaction that then runs the same statement.
    """
    actor, request_id = getattr(connection, "audit_tags", (None, None))
    change = {
        "user_id": user_id,
        "actor": actor,
        "request_id": request_id,
        "add_slugs": [item["slug"] for item in add],
        "add_expires_at": [item.get("expires_at") for item in add],
        "add_ttl_seconds": [item.get("ttl_seconds") for item in add],
        "remove_slugs": list(remove),
    }
    if connection.autocommit:
        try:
            with read_cache.published_in_statement(connection, [user_id]) as notify:
                return _run_change(connection, change, notify)
        except _NotRegistered:
            connection.autocommit = False
            audit.tag_transaction(connection)
    users.lock_or_register_user(connection, user_id)
    read_cache.note_users(connection, [user_id])  # published at the transaction's commit
    return _run_change(connection, change, [])


class _NotRegistered(Exception):
    """The statement found no user row, and changed nothing."""


def _run_change(
    connection: Connection, change: dict[str, Any], notify: list[str]
) -> list[dict[str, Any]]:
    """The statement, its refusals turned into the API's errors."""
    try:
        return queries.fetch_prepared(connection, "change_user_segments", notify=notify, **change)
    except psycopg2.Error as error:
        detail = error.diag.message_detail or ""
        if error.pgcode == "SGU01":
            raise _NotRegistered() from None
        if error.pgcode == "SG404":
            raise _segments_not_found(detail.split(" ")) from None
        if error.pgcode == "SG422":
            raise past_expiries([int(index) for index in detail.split(",")]) from None
        raise


def past_expiries(indexes: Sequence[int]) -> InputInvalid:
    """The 422 of adds whose expiry is not after the change time, named by index in `add`."""
    return InputInvalid(
        {"add": {index: {"expires_at": ["Must be in the future."]} for index in indexes}}
    )


def _segments_not_found(unknown: list[str]) -> SegmentNotFound:
    shown = listed("slugs", unknown)
    more = f" and {shown['slugs_omitted']} more" if "slugs_omitted" in shown else ""
    return SegmentNotFound(f"No active segment for: {', '.join(shown['slugs'])}{more}.", **shown)
