"""/api/v1/segments: create, list, read and delete segments."""

from flask import Blueprint, Response, url_for

from .. import schemas, segments
from ..db import get_connection
from ..openapi import operation
from . import dump, load_body, load_path, load_query, no_content

bp = Blueprint("segments", __name__, url_prefix="/api/v1/segments")

TAG = "segments"


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
