"""User registration and deletion. Each function runs inside the caller's transaction."""

from collections.abc import Sequence
from typing import Any

from psycopg2.extensions import connection as Connection

from . import queries, rollout
from .errors import UserNotFound


def register_users(connection: Connection, user_ids: Sequence[int]) -> int:
    """Registers the users not registered yet, each into the percentage segments that select
    it, in this transaction; returns how many were new."""
    queries.fetch_one(connection, "lock_user_set_shared")
    registered = [
        row["user_id"] for row in queries.fetch_all(connection, "register_users", user_ids=user_ids)
    ]
    if registered:
        at = queries.change_time(connection)
        rollout.enroll_new_users(connection, registered, at)
    return len(registered)


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
    """The user leaves every segment (a history row each) and is unregistered; never while a
    percentage changes, as that may be adding the user."""
    queries.fetch_one(connection, "lock_user_set_shared")
    if queries.fetch_one(connection, "lock_user_for_deletion", user_id=user_id) is None:
        raise UserNotFound(f"User {user_id} is not registered.", user_id=user_id)
    queries.fetch_all(connection, "lock_user_memberships", user_id=user_id)
    at = queries.change_time(connection)
    queries.execute(connection, "settle_expired_user_memberships", user_id=user_id, at=at)
    queries.execute(connection, "remove_all_user_memberships", user_id=user_id, at=at)
    queries.execute(connection, "delete_user", user_id=user_id)
