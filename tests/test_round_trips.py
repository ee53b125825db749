"""How many round trips the hot routes cost: every statement, BEGIN and COMMIT a pooled
connection sends is counted (a connection subclass records them)."""

from typing import Any, ClassVar

import psycopg2.extensions
import pytest
from support import create_segment

from segsvc import db

USER_ID = 1000


class CountingConnection(db.PooledConnection):
    """Records what it sends: each statement, the BEGIN psycopg2 sends before the first statement
    of a transaction, and COMMIT or ROLLBACK when a transaction is open."""

    sent: ClassVar[list[str]] = []

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        base = kwargs.get("cursor_factory") or self.cursor_factory or psycopg2.extensions.cursor
        connection = self

        class CountingCursor(base):  # type: ignore[misc,valid-type]
            def execute(self, query: Any, vars: Any = None) -> Any:
                if (
                    not connection.autocommit
                    and connection.status == psycopg2.extensions.STATUS_READY
                ):
                    CountingConnection.sent.append("BEGIN")
                CountingConnection.sent.append(str(query).split()[0].upper())
                return super().execute(query, vars)

        kwargs["cursor_factory"] = CountingCursor
        return super().cursor(*args, **kwargs)

    def commit(self) -> None:
        if self.status != psycopg2.extensions.STATUS_READY:
            CountingConnection.sent.append("COMMIT")
        super().commit()

    def rollback(self) -> None:
        if self.status != psycopg2.extensions.STATUS_READY:
            CountingConnection.sent.append("ROLLBACK")
        super().rollback()


@pytest.fixture
def counted(monkeypatch, make_app):
    """A client whose pool's connections count what they send; `sent` is cleared per request."""
    monkeypatch.setattr(db, "PooledConnection", CountingConnection)
    app = make_app(db_pool_max=1)
    client = app.test_client()
    create_segment(client, "VOICE")
    create_segment(client, "DISCOUNT_30")

    def request(method: str, path: str, **kwargs: Any) -> tuple[Any, list[str]]:
        CountingConnection.sent.clear()
        response = client.open(path, method=method, **kwargs)
        return response, list(CountingConnection.sent)

    return request


def test_a_change_of_a_registered_user_is_one_round_trip(counted):
    path = f"/api/v1/users/{USER_ID}/segments"
    response, first = counted("PATCH", path, json={"add": [{"slug": "VOICE"}]})
    assert response.status_code == 200
    # Prepared once per connection; the statement found no user, so the user was registered
    # and changed in a transaction of several statements.
    assert first[:2] == ["PREPARE", "EXECUTE"]
    assert first[2] == "BEGIN"
    assert first[-1] == "COMMIT"
    response, sent = counted("PATCH", path, json={"add": [{"slug": "DISCOUNT_30"}]})
    assert response.status_code == 200
    assert sent == ["EXECUTE"]
    response, sent = counted("PATCH", path, json={"add": [], "remove": ["VOICE"]})
    assert response.status_code == 200
    assert [s["slug"] for s in response.get_json()["segments"]] == ["DISCOUNT_30"]
    assert sent == ["EXECUTE"]


def test_refusals_of_a_registered_user_are_one_round_trip_and_change_nothing(counted):
    path = f"/api/v1/users/{USER_ID}/segments"
    assert counted("PATCH", path, json={"add": [{"slug": "VOICE"}]})[0].status_code == 200
    response, sent = counted("PATCH", path, json={"add": [{"slug": "NOPE"}], "remove": ["VOICE"]})
    assert response.status_code == 404
    assert response.get_json()["slugs"] == ["NOPE"]
    assert sent == ["EXECUTE"]
    past = {"slug": "DISCOUNT_30", "expires_at": "2020-01-01T00:00:00Z"}
    response, sent = counted("PATCH", path, json={"add": [past], "remove": ["VOICE"]})
    assert response.status_code == 422
    assert response.get_json()["errors"] == {
        "add": {"0": {"expires_at": ["Must be in the future."]}}
    }
    assert sent == ["EXECUTE"]
    response, _ = counted("GET", path)
    assert [s["slug"] for s in response.get_json()["segments"]] == ["VOICE"]


def test_a_read_is_one_round_trip(counted):
    path = f"/api/v1/users/{USER_ID}/segments"
    counted("GET", path)
    response, sent = counted("GET", path)
    assert response.status_code == 200
    assert sent == ["EXECUTE"]
