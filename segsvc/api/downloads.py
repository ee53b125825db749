"""CSV downloads (history reports, member exports): streamed a page of rows at a time, within a
bounded number of slots per worker."""

import csv
import io
import threading
from collections.abc import Callable, Iterator

from flask import Flask, Response, current_app

from .. import metrics
from ..errors import TooManyReports

STREAM_SLOTS_KEY = "segsvc.download_stream_slots"
Pages = Iterator[list[tuple]]


def init_app(app: Flask) -> None:
    """Downloads last as long as their clients read: a bounded number per worker leaves threads
    for every other request."""
    app.extensions[STREAM_SLOTS_KEY] = threading.BoundedSemaphore(
        app.config["SEGSVC"].report_streams_max
    )


class StreamSlot:
    """A download's claim on one of the worker's slots, given back exactly once: when its CSV
    has been read to the end, or when the server closes the response (the client went away, or
    the body was never read, as for HEAD), whichever comes first."""

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self._slots = slots
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._slots.release()


def csv_download(
    header: tuple, open_pages: Callable[[], Pages], filename: str, delimiter: str = ";"
) -> Response:
    """Claims a slot (else 503 `too_many_reports`), opens the pages and reads the first before
    answering, so that an error up to then is still a problem response; then streams them as
    CSV under `header`, `;`-separated unless `delimiter` says otherwise."""
    slots: threading.BoundedSemaphore = current_app.extensions[STREAM_SLOTS_KEY]
    if not slots.acquire(blocking=False):
        limit = current_app.config["SEGSVC"].report_streams_max
        raise TooManyReports(f"{limit} report downloads are running on this worker; retry later.")
    slot = StreamSlot(slots)
    try:
        pages = open_pages()
        first = next(pages, [])
    except BaseException:
        slot.release()
        raise
    response = Response(
        _csv_chunks(header, pages, first, slot, delimiter),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
    response.call_on_close(slot.release)
    return response


def _csv_chunks(
    header: tuple, pages: Pages, first: list[tuple], slot: StreamSlot, delimiter: str
) -> Iterator[bytes]:
    try:
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(first)
        metrics.REPORT_ROWS_STREAMED.inc(len(first))
        yield buffer.getvalue().encode()
        for rows in pages:
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(rows)
            metrics.REPORT_ROWS_STREAMED.inc(len(rows))
            yield buffer.getvalue().encode()
    finally:
        slot.release()
