"""The history report, read through a server-side cursor so memory stays flat at any size."""

from collections.abc import Iterator
from dataclasses import dataclass

from psycopg2.extensions import connection as Connection

from . import queries

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


def history_report(
    connection: Connection, period: ReportPeriod, user_id: int | None, chunk_rows: int
) -> Iterator[list[tuple]]:
    """The period's history rows (user_id, slug, operation, at, reason) in time order, in chunks.

    The rows stay on the server until fetched; the caller's transaction must stay open.
    """
    cursor = queries.open_server_cursor(
        connection,
        "history_report",
        chunk_rows,
        from_year=period.from_year,
        from_month=period.from_month,
        to_year=period.to_year,
        to_month=period.to_month,
        user_id=user_id,
    )
    while rows := cursor.fetchmany(chunk_rows):
        yield rows
