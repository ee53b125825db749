"""The history report, read a page at a time: flat memory at any size, nothing held in between."""

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from . import queries
from .db import ConnectionPool, single_statement

CSV_HEADER = ("user_id", "segment", "operation", "at", "reason", "segment_id", "actor")


@dataclass(frozen=True)
class ReportFilter:
    """Which rows: `start` <= at < `end` (instants; no `end`: up to the report's start), and,
    when given, one user's and one slug's (every segment that ever had it)."""

    start: dt.datetime
    end: dt.datetime | None = None
    user_id: int | None = None
    slug: str | None = None


def history_report(
    pool: ConnectionPool, report: ReportFilter, page_rows: int
) -> Iterator[list[tuple]]:
    """The rows (user_id, slug, operation, at, reason, segment_id, actor) in time order, by page.

    Each page is one short statement on a connection borrowed for it alone: between pages the
    report holds no connection and no transaction, so a slow reader costs the database nothing
    and no server timeout can end the download midway. The report holds every row recorded
    before it started; rows of changes still in flight then may or may not be in it.
    """
    with single_statement(pool) as connection:
        as_of = queries.change_time(connection)
        segment_ids = None
        if report.slug is not None:
            rows = queries.fetch_rows(connection, "report_segment_ids", slug=report.slug)
            segment_ids = [segment_id for (segment_id,) in rows]
            if not segment_ids:
                return
    position = (None, None)
    while position is not None:
        page, position = _next_page(pool, report, as_of, segment_ids, position, page_rows)
        if page:
            yield page


def _next_page(
    pool: ConnectionPool,
    report: ReportFilter,
    as_of: dt.datetime,
    segment_ids: list[int] | None,
    after: tuple[dt.datetime | None, int | None],
    page_rows: int,
) -> tuple[list[tuple], tuple[dt.datetime, int] | None]:
    """The page after position `after` (the last row's time in UTC and history id), and its own
    position, None when it is the last. Its rows as fetched are dropped on return, so that a
    report holds one page while the next is read."""
    page = {
        "period_start": report.start,
        "period_end": report.end,
        "as_of": as_of,
        "after_at": after[0],
        "after_id": after[1],
        "user_id": report.user_id,
        "page_rows": page_rows,
    }
    with single_statement(pool) as connection:
        if segment_ids is None:
            rows = queries.fetch_rows(connection, "history_report_page", **page)
        else:
            rows = queries.fetch_rows(
                connection, "history_report_page_of_segments", segment_ids=segment_ids, **page
            )
    position = (rows[-1][7], rows[-1][8]) if len(rows) == page_rows else None
    return [row[:7] for row in rows], position
