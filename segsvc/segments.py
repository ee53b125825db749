"""Segment operations. Each function runs inside the caller's transaction."""

from typing import Any

from psycopg2.extensions import connection as Connection

from . import queries
from .errors import SegmentExists, SegmentNotFound


def create_segment(connection: Connection, slug: str, description: str | None) -> dict[str, Any]:
    segment = queries.fetch_one(connection, "create_segment", slug=slug, description=description)
    if segment is None:
        raise SegmentExists(f"An active segment {slug!r} already exists.", slug=slug)
    return segment


def list_segments(connection: Connection, include_deleted: bool) -> list[dict[str, Any]]:
    return queries.fetch_all(
        connection, "find_segments", include_deleted=include_deleted, slug=None
    )


def get_segment(connection: Connection, slug: str) -> dict[str, Any]:
    segment = queries.fetch_one(connection, "find_segments", include_deleted=False, slug=slug)
    if segment is None:
        raise SegmentNotFound(f"There is no active segment {slug!r}.", slug=slug)
    return segment


def delete_segment(connection: Connection, slug: str) -> None:
    """Every member leaves (a history row each), then the segment is marked deleted.

    The segment row stays locked until commit, so a membership change that names this
    segment either finishes first (and its members are removed here) or sees it gone.
    """
    locked = queries.fetch_one(connection, "lock_active_segment", slug=slug)
    if locked is None:
        raise SegmentNotFound(f"There is no active segment {slug!r}.", slug=slug)
    segment_id = locked["segment_id"]
    at = queries.fetch_one(connection, "change_time")["at"]
    queries.execute(connection, "settle_expired_segment_memberships", segment_id=segment_id, at=at)
    queries.execute(connection, "remove_all_segment_members", segment_id=segment_id, at=at)
    queries.execute(connection, "mark_segment_deleted", segment_id=segment_id, at=at)
