"""/api/v1/reports: the membership history as CSV, streamed, and links to it."""

import csv
import io
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, url_for

from .. import expiry, metrics, reports, schemas
from ..auth import allowed_for_read
from ..db import get_pool
from ..openapi import operation
from . import dump, load_body, load_query

bp = Blueprint("reports", __name__, url_prefix="/api/v1/reports")

TAG = "reports"
CHUNK_ROWS = 5000
# Rows locked by a concurrent expiry run are waited for at most this long before the report.
SETTLE_WAIT_SECONDS = 5.0


def _period(request: dict[str, Any]) -> reports.ReportPeriod:
    start = request["start"]
    end = request.get("end", start)
    return reports.ReportPeriod(start[0], start[1], end[0], end[1])


def _csv_chunks(
    header: tuple, chunks: Iterator[list[tuple]], first: list[tuple]
) -> Iterator[bytes]:
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
        "Memberships that have expired are ended first, so they are in the report."
    ),
)
def download_history() -> Response:
    request = load_query(schemas.HistoryReportQuerySchema)
    period = _period(request)
    user_id = request.get("user_id")
    config = current_app.config["SEGSVC"]
    pool = get_pool(current_app)
    expiry.settle_all_due(pool, config.expiry_batch_size, SETTLE_WAIT_SECONDS)

    # The stream owns its connection until the client has read it all or gone away; errors
    # before the first row still become problem responses.
    connection = pool.acquire()
    try:
        chunks = reports.history_report(connection, period, user_id, CHUNK_ROWS)
        first = next(chunks, [])
    except BaseException:
        connection.rollback()
        pool.release(connection)
        raise

    def finish() -> None:
        if not connection.closed:
            connection.rollback()
        pool.release(connection)

    filename = f"segsvc-history-{period.label()}"
    if user_id is not None:
        filename += f"-user-{user_id}"
    response = Response(
        _csv_chunks(reports.CSV_HEADER, chunks, first),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
    )
    response.call_on_close(finish)
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
        "A read token may ask for it, and the link carries no secret: the caller sends its token."
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
    url = url_for("reports.download_history", _external=True, **arguments)
    return dump(schemas.ReportLinkSchema, {"url": url}, status=201, Location=url)
