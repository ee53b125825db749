"""Database outages and slow statements: quick 503s, and recovery without a restart."""

import tempfile
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from flask import g, request
from support import change_segments, create_segment, segment_slugs

from segsvc import create_app, db
from segsvc.config import Config
from segsvc.embedded import embedded_server
from segsvc.migrate import apply_migrations


def assert_problem(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == code


@pytest.fixture
def stoppable_pgdata():
    with tempfile.TemporaryDirectory(prefix="segsvc-outage-pg-", ignore_cleanup_errors=True) as top:
        yield Path(top).resolve() / "pgdata"


def test_an_outage_gives_quick_503s_and_the_service_recovers_by_itself(stoppable_pgdata):
    with embedded_server(stoppable_pgdata) as admin_url:
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE outage")
        admin.close()
        url = admin_url.replace("/postgres?", "/outage?")
        apply_migrations(url)
        app = create_app(Config(database_url=url, db_connect_timeout_seconds=1))
        client = app.test_client()
        create_segment(client, "AVITO_VOICE_MESSAGES")
        change_segments(client, 1000, add=["AVITO_VOICE_MESSAGES"])
        assert client.get("/readyz").status_code == 200
    try:
        for request in (
            lambda: client.get("/api/v1/users/1000/segments"),
            lambda: client.get("/readyz"),
            lambda: change_segments(client, 1000, remove=["AVITO_VOICE_MESSAGES"]),
            lambda: client.get("/api/v1/segments"),
        ):
            started = time.monotonic()
            response = request()
            assert time.monotonic() - started < 3
            assert_problem(response, 503, "database_unavailable")
        assert client.get("/healthz").status_code == 200

        with embedded_server(stoppable_pgdata) as admin_url_again:
            assert admin_url_again == admin_url
            deadline = time.monotonic() + 5
            statuses = []
            while time.monotonic() < deadline:
                statuses.append(client.get("/api/v1/users/1000/segments").status_code)
                if statuses[-1] == 200:
                    break
                time.sleep(0.1)
            assert statuses[-1] == 200, statuses
            assert segment_slugs(client, 1000) == ["AVITO_VOICE_MESSAGES"]
            assert client.get("/readyz").status_code == 200
            assert db.get_pool(app).in_use() == 0
            db.close_pools(app)
    finally:
        db.close_pools(app)


def test_broken_pooled_connections_are_all_replaced_after_one_failure(app, client, sql):
    create_segment(client, "A")
    barrier = threading.Barrier(3)

    def hold_a_connection() -> None:
        with app.app_context():
            pool = db.get_pool(app)
            connection = pool.acquire()
            barrier.wait()
            pool.release(connection)

    threads = [threading.Thread(target=hold_a_connection) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sql.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'segsvc' AND datname = current_database()"
    )
    statuses = [client.get("/api/v1/segments/A").status_code for _ in range(4)]
    assert statuses[1:] == [200, 200, 200], statuses
    assert statuses[0] in (200, 503)


def test_a_slow_statement_is_cancelled_with_a_503_and_the_worker_moves_on(database_url_for_test):
    app = create_app(Config(database_url=database_url_for_test, statement_timeout_seconds=1))
    client = app.test_client()
    try:
        create_segment(client, "A")
        change_segments(client, 1000, add=["A"])
        blocker = psycopg2.connect(database_url_for_test)
        try:
            blocker.cursor().execute("SELECT 1 FROM users WHERE user_id = 1000 FOR UPDATE")
            started = time.monotonic()
            response = change_segments(client, 1000, remove=["A"])
            elapsed = time.monotonic() - started
            assert_problem(response, 503, "database_timeout")
            assert 0.9 < elapsed < 3
        finally:
            blocker.rollback()
            blocker.close()
        assert change_segments(client, 1000, remove=["A"]).status_code == 200
        assert segment_slugs(client, 1000) == []
        assert db.get_pool(app).in_use() == 0
    finally:
        db.close_pools(app)


def test_a_commit_lost_with_the_database_is_a_503_not_a_500(app, client, sql):
    """The commit runs after the view, where errors skip the error handlers (found by the soak
    test: PostgreSQL stopping between a PATCH's statements and its commit)."""

    @app.after_request
    def lose_the_connection_before_the_commit(response):
        if request.method != "PATCH":
            return response
        backend = g.db_connection.info.backend_pid
        sql.execute("SELECT pg_terminate_backend(%s)", (backend,))
        deadline = time.monotonic() + 10
        while sql.value("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend,)):
            assert time.monotonic() < deadline, "the backend outlived pg_terminate_backend"
            time.sleep(0.02)
        return response

    create_segment(client, "A")
    assert_problem(change_segments(client, 1000, add=["A"]), 503, "database_unavailable")
    assert sql.value("SELECT count(*) FROM memberships") == 0


def test_a_connection_ended_by_the_server_mid_transaction_still_frees_its_slot(app, sql):
    """The server ends an idle transaction (or the session) under a borrowed connection: giving
    it back must not raise, and the slot must be free again."""
    pool = db.get_pool(app)
    connection = pool.acquire()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    sql.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg2.OperationalError), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    pool.release(connection)
    assert pool.in_use() == 0
    with db.transaction(pool) as fresh, fresh.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
