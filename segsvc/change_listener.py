"""Each worker's listener for committed changes, above all other instances' (see
segsvc.read_cache).

A thread on a connection of its own runs `LISTEN`, applies every notification to the shared
version table, and sends a heartbeat every HEARTBEAT_SECONDS. The cache may serve hits only
until TRUST_SECONDS after the start of the last heartbeat that came back: PostgreSQL delivers
the notifications committed before a statement no later than that statement's answer, so a
lost connection (a restart, a terminated backend, a network that stops answering) turns the
cache off within that time, and the cache stays bypassed until the listener is back. Changes
committed while it was away are unknown, so listening again moves the epoch: every entry misses.
"""

import collections
import logging
import os
import select
import threading
import time
from typing import Any

import psycopg2

from . import metrics, queries
from .read_cache import EXTENSION, Notification, ReadCache, VersionTable

APPLICATION_NAME = "segsvc-listener"
HEARTBEAT_SECONDS = 0.2
# Hits are served until this long after the start of the last heartbeat answered: the bound on
# the staleness a lost notification channel can cause.
TRUST_SECONDS = 0.5
RECONNECT_SECONDS = 0.5
# This instance's own changes: the worker that made one sets the slots right after its COMMIT,
# before answering. One killed in between never does: past this the listener checks that the
# worker is alive, and sets them itself otherwise. (Setting them always would cost every change
# another miss in every worker.) The change was never answered, so no read was promised it.
OWN_CHECK_SECONDS = 0.5
STOP_SECONDS = 5.0

log = logging.getLogger(__name__)


class ChangeListener:
    def __init__(self, cache: ReadCache, database_url: str, connect_timeout_seconds: int) -> None:
        self._cache = cache
        self._database_url = database_url
        self._connect_timeout_seconds = connect_timeout_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="segsvc-change-listener", daemon=True
        )
        self.backend_pid: int | None = None
        self._own: collections.deque[tuple[float, Notification]] = collections.deque()

    def start(self) -> None:
        metrics.READ_CACHE_BYPASSED.set(1)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=STOP_SECONDS)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except psycopg2.Error as error:
                log.warning(
                    "change notifications lost, read cache bypassed: %s", str(error).strip()
                )
            finally:
                self._bypass()
            self._stopping.wait(RECONNECT_SECONDS)

    def _bypass(self) -> None:
        self._cache.listening_until = 0.0
        self.backend_pid = None
        metrics.READ_CACHE_BYPASSED.set(1)

    def _listen(self) -> None:
        connection = psycopg2.connect(
            self._database_url,
            application_name=APPLICATION_NAME,
            connect_timeout=self._connect_timeout_seconds,
        )
        try:
            connection.autocommit = True
            queries.execute(connection, "listen_for_changes")
            self.backend_pid = connection.info.backend_pid
            self._cache.versions.bump_everyone()
            metrics.READ_CACHE_INVALIDATIONS.labels("all", "notification").inc()
            log.info("listening for changes of other instances; read cache in use")
            while not self._stopping.is_set():
                started = time.monotonic()
                queries.execute(connection, "listener_heartbeat")
                self._apply(connection)
                self._cache.listening_until = started + TRUST_SECONDS
                metrics.READ_CACHE_BYPASSED.set(0)
                metrics.READ_CACHE_ENTRIES.set(self._cache.size())
                self._wait(connection, started + HEARTBEAT_SECONDS)
        finally:
            connection.close()

    def _wait(self, connection: psycopg2.extensions.connection, until: float) -> None:
        """Applies notifications as they come until the next heartbeat is due."""
        while not self._stopping.is_set() and (remaining := until - time.monotonic()) > 0:
            if select.select([connection], [], [], remaining)[0]:
                connection.poll()
                self._apply(connection)

    def _apply(self, connection: psycopg2.extensions.connection) -> None:
        versions = self._cache.versions
        notifies = connection.notifies
        while notifies:
            notification = Notification.parse(notifies.pop(0).payload)
            if notification.instance != versions.instance:
                notification.apply(versions)
            else:
                self._own.append((time.monotonic() + OWN_CHECK_SECONDS, notification))
        while self._own and self._own[0][0] <= time.monotonic():
            _, notification = self._own.popleft()
            if not _alive(notification.pid):
                notification.apply(versions)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LISTENER_KEY = "segsvc.change_listener"


def start_listening(app: Any, shared_versions: VersionTable | None = None) -> None:
    """In a worker: its cache takes the instance's shared version table and starts listening.
    An app without segsvc's cache (the benchmarks' reference apps) or with it switched off
    (SEGSVC_READ_CACHE=false) runs no listener."""
    cache = app.extensions.get(EXTENSION)
    if cache is None or not cache.enabled:
        return
    if shared_versions is not None:
        cache.use_versions(shared_versions)
    config = app.config["SEGSVC"]
    listener = ChangeListener(cache, config.database_url, config.db_connect_timeout_seconds)
    app.extensions[LISTENER_KEY] = listener
    listener.start()


def stop_listening(app: Any) -> None:
    listener = app.extensions.pop(LISTENER_KEY, None)
    if listener is not None:
        listener.stop()
