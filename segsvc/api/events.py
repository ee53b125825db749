"""/api/v1/events: the audit log of every segment-level change."""

from flask import Blueprint, Response

from .. import schemas, segments
from ..db import get_connection
from ..openapi import operation
from . import dump, load_query

bp = Blueprint("events", __name__, url_prefix="/api/v1/events")


@bp.get("")
@operation(
    "Page through the audit events of all segments",
    tag="segments",
    query=schemas.EventsQuerySchema,
    responses={200: schemas.SegmentEventsSchema, 422: None},
    description=(
        "Every segment-level change in order (see `GET /api/v1/segments/{slug}/events`). Pass "
        "the answer's `next_after` as `after` for the next page; null means done."
    ),
)
def list_events() -> Response:
    query = load_query(schemas.EventsQuerySchema)
    events, next_after = segments.segment_events(
        get_connection(), None, query["after"], query["limit"]
    )
    return dump(schemas.SegmentEventsSchema, {"events": events, "next_after": next_after})
