"""The hot reads and a user's change run as statements prepared once per pooled connection
(queries.fetch_prepared), and keep working when the server forgets them or a migration changes
their result type."""

import pytest
from support import change_segments, create_segment

from segsvc import db, queries

USER_ID = 1000
SINGLE = "segsvc_user_segments"
BATCH = "segsvc_users_segments"
CHANGE = "segsvc_change_user_segments"


@pytest.fixture
def one_connection_app(make_app):
    """One pooled connection, so that every request and the test's checks share it."""
    return make_app(db_pool_max=1)


def server_statements(app) -> set[str]:
    """The statements the pool's one connection has prepared, as the server reports them."""
    pool = db.get_pool(app)
    connection = pool.acquire()
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM pg_prepared_statements")
            return {name for (name,) in cursor.fetchall()}
    finally:
        pool.release(connection)


def run_on_pool_connection(app, statement: str) -> None:
    pool = db.get_pool(app)
    connection = pool.acquire()
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(statement)
    finally:
        pool.release(connection)


def read(client) -> list[str]:
    response = client.get(f"/api/v1/users/{USER_ID}/segments")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [segment["slug"] for segment in response.get_json()["segments"]]


def lookup(client) -> list[list[str]]:
    response = client.post("/api/v1/users/segments/lookup", json={"user_ids": [USER_ID, 7]})
    assert response.status_code == 200, response.get_data(as_text=True)
    return [[s["slug"] for s in user["segments"]] for user in response.get_json()["users"]]


@pytest.fixture
def member(one_connection_app):
    client = one_connection_app.test_client()
    create_segment(client, "VOICE")
    create_segment(client, "HALF", auto_percent=100)
    assert change_segments(client, USER_ID, add=["VOICE"]).status_code == 200
    return client


def test_a_query_becomes_a_prepared_statement_with_numbered_parameters():
    name, prepare, execute = queries.prepared_statement("user_segments")
    assert name == SINGLE
    assert prepare.startswith(f"PREPARE {SINGLE} AS ")
    assert "%(" not in prepare
    assert "$1" in prepare
    assert "$2" not in prepare
    assert execute == f"EXECUTE {SINGLE} (%(user_id)s)"


def test_reads_prepare_their_statements_once_per_connection(one_connection_app, member):
    assert read(member) == ["HALF", "VOICE"]
    assert lookup(member) == [["HALF", "VOICE"], ["HALF"]]
    assert read(member) == ["HALF", "VOICE"]
    assert server_statements(one_connection_app) == {SINGLE, BATCH, CHANGE}


def test_a_change_is_read_through_the_prepared_statement(one_connection_app, member):
    assert read(member) == ["HALF", "VOICE"]
    assert change_segments(member, USER_ID, remove=["VOICE"]).status_code == 200
    assert read(member) == ["HALF"]
    assert lookup(member) == [["HALF"], ["HALF"]]


def test_reads_prepare_again_when_the_server_forgot_the_statements(one_connection_app, member):
    """DISCARD ALL, or a session pooler that handed the connection another backend."""
    assert read(member) == ["HALF", "VOICE"]
    assert lookup(member)
    run_on_pool_connection(one_connection_app, "DEALLOCATE ALL")
    assert read(member) == ["HALF", "VOICE"]
    assert lookup(member) == [["HALF", "VOICE"], ["HALF"]]
    assert change_segments(member, USER_ID, remove=["VOICE"]).status_code == 200
    assert read(member) == ["HALF"]
    assert server_statements(one_connection_app) == {SINGLE, BATCH, CHANGE}


def test_reads_survive_a_migration_that_changes_their_result_type(one_connection_app, member):
    """PostgreSQL refuses a prepared statement whose result columns changed type ("cached plan
    must not change result type"); the read deallocates it, prepares it again, and answers."""
    assert read(member) == ["HALF", "VOICE"]
    assert lookup(member)
    run_on_pool_connection(
        one_connection_app, "ALTER TABLE segments ALTER COLUMN slug TYPE varchar"
    )
    assert read(member) == ["HALF", "VOICE"]
    assert lookup(member) == [["HALF", "VOICE"], ["HALF"]]


def test_prepared_statements_can_be_switched_off(make_app):
    """For a transaction-pooling PgBouncer: consecutive statements may reach other backends."""
    app = make_app(db_pool_max=1, db_prepared_statements=False)
    client = app.test_client()
    create_segment(client, "VOICE")
    assert change_segments(client, USER_ID, add=["VOICE"]).status_code == 200
    assert read(client) == ["VOICE"]
    assert lookup(client) == [["VOICE"], []]
    assert server_statements(app) == set()
