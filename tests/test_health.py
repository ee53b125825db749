"""Liveness, readiness, and what a request sees when the database goes away."""

from segsvc import create_app, db
from segsvc.config import Config


def test_healthz_and_readyz_answer_ok(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ok"}


def test_without_a_database_readyz_is_503_and_healthz_stays_200():
    app = create_app(Config(database_url="postgresql://postgres@127.0.0.1:1/none"))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "database_unavailable"
    assert client.get("/api/v1/users/1000/segments").status_code == 503
    db.close_pools(app)


def test_a_connection_killed_under_the_pool_is_replaced(app, client, sql):
    assert client.get("/readyz").status_code == 200
    sql.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'segsvc' AND datname = current_database()"
    )
    first = client.get("/readyz")
    assert first.status_code in (200, 503)
    assert client.get("/readyz").status_code == 200
    assert client.get("/api/v1/users/1000/segments").status_code == 200


def test_every_request_gives_its_connection_back(app, client):
    for _ in range(3 * app.config["SEGSVC"].db_pool_max):
        client.get("/api/v1/segments/NOPE")
        client.get("/readyz")
    pool = db.get_pool(app)
    assert pool.in_use() == 0
