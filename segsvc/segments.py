"""Segment operations. Each function runs inside the caller's transaction."""

import time
from decimal import Decimal
from typing import Any

from psycopg2.extensions import connection as Connection

from . import queries, read_cache, rollout
from .db import ConnectionPool, single_statement, transaction
from .errors import SegmentExists, SegmentNotFound


def create_segment(
    connection: Connection, slug: str, description: str | None, auto_percent: Decimal
) -> dict[str, Any]:
    """Creates the segment; with a percentage, its rollout starts and converges in the
    background (see segsvc.rollout), so this answers at once."""
    created = queries.fetch_one(
        connection, "create_segment", slug=slug, description=description, auto_percent=auto_percent
    )
    if created is None:
        raise SegmentExists(f"An active segment {slug!r} already exists.", slug=slug)
    if auto_percent:
        read_cache.note_everyone(connection)  # unregistered ids read the percentage
        rollout.restart_rollout(connection, created["segment_id"])
    else:
        rollout.create_unstarted_rollout(connection, created["segment_id"])
    return get_segment(connection, slug)


def not_found(slug: str) -> SegmentNotFound:
    """No active segment has the slug: every route's 404 for it."""
    return SegmentNotFound(f"There is no active segment {slug!r}.", slug=slug)


def list_segments(connection: Connection, include_deleted: bool) -> list[dict[str, Any]]:
    rows = queries.fetch_all(
        connection, "find_segments", include_deleted=include_deleted, slug=None
    )
    return [_with_rollout(row) for row in rows]


def get_segment(connection: Connection, slug: str) -> dict[str, Any]:
    segment = queries.fetch_one(connection, "find_segments", include_deleted=False, slug=slug)
    if segment is None:
        raise not_found(slug)
    return _with_rollout(segment)


def _with_rollout(row: dict[str, Any]) -> dict[str, Any]:
    """The segment with its `rollout`: None for a segment whose percentage was never set."""
    started_at = row.pop("rollout_started_at")
    finished_at = row.pop("rollout_finished_at")
    users_left = row.pop("rollout_users_left")
    row["rollout"] = None
    if started_at is not None:
        row["rollout"] = {
            "target_percent": row["auto_percent"],
            "state": "converging" if finished_at is None else "done",
            "users_left": users_left,
            "started_at": started_at,
            "finished_at": finished_at,
        }
    return row


def segment_events(
    connection: Connection, slug: str | None, after: int, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of audit events in order, of every segment that ever had `slug` (all segments'
    when None), and the `after` of the next page (None when this is the last)."""
    if slug is None:
        events = queries.fetch_all(connection, "segment_events", after=after, limit=limit)
    else:
        if not queries.fetch_one(connection, "slug_ever_used", slug=slug)["used"]:
            raise SegmentNotFound(f"No segment ever had the slug {slug!r}.", slug=slug)
        events = queries.fetch_all(connection, "slug_events", slug=slug, after=after, limit=limit)
    if len(events) > limit:
        return events[:limit], events[limit - 1]["event_id"]
    return events, None


def segment_members(
    connection: Connection, slug: str, after: int, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the active members in user order, and the `after` of the next page (None
    when this is the last)."""
    segment = queries.fetch_one(connection, "active_segment_id", slug=slug)
    if segment is None:
        raise not_found(slug)
    members = queries.fetch_all(
        connection, "segment_members", segment_id=segment["segment_id"], after=after, limit=limit
    )
    if len(members) > limit:
        return members[:limit], members[limit - 1]["user_id"]
    return members, None


def update_segment(connection: Connection, slug: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Changes the description and/or the percentage; a new percentage restarts the segment's
    rollout, which converges in the background, so this answers at once."""
    segment = _lock_active_segment(connection, slug, with_rollout="auto_percent" in changes)
    new_percent = changes.get("auto_percent", segment["auto_percent"])
    ramps = new_percent != segment["auto_percent"]
    at = queries.change_time(connection)
    if ramps:
        # Under the old percentage: an expiry inside its range excludes the user from it.
        _settle_expired(connection, segment["segment_id"], at)
    queries.execute(
        connection,
        "update_segment",
        segment_id=segment["segment_id"],
        auto_percent=new_percent,
        description=changes.get("description", segment["description"]),
        at=at,
    )
    if ramps:
        read_cache.note_everyone(connection)  # unregistered ids read the percentage
        rollout.restart_rollout(connection, segment["segment_id"])
    return get_segment(connection, slug)


def delete_segment(connection: Connection, slug: str) -> None:
    """Marks the segment deleted, which takes it out of reads, listings and changes at once, and
    ends its rollout; its members leave in chunks afterwards (`remove_members_of_deleted`),
    each dated at the deletion. Answers at once whatever the segment's size.

    The segment row stays locked until commit, so a membership change that names this segment
    either finishes first or sees it gone.
    """
    segment_id = _lock_active_segment(connection, slug, with_rollout=True)["segment_id"]
    at = queries.change_time(connection)
    queries.execute(connection, "mark_segment_deleted", segment_id=segment_id, at=at)
    read_cache.note_everyone(connection)
    rollout.end_rollout(connection, segment_id, at)


def remove_members_of_deleted(
    pool: ConnectionPool, chunk_members: int, budget_seconds: float
) -> int:
    """Removes members of deleted segments, a chunk per transaction, until none is left or the
    budget is spent; returns how many left. Safe in any number of workers and replicas at once:
    a segment is emptied by one at a time (its row lock), and locked memberships are skipped."""
    deadline = time.monotonic() + budget_seconds
    removed = 0
    while time.monotonic() < deadline:
        with transaction(pool) as connection:
            segment = queries.fetch_one(connection, "claim_leaving_segment")
            if segment is None:
                return removed
            left = queries.execute(
                connection,
                "remove_leaving_members",
                segment_id=segment["segment_id"],
                deleted_at=segment["deleted_at"],
                chunk_members=chunk_members,
            )
            emptied = queries.fetch_one(
                connection, "deactivate_left_segment", segment_id=segment["segment_id"]
            )
        removed += left
        if not left and emptied is None:
            return removed  # only members others hold are left: a later run takes them
    return removed


def settle_deleted_segments(pool: ConnectionPool, chunk_members: int, wait_seconds: float) -> None:
    """Lets every deleted segment's members leave, waiting (bounded) for chunks others run.
    A report calls this first, so that it reads the same whenever the job runs."""
    deadline = time.monotonic() + wait_seconds
    while True:
        remove_members_of_deleted(pool, chunk_members, max(deadline - time.monotonic(), 0.0))
        with single_statement(pool) as connection:
            remain = queries.fetch_one(connection, "leaving_segments_remain")["remain"]
        if not remain or time.monotonic() >= deadline:
            return
        time.sleep(0.02)


def _lock_active_segment(connection: Connection, slug: str, with_rollout: bool) -> dict[str, Any]:
    """The segment's row lock; `with_rollout` first takes its rollout's (the lock order of
    segsvc.rollout), waiting for a chunk in progress or another change. Both by the id found
    first: a segment deleted meanwhile is looked up again by its slug, which may name a new one.
    """
    while True:
        found = queries.fetch_one(connection, "active_segment_id", slug=slug)
        if found is None:
            raise not_found(slug)
        if with_rollout:
            rollout.lock_rollout(connection, found["segment_id"])
        segment = queries.fetch_one(
            connection, "lock_active_segment", segment_id=found["segment_id"]
        )
        if segment is not None:
            return segment


def _settle_expired(connection: Connection, segment_id: int, at: Any) -> None:
    """Ends the segment's expired memberships at their expiry time, before changing it."""
    queries.execute(connection, "settle_expired_segment_memberships", segment_id=segment_id, at=at)
