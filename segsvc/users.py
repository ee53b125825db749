"""User registration and deletion. Each function runs inside the caller's transaction."""

from collections.abc import Sequence
from typing import Any

from psycopg2.extensions import connection as Connection

from . import queries, read_cache, rollout
from .errors import UserNotFound

# Users registered and enrolled per statement: a statement's time grows with this and the number
# of percentage segments, never with the batch (docs/performance.md: "Registrations under load").
REGISTRATION_CHUNK = 1000


def register_users(connection: Connection, user_ids: Sequence[int]) -> int:
    """Registers the users not registered yet, each into the percentage segments that select
    it, in this transaction; returns how many were new.

    Chunk by chunk in ascending ids, each enrolled before the next is registered: a batch that
    overlaps another in flight waits for it to commit, and registering a whole batch before
    enrolling it made such waits chain (each batch waited for the next one's whole enrolment).
    A chunk's rows carry its own change time, read once its users' rows are held: a time read
    before could precede the deletion of one of them, committed in between.
    """
    ordered = sorted(set(user_ids))
    registered_count = 0
    for start in range(0, len(ordered), REGISTRATION_CHUNK):
        chunk = ordered[start : start + REGISTRATION_CHUNK]
        registered = [
            row["user_id"]
            for row in queries.fetch_all(connection, "register_users", user_ids=chunk)
        ]
        enroll_registered(connection, registered)
        registered_count += len(registered)
    return registered_count


def enroll_registered(connection: Connection, registered: Sequence[int]) -> None:
    """Users this transaction has just registered: their reads change, and they join every
    percentage segment that selects them, at a change time read now that their rows are held."""
    if registered:
        read_cache.note_users(connection, registered)
        rollout.enroll_new_users(connection, registered, queries.change_time(connection))


def lock_or_register_user(connection: Connection, user_id: int) -> None:
    """Holds the user's row lock for a change of its memberships, registering it if needed.

    Loops only when another transaction registers or deletes the same user in between.
    """
    while queries.fetch_one(connection, "lock_user_for_change", user_id=user_id) is None:
        if register_users(connection, [user_id]):
            return


def get_user(connection: Connection, user_id: int) -> dict[str, Any]:
    user = queries.fetch_one(connection, "get_user", user_id=user_id)
    if user is None:
        raise UserNotFound(f"User {user_id} is not registered.", user_id=user_id)
    return user


def delete_user(connection: Connection, user_id: int) -> None:
    """The user leaves every segment (a history row each) and is unregistered. A rollout's chunk
    holding the user (a shared lock) finishes first; a later one no longer sees the user."""
    if queries.fetch_one(connection, "lock_user_for_deletion", user_id=user_id) is None:
        raise UserNotFound(f"User {user_id} is not registered.", user_id=user_id)
    read_cache.note_users(connection, [user_id])
    queries.fetch_all(connection, "lock_user_memberships", user_id=user_id)
    at = queries.change_time(connection)
    queries.execute(connection, "settle_expired_user_memberships", user_id=user_id, at=at)
    queries.execute(connection, "remove_all_user_memberships", user_id=user_id, at=at)
    queries.execute(connection, "delete_user", user_id=user_id)


def count_registered(connection: Connection) -> int:
    return queries.fetch_one(connection, "count_registered_users")["users"]
