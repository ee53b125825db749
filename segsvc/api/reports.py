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


def _period(request: dict[str, Any]) -> reports.ReportPeriod:
    start = request["start"]
    end = request.get("end", start)
    return reports.ReportPeriod(start[0], start[1], end[0], end[1])


@bp.get("/history.csv")
@operation(
    "Download the membership history of a period as CSV",
    tag=TAG,
    query=schemas.HistoryReportQuerySchema,
    responses={200: None, 422: None},
    content_type="text/csv",
    description=(
        "Columns `user_id;segment;operation;at;reason`, with a header row, ordered by time. "
        "`from`/`to` are UTC months (YYYY-MM), both included; without `user_id`, every user. "
        "Memberships that have expired, and members of deleted segments, are ended first (a "
        "wait of at most 5 s each), so they are in the report. The body "
        "is chunked: a download that fails midway ends without the final chunk. At most "
        "SEGSVC_REPORT_STREAMS_MAX downloads run at once per worker; beyond that, 503 "
        "`too_many_reports` with `Retry-After`."
    ),
)
def download_history() -> Response:
    request = load_query(schemas.HistoryReportQuerySchema)
    period = _period(request)
    user_id = request.get("user_id")
    config = current_app.config["SEGSVC"]
    pool = get_pool(current_app)

    def open_pages() -> Iterator[list[tuple]]:
        expiry.settle_all_due(pool, config.expiry_batch_size, SETTLE_WAIT_SECONDS)
        segments.settle_deleted_segments(pool, config.rollout_chunk_users, SETTLE_WAIT_SECONDS)
        return reports.history_report(pool, period, user_id, PAGE_ROWS)

    filename = f"segsvc-history-{period.label()}"
    if user_id is not None:
        filename += f"-user-{user_id}"
    return csv_download(reports.CSV_HEADER, open_pages, f"{filename}.csv")


@bp.post("")
@operation(
    "Get a link to the CSV history report of a period",
    tag=TAG,
    body=schemas.ReportRequestSchema,
    responses={201: schemas.ReportLinkSchema, 400: None, 413: None, 415: None, 422: None},
    uses_database=False,
    description=(
        "Any replica serves the link: nothing is stored, the CSV is made on download. "
        "The link starts with SEGSVC_PUBLIC_URL when it is set, else it is relative (path and "
        "query). A read token may ask for it, and the link carries no secret: the caller sends "
        "its token."
    ),
)
@allowed_for_read
def create_report_link() -> Response:
    request = load_body(schemas.ReportRequestSchema)
    period = _period(request)
    arguments: dict[str, Any] = {
        "from": f"{period.from_year:04d}-{period.from_month:02d}",
        "to": f"{period.to_year:04d}-{period.to_month:02d}",
    }
    if request.get("user_id") is not None:
        arguments["user_id"] = request["user_id"]
    # Never from the request's Host header, which the client chooses.
    url = (current_app.config["SEGSVC"].public_url or "") + url_for(
        "reports.download_history", **arguments
    )
    return dump(schemas.ReportLinkSchema, {"url": url}, status=201, Location=url)
