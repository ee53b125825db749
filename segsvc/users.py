"""User registration and deletion. Each function runs inside the caller's transaction."""

from typing import Any

from psycopg2.extensions import connection as Connection

from . import queries
from .errors import UserNotFound


def register_users(connection: Connection, user_ids: list[int]) -> int:
    """Registers the users not registered yet; returns how many were new."""
    return queries.execute(connection, "register_users", user_ids=user_ids)


def get_user(connection: Connection, user_id: int) -> dict[str, Any]:
    user = queries.fetch_one(connection, "get_user", user_id=user_id)
    if user is None:
        raise UserNotFound(f"User {user_id} is not registered.", user_id=user_id)
    return user


def delete_user(connection: Connection, user_id: int) -> None:
    """The user leaves every segment (a history row each) and is unregistered."""
    if queries.fetch_one(connection, "lock_user", user_id=user_id) is None:
        raise UserNotFound(f"User {user_id} is not registered.", user_id=user_id)
    queries.fetch_all(connection, "lock_user_memberships", user_id=user_id)
    at = queries.fetch_one(connection, "change_time")["at"]
    queries.execute(connection, "settle_expired_user_memberships", user_id=user_id, at=at)
    queries.execute(connection, "remove_all_user_memberships", user_id=user_id, at=at)
    queries.execute(connection, "delete_user", user_id=user_id)
