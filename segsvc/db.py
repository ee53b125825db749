"""Connections: a bounded pool per worker process and one transaction per request.

The pool is created lazily in the process that uses it, so gunicorn workers never share a
socket inherited from the master. A request borrows one connection on first use; it commits
when the response is a success and rolls back otherwise, and the connection always goes back.
"""

import functools
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg2
from flask import Flask, Response, current_app, g, request
from psycopg2 import extensions
from psycopg2.extensions import connection as Connection

from . import audit, metrics, read_cache
from .config import Config
from .errors import DatabaseUnavailable, handle_database_error
from .read_cache import ChangePublisher, TrackingConnection

APPLICATION_NAME = "segsvc"
READ_ONLY_METHODS = frozenset({"GET", "HEAD"})

log = logging.getLogger(__name__)


class PooledConnection(TrackingConnection):
    """A pool's connection: it carries its transaction's changes for the read caches
    (TrackingConnection), the names of the statements it prepared (queries.fetch_prepared;
    None when prepared statements are off) and the tags of the request it serves."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prepared_statements: set[str] | None = set()
        # The actor and request id of the request that borrowed it (segsvc.audit).
        self.audit_tags: tuple[str | None, str | None] = (None, None)


class ConnectionPool:
    """A bounded, thread-safe pool that waits (bounded) for a free connection.

    Connections open lazily. One found broken (the server restarted, the network dropped) is
    closed, and so is every idle one, since they most likely share its fate: the next requests
    connect afresh, so the service recovers from an outage by itself.
    """

    def __init__(self, config: Config, publisher: ChangePublisher | None = None) -> None:
        self._publisher = publisher or ChangePublisher(None)
        self._slots = threading.BoundedSemaphore(config.db_pool_max)
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._in_use = 0
        self._wait_seconds = config.db_pool_wait_seconds
        self._prepared_statements = config.db_prepared_statements
        self._connect = functools.partial(
            psycopg2.connect,
            config.database_url,
            application_name=APPLICATION_NAME,
            connection_factory=PooledConnection,
            connect_timeout=config.db_connect_timeout_seconds,
            # A transaction left open too long (a bug, a stuck request) is ended by the server.
            options=f"-c statement_timeout={config.statement_timeout_seconds * 1000}"
            " -c idle_in_transaction_session_timeout="
            f"{config.idle_in_transaction_timeout_seconds * 1000}",
        )

    def acquire(self) -> Connection:
        if not self._slots.acquire(timeout=self._wait_seconds):
            raise DatabaseUnavailable("No database connection became free in time; retry later.")
        try:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = self._connect()
                connection.publisher = self._publisher
                if not self._prepared_statements:
                    connection.prepared_statements = None
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._in_use += 1
        metrics.DB_POOL_CONNECTIONS_IN_USE.inc()
        return connection

    def release(self, connection: Connection) -> None:
        """Takes a connection back; one that is broken or mid-transaction is closed instead.

        Never raises, and always frees the slot: a slot lost here would be lost for good.
        """
        try:
            broken = bool(connection.closed)
            try:
                reusable = (
                    not broken
                    and connection.info.transaction_status == extensions.TRANSACTION_STATUS_IDLE
                )
                if reusable:
                    connection.autocommit = False
                    connection.audit_tags = (None, None)
                    self._publisher.discard(connection)
            except psycopg2.Error:
                broken, reusable = True, False
            with self._lock:
                self._in_use -= 1
                metrics.DB_POOL_CONNECTIONS_IN_USE.dec()
                if reusable:
                    self._idle.append(connection)
                    return
                stale = self._idle if broken else []
                self._idle = [] if broken else self._idle
            for dropped in [connection, *stale]:
                with suppress(psycopg2.Error):
                    dropped.close()
            if broken:
                log.warning("a database connection broke; %d idle ones dropped", len(stale))
        finally:
            self._slots.release()

    def commit(self, connection: Connection) -> None:
        """Commits, and publishes what the transaction changed to the read caches."""
        self._publisher.commit(connection)

    def rollback(self, connection: Connection) -> None:
        self._publisher.discard(connection)
        connection.rollback()

    def in_use(self) -> int:
        """Connections borrowed and not yet given back."""
        with self._lock:
            return self._in_use

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def get_pool(app: Flask) -> ConnectionPool:
    """The pool of the current process, created on first use after a fork."""
    pools: dict[int, ConnectionPool] = app.extensions.setdefault("segsvc.pools", {})
    pid = os.getpid()
    with app.extensions["segsvc.pool_lock"]:
        if pid not in pools:
            pools.clear()
            pools[pid] = ConnectionPool(
                app.config["SEGSVC"], ChangePublisher(read_cache.cache_of(app))
            )
        return pools[pid]


def close_pools(app: Flask) -> None:
    for pool in app.extensions.get("segsvc.pools", {}).values():
        pool.close()


@contextmanager
def transaction(pool: ConnectionPool) -> Iterator[Connection]:
    """One transaction outside a request (jobs, streams): commit on success, else roll back.

    The connection goes back to the pool whatever happens, also when the commit or the
    rollback fails because the server ended the session.
    """
    connection = pool.acquire()
    try:
        try:
            yield connection
        except BaseException:
            with suppress(psycopg2.Error):  # the error that got here matters; release copes
                pool.rollback(connection)
            raise
        pool.commit(connection)
    finally:
        pool.release(connection)


@contextmanager
def single_statement(pool: ConnectionPool) -> Iterator[Connection]:
    """A connection for reads outside a request, each statement its own transaction (autocommit:
    no COMMIT round trip, and nothing left open when the caller pauses)."""
    connection = pool.acquire()
    try:
        connection.autocommit = True
        yield connection
    finally:
        pool.release(connection)


def get_connection(single_statement: bool = False) -> Connection:
    """The request's connection, borrowed on first use.

    GET requests only read, each in one statement, so they run in autocommit: that is still
    one transaction, and it saves the round trips of BEGIN and COMMIT on the hottest route.
    `single_statement` says the same of another request on its first call (the batch lookup, a
    change of a user's segments); a domain function that then needs a transaction of several
    statements turns autocommit off before its first.
    """
    if "db_connection" not in g:
        connection = get_pool(current_app).acquire()
        connection.autocommit = single_statement or request.method in READ_ONLY_METHODS
        g.db_connection = connection
        connection.audit_tags = audit.request_tags()
        if not connection.autocommit:
            audit.tag_transaction(connection)  # its rows record who made the change
    return g.db_connection


def commit_request() -> None:
    """Commits the request's transaction now, for a view that must know it held before it
    answers (the web console tells of a change only once it is committed). A lost connection
    raises here, inside the view, where the error handlers answer it."""
    connection = g.get("db_connection")
    if connection is not None and not connection.closed and not connection.autocommit:
        get_pool(current_app).commit(connection)


def roll_back_request() -> None:
    """Ends the request's transaction here, with a rollback: what it changed is undone, and what
    the request reads next (a page showing why a change failed) reads afresh. The request ends
    in a rollback as well (an error status)."""
    connection = g.get("db_connection")
    if connection is not None and not connection.closed:
        get_pool(current_app).rollback(connection)


def _finish_transaction(response: Response) -> Response:
    """Commits a success, rolls back anything else. A commit that fails because the database went
    away is the 503 of any lost connection, not a 500 (errors raised here skip the handlers);
    a failed rollback leaves the answer as it is, and the teardown discards the connection."""
    connection = g.get("db_connection")
    if connection is None or connection.closed:
        return response
    pool = get_pool(current_app)
    try:
        if response.status_code < 400:
            pool.commit(connection)
        else:
            pool.rollback(connection)
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
        if response.status_code < 400:
            return handle_database_error(error)
    return response


def _return_connection(_exception: BaseException | None) -> None:
    connection = g.pop("db_connection", None)
    if connection is None:
        return
    try:
        if not connection.closed:
            get_pool(current_app).rollback(connection)
    except psycopg2.Error as error:
        log.warning("rollback failed, discarding the connection: %s", str(error).strip())
    finally:
        get_pool(current_app).release(connection)


def init_app(app: Flask) -> None:
    app.extensions["segsvc.pool_lock"] = threading.Lock()
    app.after_request(_finish_transaction)
    app.teardown_request(_return_connection)
