"""Named SQL queries from the `sql/*.sql` files, loaded once and run by name.

A file holds blocks that start with a `-- name: <query_name>` line; names are unique across
files so that every call site is greppable. Parameters are always bound (`%(name)s`).
"""

import functools
import re
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from psycopg2 import errors
from psycopg2.extensions import connection as Connection
from psycopg2.extras import RealDictCursor

QUERY_DIRECTORY = Path(__file__).resolve().parent.parent / "sql"

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>[a-z][a-z0-9_]*)\s*$", re.MULTILINE)
# A bound parameter and the cast that follows it, if any.
_PARAMETER = re.compile(r"%\((?P<name>[a-z_][a-z0-9_]*)\)s(?P<cast>::[a-z_]+(?:\[\])?)?")


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


@functools.cache
def prepared_statement(name: str) -> tuple[str, str, str]:
    """A named query as a server-side prepared statement: its name, the `PREPARE` (the query's
    text with each `%(param)s` numbered `$n` in order of first use) and the `EXECUTE` that binds
    the parameters in that order. The query itself stays as written in `sql/`.

    An argument keeps the cast its parameter has in the query (`%(ids)s::bigint[]`): an EXECUTE
    coerces only implicitly, and `ARRAY[NULL]`, psycopg2's list of one None, is a text[]."""
    order: dict[str, str] = {}  # name: cast

    def number(match: re.Match[str]) -> str:
        order.setdefault(match["name"], match["cast"] or "")
        return f"${list(order).index(match['name']) + 1}{match['cast'] or ''}"

    statement = f"segsvc_{name}"
    body = _PARAMETER.sub(number, load_queries()[name]).replace("%%", "%")
    arguments = ", ".join(f"%({parameter})s{cast}" for parameter, cast in order.items())
    return statement, f"PREPARE {statement} AS {body}", f"EXECUTE {statement} ({arguments})"


def fetch_prepared(connection: Connection, name: str, **params: Any) -> list[dict[str, Any]]:
    """`fetch_all` through a statement prepared once per connection: for the hot reads, whose
    planning costs PostgreSQL twice their execution (0.2 ms against 0.09 ms).

    Only on a pool's connection that keeps `prepared_statements` (None when
    SEGSVC_DB_PREPARED_STATEMENTS is off) and in autocommit, where a failed statement aborts no
    transaction and can be retried: a statement the server no longer has (DISCARD ALL, a session
    pooler's new backend) is prepared again; one whose result type a migration changed is
    deallocated and prepared again.
    """
    prepared: set[str] | None = getattr(connection, "prepared_statements", None)
    if prepared is None or not connection.autocommit:
        return fetch_all(connection, name, **params)
    statement, prepare, execute = prepared_statement(name)
    with connection.cursor(cursor_factory=RealDictCursor) as cursor:
        for retry in (False, True):
            if statement not in prepared:
                # One prepared by an earlier call whose answer was lost is there: fine.
                with suppress(errors.DuplicatePreparedStatement):
                    cursor.execute(prepare)
                prepared.add(statement)
            try:
                cursor.execute(execute, params)
                return cursor.fetchall()
            except errors.InvalidSqlStatementName:
                if retry:
                    raise
                prepared.discard(statement)
            except errors.FeatureNotSupported:  # "cached plan must not change result type"
                if retry:
                    raise
                prepared.discard(statement)
                cursor.execute(f"DEALLOCATE {statement}")
    raise AssertionError("unreachable: the retry returns or raises")


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
