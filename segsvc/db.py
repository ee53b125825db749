"""Connections: a bounded pool per worker process and one transaction per request.

The pool is created lazily in the process that uses it, so gunicorn workers never share a
socket inherited from the master. A request borrows one connection on first use; it commits
when the response is a success and rolls back otherwise, and the connection always goes back.
"""

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
from flask import Flask, Response, current_app, g
from psycopg2.extensions import connection as Connection
from psycopg2.pool import ThreadedConnectionPool

from .config import Config
from .errors import DatabaseUnavailable

APPLICATION_NAME = "segsvc"

log = logging.getLogger(__name__)


class ConnectionPool:
    """psycopg2's thread-safe pool, made to wait (bounded) for a free connection."""

    def __init__(self, config: Config) -> None:
        self._slots = threading.BoundedSemaphore(config.db_pool_max)
        self._count_lock = threading.Lock()
        self._in_use = 0
        self._wait_seconds = config.db_pool_wait_seconds
        self._pool = ThreadedConnectionPool(
            config.db_pool_min,
            config.db_pool_max,
            config.database_url,
            application_name=APPLICATION_NAME,
        )

    def acquire(self) -> Connection:
        if not self._slots.acquire(timeout=self._wait_seconds):
            raise DatabaseUnavailable("No database connection became free in time; retry later.")
        try:
            connection = self._pool.getconn()
        except BaseException:
            self._slots.release()
            raise
        with self._count_lock:
            self._in_use += 1
        return connection

    def release(self, connection: Connection) -> None:
        """Returns a connection; one that is broken or mid-transaction is closed instead."""
        try:
            broken = connection.closed or (
                connection.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE
            )
            self._pool.putconn(connection, close=bool(broken))
        finally:
            with self._count_lock:
                self._in_use -= 1
            self._slots.release()

    def in_use(self) -> int:
        """Connections borrowed and not yet given back."""
        with self._count_lock:
            return self._in_use

    def close(self) -> None:
        self._pool.closeall()


def get_pool(app: Flask) -> ConnectionPool:
    """The pool of the current process, created on first use after a fork."""
    pools: dict[int, ConnectionPool] = app.extensions.setdefault("segsvc.pools", {})
    pid = os.getpid()
    with app.extensions["segsvc.pool_lock"]:
        if pid not in pools:
            pools.clear()
            pools[pid] = ConnectionPool(app.config["SEGSVC"])
        return pools[pid]


def close_pools(app: Flask) -> None:
    for pool in app.extensions.get("segsvc.pools", {}).values():
        pool.close()


@contextmanager
def transaction(pool: ConnectionPool) -> Iterator[Connection]:
    """One transaction outside a request (jobs, scripts): commit on success, else roll back."""
    connection = pool.acquire()
    try:
        with connection:
            yield connection
    finally:
        pool.release(connection)


def get_connection() -> Connection:
    """The request's connection, borrowed on first use."""
    if "db_connection" not in g:
        g.db_connection = get_pool(current_app).acquire()
    return g.db_connection


def _finish_transaction(response: Response) -> Response:
    connection = g.get("db_connection")
    if connection is not None and not connection.closed:
        if response.status_code < 400:
            connection.commit()
        else:
            connection.rollback()
    return response


def _return_connection(_exception: BaseException | None) -> None:
    connection = g.pop("db_connection", None)
    if connection is None:
        return
    try:
        if not connection.closed:
            connection.rollback()
    except psycopg2.Error as error:
        log.warning("rollback failed, discarding the connection: %s", str(error).strip())
    finally:
        get_pool(current_app).release(connection)


def init_app(app: Flask) -> None:
    app.extensions["segsvc.pool_lock"] = threading.Lock()
    app.after_request(_finish_transaction)
    app.teardown_request(_return_connection)
