"""Segment operations. Each function runs inside the caller's transaction."""

from decimal import Decimal
from typing import Any

from psycopg2.extensions import connection as Connection

from . import queries, rollout
from .errors import SegmentExists, SegmentNotFound


def create_segment(
    connection: Connection, slug: str, description: str | None, auto_percent: Decimal
) -> dict[str, Any]:
    """Creates the segment; with a percentage, every registered user it selects joins it.

    Registrations wait meanwhile (they could not see this segment, nor it their users).
    """
    if auto_percent:
        queries.fetch_one(connection, "lock_user_set_exclusive")
    created = queries.fetch_one(
        connection, "create_segment", slug=slug, description=description, auto_percent=auto_percent
    )
    if created is None:
        raise SegmentExists(f"An active segment {slug!r} already exists.", slug=slug)
    if auto_percent:
        at = queries.change_time(connection)
        rollout.change_percentage(connection, created, 0, auto_percent, at)
    return get_segment(connection, slug)


def list_segments(connection: Connection, include_deleted: bool) -> list[dict[str, Any]]:
    return queries.fetch_all(
        connection, "find_segments", include_deleted=include_deleted, slug=None
    )


def get_segment(connection: Connection, slug: str) -> dict[str, Any]:
    segment = queries.fetch_one(connection, "find_segments", include_deleted=False, slug=slug)
    if segment is None:
        raise SegmentNotFound(f"There is no active segment {slug!r}.", slug=slug)
    return segment


def segment_members(
    connection: Connection, slug: str, after: int, limit: int
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of the active members in user order, and the `after` of the next page (None
    when this is the last)."""
    segment = queries.fetch_one(connection, "active_segment_id", slug=slug)
    if segment is None:
        raise SegmentNotFound(f"There is no active segment {slug!r}.", slug=slug)
    members = queries.fetch_all(
        connection, "segment_members", segment_id=segment["segment_id"], after=after, limit=limit
    )
    if len(members) > limit:
        return members[:limit], members[limit - 1]["user_id"]
    return members, None


def update_segment(connection: Connection, slug: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Changes the description and/or the percentage; a new percentage ramps at once.

    Registrations wait while the percentage changes (a segment going from 0 % is invisible to
    their enrolment, and they are invisible to its ramp).
    """
    if "auto_percent" in changes:
        queries.fetch_one(connection, "lock_user_set_exclusive")
    segment = _lock_active_segment(connection, slug)
    new_percent = changes.get("auto_percent", segment["auto_percent"])
    queries.execute(
        connection,
        "update_segment",
        segment_id=segment["segment_id"],
        auto_percent=new_percent,
        description=changes.get("description", segment["description"]),
    )
    if new_percent != segment["auto_percent"]:
        at = queries.change_time(connection)
        _settle_expired(connection, segment["segment_id"], at)
        rollout.change_percentage(connection, segment, segment["auto_percent"], new_percent, at)
    return get_segment(connection, slug)


def delete_segment(connection: Connection, slug: str) -> None:
    """Every member leaves (a history row each), then the segment is marked deleted.

    The segment row stays locked until commit, so a membership change that names this
    segment either finishes first (and its members are removed here) or sees it gone.
    """
    segment_id = _lock_active_segment(connection, slug)["segment_id"]
    at = queries.change_time(connection)
    _settle_expired(connection, segment_id, at)
    queries.execute(connection, "remove_all_segment_members", segment_id=segment_id, at=at)
    queries.execute(connection, "mark_segment_deleted", segment_id=segment_id, at=at)


def _lock_active_segment(connection: Connection, slug: str) -> dict[str, Any]:
    segment = queries.fetch_one(connection, "lock_active_segment", slug=slug)
    if segment is None:
        raise SegmentNotFound(f"There is no active segment {slug!r}.", slug=slug)
    return segment


def _settle_expired(connection: Connection, segment_id: int, at: Any) -> None:
    """Ends the segment's expired memberships at their expiry time, before changing it."""
    queries.execute(connection, "settle_expired_segment_memberships", segment_id=segment_id, at=at)
