"""Many users' memberships of one segment: a change in bulk, and the export of every member."""

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from psycopg2.extensions import connection as Connection

from . import memberships, queries, read_cache, segments, users
from .db import ConnectionPool, single_statement

EXPORT_HEADER = ("user_id", "added_at", "expires_at", "source")


def change_segment_members(
    connection: Connection, slug: str, add: Sequence[dict[str, Any]], remove: Sequence[int]
) -> dict[str, int]:
    """Adds and removes the users all together or not at all, each as a PATCH of that user
    adding or removing this one segment would, in this transaction; registers (and enrols) the
    users not registered yet, as a PATCH registers its user. Returns the counts `added`,
    `renewed` and `removed`, and the segment's `member_count` after the change.

    Lock order, the one every writer follows: the users' rows in id order (locked or registered
    in one pass), the segment (shared), the users' memberships of it. The change time is read
    after all of them, so the history of each user and of the segment stays in time order.
    """
    if queries.fetch_one(connection, "active_segment_id", slug=slug) is None:
        raise segments.not_found(slug)  # before registering users for nothing
    user_ids = _array(sorted({item["user_id"] for item in add}.union(remove)))
    registered = [
        row["user_id"]
        for row in queries.fetch_all(connection, "lock_or_register_users", user_ids=user_ids)
    ]
    users.enroll_registered(connection, registered)
    segment = queries.fetch_one(connection, "lock_segment_of_members", slug=slug)
    if segment is None:
        raise segments.not_found(slug)  # deleted meanwhile
    queries.fetch_all(
        connection, "lock_segment_members", segment_id=segment["segment_id"], user_ids=user_ids
    )
    at = queries.change_time(connection)
    _reject_past_expiries(add, at)
    change = queries.fetch_one(
        connection,
        "change_segment_members",
        segment_id=segment["segment_id"],
        add_user_ids=_array(item["user_id"] for item in add),
        add_expires_at=_array(item.get("expires_at") for item in add),
        add_ttl_seconds=_array(item.get("ttl_seconds") for item in add),
        remove_user_ids=_array(remove),
        at=at,
    )
    read_cache.note_users(connection, change.pop("changed_user_ids"))
    change["member_count"] = segments.get_segment(connection, slug)["member_count"]
    return change


def member_pages(pool: ConnectionPool, slug: str, page_rows: int) -> Iterator[list[dict[str, Any]]]:
    """The segment's current members in user order, a page at a time (the first even if empty).

    Each page is read on a connection borrowed for it alone, in autocommit, as the history
    report's are: between pages the export holds no connection and no transaction, so a slow
    reader costs the database nothing. Pages are not one snapshot: each lists the members
    current when it is read, after the last user of the page before. A segment deleted
    meanwhile raises SegmentNotFound at the next page.
    """
    after: int | None = 0
    while after is not None:
        with single_statement(pool) as connection:
            page, after = segments.segment_members(connection, slug, after, page_rows)
        yield page


def _reject_past_expiries(add: Sequence[dict[str, Any]], at: Any) -> None:
    """Judged against the database clock, the one every stored time comes from, and named by
    index as a user's change names them."""
    past = [
        index
        for index, item in enumerate(add)
        if item.get("expires_at") is not None and item["expires_at"] <= at
    ]
    if past:
        raise memberships.past_expiries(past)


def _array(values: Iterable[Any]) -> str:
    """A PostgreSQL array literal of ids, numbers or times (None is NULL), bound as one string."""
    return "{" + ",".join(_array_element(value) for value in values) + "}"


def _array_element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, dt.datetime):
        return f'"{value.isoformat()}"'
    return str(value)
