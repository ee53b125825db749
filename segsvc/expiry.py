"""Ending expired memberships for good, each recorded at its own expiry time.

Reads already hide expired memberships; this turns them into history. It is safe to run from
any number of processes at once: each batch locks the rows it ends and skips rows locked by
anyone else, so no expiry is recorded twice, and a batch killed midway rolls back whole.
"""

import datetime as dt
import time

from psycopg2.extensions import connection as Connection

from . import metrics, queries
from .db import ConnectionPool, transaction


def expire_due_batch(connection: Connection, batch_size: int) -> int:
    """Ends up to `batch_size` memberships due by now; returns how many."""
    at = queries.change_time(connection)
    expired = queries.execute(connection, "expire_due_memberships", at=at, batch_size=batch_size)
    metrics.MEMBERSHIPS_EXPIRED.inc(expired)
    return expired


def expire_due_memberships(pool: ConnectionPool, batch_size: int) -> int:
    """Runs batches, one transaction each, until a batch comes back short; returns the total.

    A transaction per batch keeps locks short: a million expirations never hold the table.
    """
    total = 0
    while True:
        with transaction(pool) as connection:
            expired = expire_due_batch(connection, batch_size)
        total += expired
        if expired < batch_size:
            return total


def settle_all_due(pool: ConnectionPool, batch_size: int, wait_seconds: float) -> int:
    """Ends everything due now, waiting (bounded) for rows that others are ending meanwhile.

    A report calls this first, so that it reads the same whatever the job's timing.
    """
    with transaction(pool) as connection:
        started = queries.change_time(connection)
    deadline = time.monotonic() + wait_seconds
    total = expire_due_memberships(pool, batch_size)
    while _due_remain(pool, started) and time.monotonic() < deadline:
        time.sleep(0.02)
        total += expire_due_memberships(pool, batch_size)
    return total


def _due_remain(pool: ConnectionPool, at: dt.datetime) -> bool:
    with transaction(pool) as connection:
        return queries.fetch_one(connection, "due_memberships_remain", at=at)["remain"]
