"""/api/v1/reports: the membership history as CSV, streamed, and links to it."""

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, url_for

from .. import expiry, reports, schemas, segments
from ..auth import allowed_for_read
from ..db import get_pool
from ..openapi import operation
from . import dump, load_body, load_query
from .downloads import csv_download

bp = Blueprint("reports", __name__, url_prefix="/api/v1/reports")

TAG = "reports"
PAGE_ROWS = 5000
# Rows locked by a concurrent expiry run are waited for at most this long before the report.
SETTLE_WAIT_SECONDS = 5.0
PARAMETERS = (
    "`from` and `to`: a month (`YYYY-MM`) or a day (`YYYY-MM-DD`) in UTC, included whole, or an "
    "RFC 3339 timestamp with an offset (`2023-08-14T09:30:00Z`), `from` included and `to` "
    "excluded; forms may be mixed. Without `to`, a month or a day is the whole period, and an "
    "instant `from` runs up to the report's start. `to` must end after `from` begins. "
    "`segment`: only the rows of the segments that ever had that slug, deleted ones included "
    "(`segment_id` tells them apart); `user_id`: only that user's rows; both may be given. "
    "`delimiter`: `;` (default) or `,`."
)


def _span_end(request: dict[str, Any]) -> schemas.TimeSpan | None:
    """`to`, or its default: a month or a day `from` itself; none after an instant."""
    start = request["start"]
    return request.get("end", None if start.is_instant else start)


def _report_filter(request: dict[str, Any]) -> reports.ReportFilter:
    end = _span_end(request)
    return reports.ReportFilter(
        start=request["start"].first,
        end=None if end is None else end.after,
        user_id=request.get("user_id"),
        slug=request.get("segment"),
    )


def _filename(request: dict[str, Any]) -> str:
    end = _span_end(request)
    first, last = request["start"].text, "now" if end is None else end.text
    name = "segsvc-history-" + (first if first == last else f"{first}_{last}").replace(":", "")
    if request.get("segment") is not None:
        name += f"-segment-{request['segment']}"
    if request.get("user_id") is not None:
        name += f"-user-{request['user_id']}"
    return f"{name}.csv"


@bp.get("/history.csv")
@operation(
    "Download the membership history of a period as CSV",
    tag=TAG,
    query=schemas.HistoryReportQuerySchema,
    responses={200: None, 422: None},
    content_type="text/csv",
    description=(
        "Columns `user_id;segment;operation;at;reason;segment_id;actor`, with a header row, "
        "ordered by time: `at` is RFC 3339 UTC; `actor` is empty when none was recorded. "
        f"{PARAMETERS} Memberships that have expired, and members of deleted segments, are "
        "ended first (a wait of at most 5 s each), so they are in the report. The body is "
        "chunked: a download that fails midway ends without the final chunk. At most "
        "SEGSVC_REPORT_STREAMS_MAX downloads run at once per worker; beyond that, 503 "
        "`too_many_reports` with `Retry-After`."
    ),
)
def download_history() -> Response:
    return history_csv(load_query(schemas.HistoryReportQuerySchema))


def history_csv(request: dict[str, Any]) -> Response:
    """The download of a loaded HistoryReportQuerySchema: the API's, and the web console's."""
    report = _report_filter(request)
    config = current_app.config["SEGSVC"]
    pool = get_pool(current_app)

    def open_pages() -> Iterator[list[tuple]]:
        expiry.settle_all_due(pool, config.expiry_batch_size, SETTLE_WAIT_SECONDS)
        segments.settle_deleted_segments(pool, config.rollout_chunk_users, SETTLE_WAIT_SECONDS)
        return reports.history_report(pool, report, PAGE_ROWS)

    return csv_download(
        reports.CSV_HEADER, open_pages, _filename(request), delimiter=request["delimiter"]
    )


@bp.post("")
@operation(
    "Get a link to the CSV history report of a period",
    tag=TAG,
    body=schemas.ReportRequestSchema,
    responses={201: schemas.ReportLinkSchema, 400: None, 413: None, 415: None, 422: None},
    uses_database=False,
    description=(
        f"The body takes the download's parameters. {PARAMETERS} The link writes `to` out "
        "for a month or a day, and an instant in UTC. Any replica serves the link: nothing is "
        "stored, the CSV is made on download. The link starts with SEGSVC_PUBLIC_URL when it is "
        "set, else it is relative (path and query). A read token may ask for it, and the link "
        "carries no secret: the caller sends its token."
    ),
)
@allowed_for_read
def create_report_link() -> Response:
    request = load_body(schemas.ReportRequestSchema)
    end = _span_end(request)
    arguments: dict[str, Any] = {"from": request["start"].text}
    if end is not None:
        arguments["to"] = end.text
    for name in ("segment", "user_id"):
        if request.get(name) is not None:
            arguments[name] = request[name]
    if request["delimiter"] != ";":
        arguments["delimiter"] = request["delimiter"]
    # Never from the request's Host header, which the client chooses.
    url = (current_app.config["SEGSVC"].public_url or "") + url_for(
        "reports.download_history", **arguments
    )
    return dump(schemas.ReportLinkSchema, {"url": url}, status=201, Location=url)
