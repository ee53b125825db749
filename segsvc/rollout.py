"""Percentage rollouts: deterministic buckets, and the background convergence they drive.

A (slug, user) pair has a bucket 0..9999; a segment at p percent holds the users whose bucket is
below p * 100. The same slug always selects the same users, in every process and database, so a
ramp-up keeps everyone already selected and a ramp-down keeps a subset. Selected users become
real `auto` memberships, so reads never compute anything for registered users.

A change of p only records it and restarts the segment's rollout: it answers at once and holds
no lock that other requests wait on. `converge_rollouts`, run by the scheduler in every worker,
then walks the registered users in id order, a chunk per transaction, adding and removing `auto`
memberships until every user matches p. Users registered meanwhile enrol at p themselves.
"""

import hashlib
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from psycopg2.extensions import connection as Connection

from . import metrics, queries, read_cache
from .db import ConnectionPool, transaction

BUCKETS = 10000


def bucket(slug: str, user_id: int) -> int:
    """The same function as SQL's `segment_bucket` (migrations/0002): md5, first 32 bits."""
    digest = hashlib.md5(f"{slug}:{user_id}".encode(), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) % BUCKETS


def bucket_limit(auto_percent: Decimal | float) -> int:
    """Buckets below this are selected; two decimals of a percent make a whole bucket."""
    return int(Decimal(str(auto_percent)) * 100)


def expected_users_between(registered: int, percent: Decimal, other_percent: Decimal) -> int:
    """How many of `registered` users a ramp between the two percentages is expected to reach:
    buckets are uniform, so the share of buckets between them (exactly, it would take a bucket
    of every registered user: seconds at a million)."""
    low, high = sorted((bucket_limit(percent), bucket_limit(other_percent)))
    return round(registered * (high - low) / BUCKETS)


def enroll_new_users(connection: Connection, user_ids: Sequence[int], at: Any) -> None:
    """Puts users registered in this transaction into every percentage segment that selects them,
    at its current percentage. A rollout started meanwhile waits for this transaction to end
    before its chunks run, so either way the user ends up where the percentage says."""
    segments = queries.fetch_all(connection, "lock_auto_segments")
    if not segments:
        return
    enrolled = queries.execute(
        connection,
        "enroll_new_users",
        user_ids=list(user_ids),
        segment_ids=[row["segment_id"] for row in segments],
        at=at,
    )
    metrics.AUTO_ENROLLMENTS.labels("registration").inc(enrolled)


def lock_rollout(connection: Connection, segment_id: int) -> None:
    """Before changing a segment's percentage or deleting it: waits for a chunk in progress, and
    keeps the next one from starting until this transaction ends."""
    queries.fetch_one(connection, "lock_rollout", segment_id=segment_id)


def create_unstarted_rollout(connection: Connection, segment_id: int) -> None:
    """A segment created without a percentage: its rollout row, for later changes to lock."""
    queries.execute(
        connection,
        "create_unstarted_rollout",
        segment_id=segment_id,
        at=queries.change_time(connection),
    )


def restart_rollout(connection: Connection, segment_id: int) -> None:
    """The segment's percentage changed (in this transaction): converge every user again."""
    queries.execute(
        connection, "restart_rollout", segment_id=segment_id, at=queries.change_time(connection)
    )


def end_rollout(connection: Connection, segment_id: int, at: Any) -> None:
    """The segment is deleted: nothing is left to converge."""
    queries.execute(connection, "end_rollout", segment_id=segment_id, at=at)


def converge_next_chunk(pool: ConnectionPool, chunk_users: int) -> int | None:
    """One step of the oldest rollout that can take one, in one transaction: the next
    `chunk_users` registered users are brought to the segment's percentage. Returns how many
    users it covered, or None when no rollout can step now.

    The first step of a rollout only notes the transactions still running (one could be a
    registration that read the segment before the change); chunks start once they have ended.
    """
    with transaction(pool) as connection:
        rollout = queries.fetch_one(connection, "claim_rollout")
        if rollout is None:
            return None
        segment_id = rollout["segment_id"]
        if rollout["not_waiting_yet"]:
            queries.execute(connection, "wait_for_running_transactions", segment_id=segment_id)
            return 0
        chunk = queries.fetch_one(
            connection,
            "lock_user_chunk",
            after=rollout["converged_up_to"],
            chunk_users=chunk_users,
        )
        users = chunk.pop("users")
        queries.fetch_all(connection, "lock_chunk_memberships", segment_id=segment_id, **chunk)
        at = queries.change_time(connection)
        if users:
            _converge_users(connection, rollout, chunk, at)
        queries.execute(
            connection,
            "advance_rollout",
            segment_id=segment_id,
            converged_up_to=chunk["last_user_id"] if users else rollout["converged_up_to"],
            finished=users < chunk_users,
            at=at,
        )
        return users


def _converge_users(
    connection: Connection, rollout: dict[str, Any], chunk: dict[str, Any], at: Any
) -> None:
    """Expired memberships end first, at their own time; then the chunk's users in the range who
    are neither members nor excluded join, and automatic members out of it leave. `chunk` holds
    its ids (an array literal) and its first and last id."""
    arguments = {
        "segment_id": rollout["segment_id"],
        "slug": rollout["slug"],
        "bucket_limit": bucket_limit(rollout["auto_percent"]),
        "at": at,
        **chunk,
    }
    queries.execute(connection, "settle_expired_chunk_memberships", **arguments)
    enrolled = queries.fetch_rows(connection, "enroll_user_chunk", **arguments)
    disenrolled = queries.fetch_rows(connection, "disenroll_user_chunk", **arguments)
    read_cache.note_users(connection, (user_id for (user_id,) in enrolled + disenrolled))
    metrics.AUTO_ENROLLMENTS.labels("rollout").inc(len(enrolled))


def converge_rollouts(pool: ConnectionPool, chunk_users: int, budget_seconds: float) -> int:
    """Steps rollouts until none can step or the budget is spent; returns the users covered.
    Safe in any number of workers and replicas at once: a rollout is stepped by one at a time."""
    deadline = time.monotonic() + budget_seconds
    covered = 0
    while time.monotonic() < deadline:
        stepped = converge_next_chunk(pool, chunk_users)
        if stepped is None:
            break
        covered += stepped
    return covered
