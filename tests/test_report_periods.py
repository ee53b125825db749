"""The history report's periods: UTC months and days, instants, mixed, and the same bounds
whatever the time zone of the database, of its session or of the service's process."""

import re
import time

import psycopg2.sql
import pytest
from support import create_segment

from segsvc import db

# Rows on both sides of the edges the tests below ask about, all in UTC.
EDGE_ROWS = {
    1: "2025-03-30T23:59:59.999999Z",
    2: "2025-03-31T00:00:00Z",
    3: "2025-03-31T09:29:59.999999Z",
    4: "2025-03-31T09:30:00Z",
    5: "2025-03-31T09:30:00.000001Z",
    6: "2025-03-31T23:30:00Z",
    7: "2025-04-01T00:00:00Z",
    8: "2025-11-30T23:59:59Z",
    9: "2025-12-01T00:30:00Z",
}


def insert_rows(sql, rows: dict[int, str], slug: str = "AVITO_VOICE_MESSAGES") -> None:
    sql.execute(
        "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
        " SELECT r.user_id, s.segment_id, 'added', 'manual', r.at::timestamptz"
        "   FROM unnest(%s::bigint[], %s::text[]) AS r (user_id, at), segments s"
        "  WHERE s.slug = %s AND s.deleted_at IS NULL",
        (list(rows), list(rows.values()), slug),
    )


@pytest.fixture
def edge_history(client, sql):
    create_segment(client, "AVITO_VOICE_MESSAGES")
    insert_rows(sql, EDGE_ROWS)


def users(client, query: str) -> list[int]:
    response = client.get(f"/api/v1/reports/history.csv?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return [int(line.split(";")[0]) for line in response.get_data(as_text=True).splitlines()[1:]]


# Each query and the users (rows above) its report holds.
PERIODS = [
    ("from=2025-03", [1, 2, 3, 4, 5, 6]),
    ("from=2025-04", [7]),
    ("from=2025-03&to=2025-04", [1, 2, 3, 4, 5, 6, 7]),
    ("from=2025-11", [8]),
    ("from=2025-12", [9]),
    ("from=2025-03-31", [2, 3, 4, 5, 6]),
    ("from=2025-03-30&to=2025-03-31", [1, 2, 3, 4, 5, 6]),
    ("from=2025-04-01", [7]),
    ("from=2025-12-01", [9]),
    # An instant: `from` included, `to` excluded; any offset.
    ("from=2025-03-31T09:30:00Z&to=2025-03-31T23:30:00Z", [4, 5]),
    ("from=2025-03-31T12:30:00%2B03:00&to=2025-03-31T19:30:00-04:00", [4, 5]),
    ("from=2025-03-31t09:30:00.000001z&to=2025-04-01T00:00:00Z", [5, 6]),
    # Beyond microseconds, both bounds round up: still exact for rows in microseconds.
    ("from=2025-03-31T09:29:59.9999991Z&to=2025-03-31T09:30:00.0000001Z", [4]),
    # Mixed: a day or a month `to` counts whole.
    ("from=2025-03-31T09:30:00Z&to=2025-03-31", [4, 5, 6]),
    ("from=2025-03-31T09:30:00Z&to=2025-04", [4, 5, 6, 7]),
    ("from=2025-03&to=2025-03-31T09:30:00Z", [1, 2, 3]),
    ("from=2025-03-31&to=2025-11", [2, 3, 4, 5, 6, 7, 8]),
    # Without `to` an instant runs up to the report's start.
    ("from=2025-03-31T23:30:00Z", [6, 7, 8, 9]),
    ("from=9999-12", []),
    ("from=9999-12-31", []),
    ("from=0001-01&to=9999-12", [1, 2, 3, 4, 5, 6, 7, 8, 9]),
]


@pytest.mark.parametrize(("query", "expected"), PERIODS)
def test_a_period_holds_exactly_its_rows(client, edge_history, query, expected):
    assert users(client, query) == expected


def test_rows_dated_after_the_reports_start_are_not_in_it(client, edge_history, sql):
    insert_rows(sql, {10: "2999-01-01T00:00:00Z"})
    assert users(client, "from=2025-12-01T00:00:00Z") == [9]
    assert users(client, "from=2025-12-01T00:00:00Z&to=3000-01") == [9]


@pytest.mark.parametrize(
    ("query", "filename"),
    [
        ("from=2025-03-31", "segsvc-history-2025-03-31.csv"),
        ("from=2025-03-30&to=2025-03-31", "segsvc-history-2025-03-30_2025-03-31.csv"),
        ("from=2025-03-31T12:30:00%2B03:00", "segsvc-history-2025-03-31T093000Z_now.csv"),
        (
            "from=2025-03&to=2025-03-31T09:30:00.5Z&user_id=7",
            "segsvc-history-2025-03_2025-03-31T093000.500000Z-user-7.csv",
        ),
    ],
)
def test_a_reports_file_is_named_after_its_period(client, query, filename):
    response = client.get(f"/api/v1/reports/history.csv?{query}")
    assert response.headers["Content-Disposition"] == f'attachment; filename="{filename}"'


@pytest.mark.parametrize(
    ("body", "query"),
    [
        ({"from": "2025-03-31"}, "from=2025-03-31&to=2025-03-31"),
        ({"from": "2025-03", "to": "2025-04-01"}, "from=2025-03&to=2025-04-01"),
        ({"from": "2025-03-31T12:30:00+03:00"}, "from=2025-03-31T09:30:00Z"),
        (
            {"from": "2025-03-31T12:30:00.25+03:00", "to": "2025-04"},
            "from=2025-03-31T09:30:00.250000Z&to=2025-04",
        ),
    ],
)
def test_a_link_writes_the_period_out_in_utc(client, body, query):
    response = client.post("/api/v1/reports", json=body)
    assert response.status_code == 201
    assert response.get_json()["url"] == f"/api/v1/reports/history.csv?{query}"
    assert client.get(response.get_json()["url"]).status_code == 200


def test_a_link_refuses_a_period_that_ends_before_it_begins(client):
    response = client.post(
        "/api/v1/reports", json={"from": "2025-03-31T10:00:00Z", "to": "2025-03-31T10:00:00Z"}
    )
    assert response.status_code == 422
    assert response.get_json()["errors"] == {"to": ["Must end after `from` begins."]}


def set_database_time_zone(sql, zone: str) -> None:
    name = sql.value("SELECT current_database()")
    sql.execute(
        psycopg2.sql.SQL("ALTER DATABASE {} SET timezone = {}").format(
            psycopg2.sql.Identifier(name), psycopg2.sql.Literal(zone)
        )
    )


def session_time_zone(app) -> str:
    with db.single_statement(db.get_pool(app)) as connection, connection.cursor() as cursor:
        cursor.execute("SHOW TimeZone")
        return cursor.fetchone()[0]


def fill_pages_across_midnight(client, sql) -> None:
    """15,000 rows of segment BULK (users 1000..15999) from 2025-03-31T23:00Z, three a second:
    10,800 on March 31 and 4,200 on April 1, so pages end amid rows of one time."""
    create_segment(client, "BULK")
    sql.execute(
        "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
        " SELECT 1000 + i, s.segment_id, 'added', 'manual',"
        "        timestamptz '2025-03-31 23:00:00Z' + (i / 3) * interval '1 second'"
        "   FROM generate_series(0, 14999) AS i, segments s WHERE s.slug = 'BULK'"
    )


def bulk_users(client, query: str) -> list[int]:
    response = client.get(f"/api/v1/reports/history.csv?{query}")
    lines = response.get_data(as_text=True).splitlines()[1:]
    return [int(line.split(";")[0]) for line in lines if line.split(";")[1] == "BULK"]


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Moscow", "Asia/Kathmandu"])
def test_periods_are_utc_whatever_the_database_time_zone(make_app, sql, zone):
    set_database_time_zone(sql, zone)
    client = make_app().test_client()
    assert session_time_zone(client.application) == zone
    create_segment(client, "AVITO_VOICE_MESSAGES")
    insert_rows(sql, EDGE_ROWS)
    for query, expected in PERIODS:
        assert users(client, query) == expected, query
    response = client.get("/api/v1/reports/history.csv?from=2025-03-31&user_id=6")
    assert response.get_data(as_text=True).splitlines()[1].split(";")[3] == "2025-03-31T23:30:00Z"

    fill_pages_across_midnight(client, sql)
    for query in ("from=2025-03-31", "from=2025-03-31&segment=BULK"):
        assert bulk_users(client, query) == list(range(1000, 11800)), query
    for query in ("from=2025-04-01", "from=2025-04-01T00:00:00%2B00:00&segment=BULK"):
        assert bulk_users(client, query) == list(range(11800, 16000)), query


def test_periods_are_utc_whatever_the_services_time_zone(make_app, sql, monkeypatch):
    """TZ for Python's local time, PGTZ for the zone libpq asks the session to use."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    monkeypatch.setenv("PGTZ", "America/St_Johns")
    time.tzset()
    try:
        assert time.localtime(1_700_000_000).tm_gmtoff == 14 * 3600
        client = make_app().test_client()
        assert session_time_zone(client.application) == "America/St_Johns"
        create_segment(client, "AVITO_VOICE_MESSAGES")
        insert_rows(sql, EDGE_ROWS)
        for query, expected in PERIODS:
            assert users(client, query) == expected, query
        link = client.post("/api/v1/reports", json={"from": "2025-03-31T12:30:00+03:00"})
        assert link.get_json()["url"].endswith("?from=2025-03-31T09:30:00Z")
        fill_pages_across_midnight(client, sql)
        assert bulk_users(client, "from=2025-04-01&segment=BULK") == list(range(11800, 16000))
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("2025-03", True),
        ("2025-03-31", True),
        ("2025-03-31T09:30:00Z", True),
        ("2025-03-31t09:30:00.123456789z", True),
        ("2025-03-31T09:30:00-04:00", True),
        ("2025-03-31T09:30Z", False),
        ("2025-03-31 09:30:00Z", False),
        ("2025-03-31T09:30:00", False),
        ("2025-03-31T09:30:00+0400", False),
        ("20250331", False),
        ("2025-3", False),
        ("2025-03-31T09:30:00Z ", False),
    ],
)
def test_the_documented_pattern_accepts_what_the_service_parses(client, value, valid):
    parameter = next(
        parameter
        for parameter in client.get("/openapi.json").get_json()["paths"][
            "/api/v1/reports/history.csv"
        ]["get"]["parameters"]
        if parameter["name"] == "from"
    )
    assert (re.search(parameter["schema"]["pattern"], value) is not None) is valid
    response = client.get("/api/v1/reports/history.csv", query_string={"from": value})
    assert response.status_code == (200 if valid else 422)
