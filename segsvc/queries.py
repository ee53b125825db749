"""Named SQL queries from the `sql/*.sql` files, loaded once and run by name.

A file holds blocks that start with a `-- name: <query_name>` line; names are unique across
files so that every call site is greppable. Parameters are always bound (`%(name)s`).
"""

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from psycopg2.extensions import connection as Connection
from psycopg2.extras import RealDictCursor

QUERY_DIRECTORY = Path(__file__).resolve().parent.parent / "sql"

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>[a-z][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str, source: str) -> dict[str, str]:
    """Splits one file into its named blocks; text before the first name is a file comment."""
    matches = list(_NAME_LINE.finditer(text))
    queries = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        if not body:
            raise ValueError(f"{source}: query {match['name']!r} is empty")
        queries[match["name"]] = body
    return queries


@functools.cache
def load_queries(directory: Path = QUERY_DIRECTORY) -> Mapping[str, str]:
    queries: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, body in parse_queries(path.read_text(encoding="utf-8"), path.name).items():
            if name in queries:
                raise ValueError(f"{path.name}: query {name!r} is defined twice")
            queries[name] = body
    return queries


def fetch_one(connection: Connection, name: str, **params: Any) -> dict[str, Any] | None:
    with connection.cursor(cursor_factory=RealDictCursor) as cursor:
        cursor.execute(load_queries()[name], params)
        return cursor.fetchone()


def fetch_all(connection: Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    with connection.cursor(cursor_factory=RealDictCursor) as cursor:
        cursor.execute(load_queries()[name], params)
        return cursor.fetchall()


def fetch_rows(connection: Connection, name: str, **params: Any) -> list[tuple]:
    """Rows as plain tuples: for many rows (report pages), where dicts would cost more."""
    with connection.cursor() as cursor:
        cursor.execute(load_queries()[name], params)
        return cursor.fetchall()


def execute(connection: Connection, name: str, **params: Any) -> int:
    """Runs a statement and returns the number of rows it affected."""
    with connection.cursor() as cursor:
        cursor.execute(load_queries()[name], params)
        return cursor.rowcount


def change_time(connection: Connection) -> Any:
    """The database clock now. Read once per change, after its locks are held, so that a later
    change never gets an earlier time; every row of the change is stamped with it."""
    return fetch_one(connection, "change_time")["at"]
