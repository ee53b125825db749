"""/api/v1/segments: create, list, read and delete segments, and change and export their
members."""

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, url_for

from .. import members, schemas, segments
from ..db import get_connection, get_pool
from ..openapi import operation
from . import dump, load_body, load_path, load_query, no_content
from .downloads import csv_download

bp = Blueprint("segments", __name__, url_prefix="/api/v1/segments")

TAG = "segments"
# Members per page of a CSV export, as a history report's page of rows (about 300 KB).
PAGE_ROWS = 5000


@bp.post("")
@operation(
    "Create a segment",
    tag=TAG,
    body=schemas.SegmentCreateSchema,
    responses={201: schemas.SegmentSchema, 400: None, 409: None, 413: None, 415: None, 422: None},
    description=(
        "A slug of a deleted segment may be used again; it makes a new segment. With "
        "`auto_percent`, that share of all user ids is selected: registered users join in the "
        "background (`rollout` shows the progress), users registered later join at once, and "
        "reads of unregistered ids include it."
    ),
)
def create_segment() -> Response:
    request = load_body(schemas.SegmentCreateSchema)
    segment = segments.create_segment(
        get_connection(), request["slug"], request["description"], request["auto_percent"]
    )
    location = url_for("segments.get_segment", slug=segment["slug"])
    return dump(schemas.SegmentSchema, segment, status=201, Location=location)


@bp.get("")
@operation(
    "List segments, ordered by slug",
    tag=TAG,
    query=schemas.SegmentListQuerySchema,
    responses={200: schemas.SegmentListSchema, 422: None},
)
def list_segments() -> Response:
    query = load_query(schemas.SegmentListQuerySchema)
    found = segments.list_segments(get_connection(), query["include_deleted"])
    return dump(schemas.SegmentListSchema, {"segments": found})


@bp.get("/<slug>")
@operation(
    "Read an active segment",
    tag=TAG,
    responses={200: schemas.SegmentSchema, 404: None, 422: None},
)
def get_segment(slug: str) -> Response:
    path = load_path(schemas.SegmentPathSchema, slug=slug)
    return dump(schemas.SegmentSchema, segments.get_segment(get_connection(), path["slug"]))


@bp.delete("/<slug>")
@operation(
    "Delete a segment; every member leaves it",
    tag=TAG,
    responses={204: None, 404: None, 422: None},
)
def delete_segment(slug: str) -> Response:
    path = load_path(schemas.SegmentPathSchema, slug=slug)
    segments.delete_segment(get_connection(), path["slug"])
    return no_content()


@bp.patch("/<slug>")
@operation(
    "Change a segment's description and/or percentage (ramp up or down)",
    tag=TAG,
    body=schemas.SegmentUpdateSchema,
    responses={200: schemas.SegmentSchema, 400: None, 404: None, 413: None, 415: None, 422: None},
    description=(
        "Answers at once. A new `auto_percent` restarts the segment's `rollout`, which converges "
        "in the background: raising it adds the registered users of the new bucket range, "
        "lowering it removes the automatic members now out of range. Manual memberships are "
        "never touched."
    ),
)
def update_segment(slug: str) -> Response:
    path = load_path(schemas.SegmentPathSchema, slug=slug)
    changes = load_body(schemas.SegmentUpdateSchema)
    segment = segments.update_segment(get_connection(), path["slug"], changes)
    return dump(schemas.SegmentSchema, segment)


@bp.get("/<slug>/events")
@operation(
    "Page through the audit events of every segment that ever had the slug",
    tag=TAG,
    query=schemas.EventsQuerySchema,
    responses={200: schemas.SegmentEventsSchema, 404: None, 422: None},
    description=(
        "Created, description changed, percentage changed, deleted: one event each, with the "
        "actor, the time, the request id and the values before and after, in order. Deleted "
        "segments included (`segment_id` tells apart segments that had the slug). 404 when no "
        "segment ever had it. Pass the answer's `next_after` as `after` for the next page."
    ),
)
def list_segment_events(slug: str) -> Response:
    path = load_path(schemas.SegmentPathSchema, slug=slug)
    query = load_query(schemas.EventsQuerySchema)
    events, next_after = segments.segment_events(
        get_connection(), path["slug"], query["after"], query["limit"]
    )
    return dump(schemas.SegmentEventsSchema, {"events": events, "next_after": next_after})


@bp.get("/<slug>/members")
@operation(
    "Page through a segment's active members in user order",
    tag=TAG,
    query=schemas.MembersQuerySchema,
    responses={200: schemas.MembersSchema, 404: None, 422: None},
    description="Pass the answer's `next_after` as `after` for the next page; null means done.",
)
def list_members(slug: str) -> Response:
    path = load_path(schemas.SegmentPathSchema, slug=slug)
    query = load_query(schemas.MembersQuerySchema)
    members, next_after = segments.segment_members(
        get_connection(), path["slug"], query.get("after", 0), query["limit"]
    )
    return dump(schemas.MembersSchema, {"members": members, "next_after": next_after})


@bp.post("/<slug>/members")
@operation(
    "Add and remove many users of a segment at once, all or nothing",
    tag=TAG,
    body=schemas.SegmentMembersChangeSchema,
    responses={
        200: schemas.SegmentMembersChangedSchema,
        400: None,
        404: None,
        413: None,
        415: None,
        422: None,
    },
    description=(
        "Up to 10,000 distinct user ids in `add` and `remove` together. An `add` item is a user "
        "id, or an object with `user_id` and at most one of `expires_at` (future) and "
        "`ttl_seconds`. Each id changes as `PATCH /api/v1/users/{user_id}/segments` adding or "
        "removing this segment would change it: ids not registered are registered (and join "
        "the percentage segments that select them), an added member keeps `added_at` and takes "
        "the expiry asked, a removal excludes the user from the segment's rollout, and every "
        "real change has its history row (reason `manual`). A repeated id, an id out of range "
        "or an expiry in the past is a 422 naming its index; nothing is applied."
    ),
)
def change_members(slug: str) -> Response:
    path = load_path(schemas.SegmentPathSchema, slug=slug)
    request = load_body(schemas.SegmentMembersChangeSchema)
    counts = members.change_segment_members(
        get_connection(), path["slug"], request["add"], request["remove"]
    )
    return dump(schemas.SegmentMembersChangedSchema, counts)


@bp.get("/<slug>/members.csv")
@operation(
    "Download every current member of a segment as CSV",
    tag=TAG,
    responses={200: None, 404: None, 422: None},
    content_type="text/csv",
    description=(
        "Columns `user_id;added_at;expires_at;source`, with a header row, in user order; "
        "expired memberships are left out, `expires_at` is empty for a permanent one. Streamed "
        "a page of users at a time, each page read when the client has taken the one before: "
        "a download that fails midway ends without the final chunk. Shares the "
        "SEGSVC_REPORT_STREAMS_MAX slots of history reports; beyond them, 503 "
        "`too_many_reports` with `Retry-After`."
    ),
)
def export_members(slug: str) -> Response:
    return members_csv(load_path(schemas.SegmentPathSchema, slug=slug)["slug"])


def members_csv(slug: str) -> Response:
    """The download of a segment's members: the API's, and the web console's."""
    pool = get_pool(current_app)

    def open_pages() -> Iterator[list[tuple]]:
        # The first page is read before the answer starts: an unknown segment is still a 404.
        return (_csv_rows(page) for page in members.member_pages(pool, slug, PAGE_ROWS))

    return csv_download(members.EXPORT_HEADER, open_pages, f"segment-{slug}-members.csv")


def _csv_rows(page: list[dict[str, Any]]) -> list[tuple]:
    """Times as the JSON API and the history report write them; no expiry is an empty cell."""
    return [
        (
            member["user_id"],
            schemas.format_timestamp(member["added_at"]),
            "" if member["expires_at"] is None else schemas.format_timestamp(member["expires_at"]),
            member["source"],
        )
        for member in page
    ]
