"""The history report, read a page at a time: flat memory at any size, nothing held in between."""

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from . import queries
from .db import ConnectionPool, single_statement

CSV_HEADER = ("user_id", "segment", "operation", "at", "reason")


@dataclass(frozen=True)
class ReportPeriod:
    """Whole UTC months, both ends included."""

    from_year: int
    from_month: int
    to_year: int
    to_month: int

    def label(self) -> str:
        first = f"{self.from_year:04d}-{self.from_month:02d}"
        last = f"{self.to_year:04d}-{self.to_month:02d}"
        return first if first == last else f"{first}_{last}"

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        """The first instant of `from` and of the month after `to`, in UTC: computed here, so
        that the database session's time zone cannot move them."""
        start = dt.datetime(self.from_year, self.from_month, 1, tzinfo=dt.UTC)
        following = self.to_year * 12 + self.to_month  # months since year 0, plus one
        if following // 12 > dt.MAXYEAR:
            return start, dt.datetime.max.replace(tzinfo=dt.UTC)
        return start, dt.datetime(following // 12, following % 12 + 1, 1, tzinfo=dt.UTC)


def history_report(
    pool: ConnectionPool, period: ReportPeriod, user_id: int | None, page_rows: int
) -> Iterator[list[tuple]]:
    """The period's history rows (user_id, slug, operation, at, reason) in time order, by page.

    Each page is one short statement on a connection borrowed for it alone: between pages the
    report holds no connection and no transaction, so a slow reader costs the database nothing
    and no server timeout can end the download midway. The report holds every row recorded
    before it started; rows of changes still in flight then may or may not be in it.
    """
    with single_statement(pool) as connection:
        as_of = queries.change_time(connection)
    period_start, period_end = period.bounds()
    after_at = after_id = None
    while True:
        with single_statement(pool) as connection:
            rows = queries.fetch_rows(
                connection,
                "history_report_page",
                period_start=period_start,
                period_end=period_end,
                as_of=as_of,
                after_at=after_at,
                after_id=after_id,
                user_id=user_id,
                page_rows=page_rows,
            )
        if rows:
            yield [row[:5] for row in rows]
        if len(rows) < page_rows:
            return
        after_at, after_id = rows[-1][5], rows[-1][6]
