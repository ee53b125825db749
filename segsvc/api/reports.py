"""/api/v1/reports: the membership history as CSV, streamed, and links to it."""

import csv
import io
import threading
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, url_for
from flask.sansio.blueprints import BlueprintSetupState

from .. import expiry, metrics, reports, schemas, segments
from ..auth import allowed_for_read
from ..db import get_pool
from ..errors import TooManyReports
from ..openapi import operation
from . import dump, load_body, load_query

bp = Blueprint("reports", __name__, url_prefix="/api/v1/reports")

TAG = "reports"
PAGE_ROWS = 5000
STREAM_SLOTS_KEY = "segsvc.report_stream_slots"
# Rows locked by a concurrent expiry run are waited for at most this long before the report.
SETTLE_WAIT_SECONDS = 5.0


@bp.record_once
def _create_stream_slots(state: BlueprintSetupState) -> None:
    """Report downloads can last as long as their clients read: a bounded number per worker
    leaves threads for every other request."""
    limit = state.app.config["SEGSVC"].report_streams_max
    state.app.extensions[STREAM_SLOTS_KEY] = threading.BoundedSemaphore(limit)


class StreamSlot:
    """A download's claim on one of the worker's report slots, given back exactly once: when
    its CSV has been read to the end, or when the server closes the response (the client went
    away, or the body was never read, as for HEAD), whichever comes first."""

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self._slots = slots
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._slots.release()


def _period(request: dict[str, Any]) -> reports.ReportPeriod:
    start = request["start"]
    end = request.get("end", start)
    return reports.ReportPeriod(start[0], start[1], end[0], end[1])


def _csv_chunks(
    header: tuple, chunks: Iterator[list[tuple]], first: list[tuple], slot: StreamSlot
) -> Iterator[bytes]:
    try:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=";", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(first)
        metrics.REPORT_ROWS_STREAMED.inc(len(first))
        yield buffer.getvalue().encode()
        for rows in chunks:
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(rows)
            metrics.REPORT_ROWS_STREAMED.inc(len(rows))
            yield buffer.getvalue().encode()
    finally:
        slot.release()


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
    stream_slots: threading.BoundedSemaphore = current_app.extensions[STREAM_SLOTS_KEY]
    if not stream_slots.acquire(blocking=False):
        raise TooManyReports(
            f"{config.report_streams_max} report downloads are running on this worker; retry later."
        )
    slot = StreamSlot(stream_slots)
    # Errors before the first row still become problem responses.
    try:
        expiry.settle_all_due(pool, config.expiry_batch_size, SETTLE_WAIT_SECONDS)
        segments.settle_deleted_segments(pool, config.rollout_chunk_users, SETTLE_WAIT_SECONDS)
        pages = reports.history_report(pool, period, user_id, PAGE_ROWS)
        first = next(pages, [])
    except BaseException:
        slot.release()
        raise

    filename = f"segsvc-history-{period.label()}"
    if user_id is not None:
        filename += f"-user-{user_id}"
    response = Response(
        _csv_chunks(reports.CSV_HEADER, pages, first, slot),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )
    response.call_on_close(slot.release)
    return response


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
