"""The "naive peer" for `make bench`: segsvc's hot read as a typical developer would write it
(Flask, psycopg2, a connection per thread, `jsonify`), under segsvc's gunicorn settings. It runs
segsvc's own `user_segments` statement, so the two differ only in what surrounds the query."""

import os
import threading

import psycopg2
from flask import Flask, Response, jsonify
from psycopg2.extensions import connection as Connection

from segsvc.queries import load_queries

from .ceiling import NO_JOBS

USER_SEGMENTS = load_queries()["user_segments"]

app = Flask(__name__)
app.config["SEGSVC"] = NO_JOBS
_thread = threading.local()


def thread_connection() -> Connection:
    """Opened by each gunicorn thread on its first request (after the fork), then kept. In
    autocommit: one SELECT needs no transaction, and the peer should not be slower than need be."""
    connection = getattr(_thread, "connection", None)
    if connection is None:
        connection = psycopg2.connect(os.environ["DATABASE_URL"])
        connection.autocommit = True
        _thread.connection = connection
    return connection


@app.get("/api/v1/users/<int:user_id>/segments")
def user_segments(user_id: int) -> Response:
    with thread_connection().cursor() as cursor:
        cursor.execute(USER_SEGMENTS, {"user_id": user_id})
        rows = cursor.fetchall()
    return jsonify(
        user_id=user_id,
        segments=[
            {
                "slug": slug,
                "added_at": added_at.isoformat(),
                "expires_at": expires_at.isoformat() if expires_at else None,
            }
            # The statement may return more columns (for segsvc's cache); the answer takes three.
            for slug, added_at, expires_at, *_ in rows
        ],
    )
