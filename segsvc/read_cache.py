"""The per-worker read cache of users' segments, and how changes reach it.

Every page view reads a user's segments, so a hit must cost no database round trip; a read must
still never be staler than the guarantees in the README ("Read cache"):

- A shared table of versions (`VersionTable`), created by gunicorn's master before it forks, holds
  one version per slot of user ids and an epoch for everyone. A read notes its user's version
  and the epoch before its query and stores them with the entry; a hit needs both unchanged.
- A change notes the users it changed (or everyone) on its connection (`note_users`,
  `note_everyone`). Its commit goes through `ChangePublisher`: before COMMIT it sends a `NOTIFY`
  on `segsvc_changes` (PostgreSQL delivers it at commit, to every instance); after COMMIT and
  before the answer it sets the slots to a value new to that change. So any worker of this
  instance that begins a read after the answer misses, and reads the database. A change made
  by one statement in autocommit (its own transaction) sends the NOTIFY in that statement
  (`published_in_statement`), and sets the slots once it returns.
- Each worker's `ChangeListener` (segsvc.change_listener) sets the slots for the changes other
  instances made, and for this instance's whose worker died before setting them. While it is
  not listening the worker's cache is bypassed.
- An entry stops being served at its earliest expiry, measured on the database's clock.
"""

import mmap
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2.extensions

from . import metrics, queries

# 2**20 slots of 8 bytes: 8 MiB shared by the workers of an instance. Users sharing a slot only
# miss a little more often.
SLOTS = 1 << 20
# A NOTIFY payload holds at most 8,000 bytes; bigger changes go as several.
PAYLOAD_BYTES = 7900
EVERYONE = "*"


class VersionTable:
    """Versions of user slots and an epoch, in memory shared by the processes forked after it
    is created. Values are random 64-bit numbers: unique to their change (an increment of two
    writers could be lost, and a value could come back), so no entry can match a later change.
    """

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, (SLOTS + 1) * 8)  # anonymous and MAP_SHARED
        self._versions = memoryview(self._memory).cast("Q")
        # Names this instance in its notifications, so that its listeners tell its own apart.
        self.instance = os.urandom(8).hex()

    def stamp(self, user_id: int) -> tuple[int, int]:
        return self._versions[user_id % SLOTS + 1], self._versions[0]

    def is_current(self, user_id: int, stamp: tuple[int, int]) -> bool:
        versions = self._versions
        return stamp[0] == versions[user_id % SLOTS + 1] and stamp[1] == versions[0]

    def bump_users(self, user_ids: Iterable[int]) -> None:
        value = _new_version()
        versions = self._versions
        for user_id in user_ids:
            versions[user_id % SLOTS + 1] = value

    def bump_everyone(self) -> None:
        self._versions[0] = _new_version()


def _new_version() -> int:
    return int.from_bytes(os.urandom(8), "little")


@dataclass
class PendingChanges:
    """What a transaction changed, published when it commits."""

    user_ids: set[int] = field(default_factory=set)
    everyone: bool = False

    def __bool__(self) -> bool:
        return self.everyone or bool(self.user_ids)


class TrackingConnection(psycopg2.extensions.connection):
    """A connection that carries the changes of its open transaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending_changes = PendingChanges()
        # Set by the pool that made the connection: the caches its changes are published to.
        self.publisher: ChangePublisher | None = None

    def take_changes(self) -> PendingChanges:
        pending, self.pending_changes = self.pending_changes, PendingChanges()
        return pending


def note_users(connection: Any, user_ids: Iterable[int]) -> None:
    """The users' segments change if this transaction commits. Every connection of a pool
    tracks changes; another one (a test's, a tool's) has no cache to tell."""
    if isinstance(connection, TrackingConnection):
        connection.pending_changes.user_ids.update(user_ids)


def note_everyone(connection: Any) -> None:
    """Every read may change if this transaction commits (a segment's deletion or percentage)."""
    if isinstance(connection, TrackingConnection):
        connection.pending_changes.everyone = True


@contextmanager
def published_in_statement(connection: Any, user_ids: Iterable[int]) -> Iterator[list[str]]:
    """For a change of these users made by one statement in autocommit, which is its own
    transaction: gives the NOTIFY payloads for the statement to send (PostgreSQL delivers them
    at its commit), then sets this instance's slots once it succeeded, or once its outcome is
    unknown because the connection dropped (a needless miss is cheap; a stale hit is not). A
    statement the server refused changed nothing. A connection without a publisher gives none."""
    publisher = getattr(connection, "publisher", None)
    if publisher is None:
        yield []
        return
    pending = PendingChanges(user_ids=set(user_ids))
    try:
        yield notification_payloads(publisher.instance(), pending)
    except BaseException:
        if connection.closed:
            publisher.bump(pending)
        raise
    publisher.bump(pending)


def notification_payloads(instance: str, pending: PendingChanges) -> list[str]:
    """`<instance>:<pid>:<id>,<id>...` in as many payloads as needed, or `<instance>:<pid>:*`:
    the instance and the worker that made the change, then what it changed."""
    prefix = f"{instance}:{os.getpid()}:"
    if pending.everyone:
        return [prefix + EVERYONE]
    payloads: list[str] = []
    current: list[str] = []
    size = len(prefix)
    for text in (str(user_id) for user_id in sorted(pending.user_ids)):
        if current and size + len(text) + 1 > PAYLOAD_BYTES:
            payloads.append(prefix + ",".join(current))
            current, size = [], len(prefix)
        current.append(text)
        size += len(text) + 1
    if current:
        payloads.append(prefix + ",".join(current))
    return payloads


@dataclass(frozen=True)
class Notification:
    instance: str
    pid: int
    changed: str  # user ids, comma-separated, or EVERYONE

    @classmethod
    def parse(cls, payload: str) -> "Notification":
        instance, pid, changed = payload.split(":", 2)
        return cls(instance, int(pid), changed)

    def apply(self, versions: VersionTable) -> None:
        """The change's users' slots, or the epoch, move on."""
        if self.changed == EVERYONE:
            versions.bump_everyone()
            metrics.READ_CACHE_INVALIDATIONS.labels("all", "notification").inc()
            return
        versions.bump_users(int(text) for text in self.changed.split(",") if text)
        metrics.READ_CACHE_INVALIDATIONS.labels("users", "notification").inc()


class ChangePublisher:
    """Commits a connection's transaction and publishes what it changed to the read caches of
    this instance (the cache's current version table) and of the others (NOTIFY)."""

    def __init__(self, cache: "ReadCache | None") -> None:
        self._cache = cache

    def commit(self, connection: Any) -> None:
        pending = connection.take_changes() if isinstance(connection, TrackingConnection) else None
        if pending:
            queries.execute(
                connection,
                "notify_changes",
                payloads=notification_payloads(self.instance(), pending),
            )
        try:
            connection.commit()
        finally:
            # Also when the commit's outcome is unknown (the connection dropped): a needless miss
            # is cheap, a stale hit is not.
            if pending:
                self.bump(pending)

    def discard(self, connection: Any) -> None:
        """The transaction rolled back: nothing to publish."""
        if isinstance(connection, TrackingConnection):
            connection.take_changes()

    def instance(self) -> str:
        """A pool without a cache (a tool's) publishes to every instance alike."""
        return self._cache.versions.instance if self._cache is not None else "tool"

    def bump(self, pending: PendingChanges) -> None:
        """This instance's slots of the changed users (or the epoch) move on."""
        if self._cache is None:
            return
        versions = self._cache.versions
        if pending.everyone:
            versions.bump_everyone()
            metrics.READ_CACHE_INVALIDATIONS.labels("all", "commit").inc()
        else:
            versions.bump_users(pending.user_ids)
            metrics.READ_CACHE_INVALIDATIONS.labels("users", "commit").inc()


@dataclass(frozen=True)
class CachedRead:
    """One user's answer: `body` (encoded JSON) for stored memberships, or, for an unregistered
    user whose segments are computed, `computed` (slugs and the database time of the read) to
    render with the time of each hit."""

    stamp: tuple[int, int]
    valid_until: float  # time.monotonic(); the earliest expiry in it
    body: bytes | None = None
    computed: Any = None


class ReadCache:
    """A worker's entries, bounded to `max_users` (the oldest entry goes first). Hits take no
    lock; stores and evictions take one."""

    def __init__(self, enabled: bool, max_users: int, versions: VersionTable) -> None:
        self.enabled = enabled
        self.max_users = max_users
        self.versions = versions
        self._entries: dict[int, CachedRead] = {}
        self._lock = threading.Lock()
        # Until a listener says otherwise (segsvc.change_listener), the cache is bypassed.
        self.listening_until = 0.0
        self._hits = metrics.READ_CACHE_LOOKUPS.labels("hit")
        self._misses = metrics.READ_CACHE_LOOKUPS.labels("miss")
        self._bypasses = metrics.READ_CACHE_LOOKUPS.labels("bypass")

    def use_versions(self, versions: VersionTable) -> None:
        """The table gunicorn's master made before forking, shared with the other workers."""
        with self._lock:
            self.versions = versions
            self._entries.clear()

    def usable(self) -> bool:
        return self.enabled and time.monotonic() < self.listening_until

    def lookup(self, user_ids: list[int]) -> list[CachedRead | None]:
        """Each user's entry if it is still current, else None (a miss, or all of them while
        the cache is bypassed); counted once per result, not per user."""
        if not self.enabled:
            return [None] * len(user_ids)
        now = time.monotonic()
        if now >= self.listening_until:
            self._bypasses.inc(len(user_ids))
            return [None] * len(user_ids)
        found = [self._current(user_id, now) for user_id in user_ids]
        misses = found.count(None)
        if misses < len(found):
            self._hits.inc(len(found) - misses)
        if misses:
            self._misses.inc(misses)
        return found

    def hit(self, user_id: int) -> CachedRead | None:
        """The user's entry if it is current, counted as a hit; None, counted as nothing, when
        it is not (the caller then asks `lookup`, which counts the miss or the bypass)."""
        now = time.monotonic()
        if not self.enabled or now >= self.listening_until:
            return None
        entry = self._current(user_id, now)
        if entry is not None:
            self._hits.inc()
        return entry

    def _current(self, user_id: int, now: float) -> CachedRead | None:
        """The user's entry unless it is missing, past its earliest expiry or outdated."""
        entry = self._entries.get(user_id)
        if entry is None or now >= entry.valid_until:
            return None
        return entry if self.versions.is_current(user_id, entry.stamp) else None

    def stamp(self, user_id: int) -> tuple[int, int]:
        """Taken before the query whose answer is stored with it."""
        return self.versions.stamp(user_id)

    def put(self, user_id: int, entry: CachedRead) -> None:
        if not self.enabled:
            return
        entries = self._entries
        with self._lock:
            entries.pop(user_id, None)
            while len(entries) >= self.max_users:
                del entries[next(iter(entries))]
            entries[user_id] = entry

    def size(self) -> int:
        return len(self._entries)


def valid_until(rows: list[dict[str, Any]], started: float) -> float:
    """When the earliest expiry among the rows comes, on the monotonic clock: its distance from
    the database's time of the read, counted from before the query (so never late)."""
    expiries = [row["expires_at"] for row in rows if row["expires_at"] is not None]
    if not expiries:
        return float("inf")
    return started + (min(expiries) - rows[0]["read_at"]).total_seconds()


EXTENSION = "segsvc.read_cache"


def init_app(app: Any) -> None:
    """The worker's cache, on a version table of its own until gunicorn's hook hands it the
    instance's shared one (segsvc/gunicorn_conf.py); bypassed until a listener runs."""
    config = app.config["SEGSVC"]
    app.extensions[EXTENSION] = ReadCache(
        config.read_cache, config.read_cache_max_users, VersionTable()
    )


def cache_of(app: Any) -> ReadCache:
    return app.extensions[EXTENSION]
