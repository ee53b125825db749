"""The history report: streamed CSV, and links to it. Periods and time zones are in
test_report_periods.py, the segment filter and the delimiter in test_report_filters.py."""

import csv
import io
import tracemalloc

import pytest
from support import change_segments, create_segment, expire_membership

from segsvc import db

HEADER = "user_id;segment;operation;at;reason;segment_id;actor"


def insert_history(sql, user_id: int, slug: str, operation: str, at: str, reason="manual"):
    sql.execute(
        "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
        " SELECT %s, segment_id, %s, %s, %s FROM segments WHERE slug = %s",
        (user_id, operation, reason, at, slug),
    )


def report_lines(client, query: str) -> list[str]:
    response = client.get(f"/api/v1/reports/history.csv?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True).splitlines()


@pytest.fixture
def boundary_history(client, sql):
    """Rows on both sides of August 2023's edges, in UTC."""
    create_segment(client, "AVITO_VOICE_MESSAGES")
    for user_id, at in [
        (1000, "2023-07-31T23:59:59.999999Z"),
        (1000, "2023-08-01T00:00:00Z"),
        (1002, "2023-08-15T12:30:00.5Z"),
        (1000, "2023-08-31T23:59:59.999999Z"),
        (1002, "2023-09-01T00:00:00Z"),
        (1000, "2023-10-01T00:00:00Z"),
    ]:
        insert_history(sql, user_id, "AVITO_VOICE_MESSAGES", "added", at)


def test_a_report_streams_csv_with_a_header_and_a_named_attachment(client, boundary_history):
    response = client.get("/api/v1/reports/history.csv?from=2023-08")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.mimetype_params["charset"] == "utf-8"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="segsvc-history-2023-08.csv"'
    )
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True)), delimiter=";"))
    assert rows == [
        HEADER.split(";"),
        ["1000", "AVITO_VOICE_MESSAGES", "added", "2023-08-01T00:00:00Z", "manual", "1", ""],
        ["1002", "AVITO_VOICE_MESSAGES", "added", "2023-08-15T12:30:00.500000Z", "manual", "1", ""],
        ["1000", "AVITO_VOICE_MESSAGES", "added", "2023-08-31T23:59:59.999999Z", "manual", "1", ""],
    ]


def test_a_report_for_a_month_holds_exactly_that_months_rows(client, boundary_history):
    assert len(report_lines(client, "from=2023-08")) == 1 + 3
    assert len(report_lines(client, "from=2023-07")) == 1 + 1
    assert len(report_lines(client, "from=2023-08&to=2023-09")) == 1 + 4
    assert len(report_lines(client, "from=2023-07&to=2023-10")) == 1 + 6
    assert report_lines(client, "from=2024-01") == [HEADER]


def test_a_report_for_one_user_has_only_that_users_rows(client, boundary_history):
    response = client.get("/api/v1/reports/history.csv?from=2023-08&to=2023-09&user_id=1002")
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="segsvc-history-2023-08_2023-09-user-1002.csv"'
    )
    lines = response.get_data(as_text=True).splitlines()
    assert [line.split(";")[0] for line in lines[1:]] == ["1002", "1002"]


def test_a_report_shows_real_changes_in_order_with_their_reasons(client, sql):
    create_segment(client, "AVITO_DISCOUNT_30")
    create_segment(client, "AVITO_DISCOUNT_50")
    change_segments(client, 1000, add=["AVITO_DISCOUNT_30", "AVITO_DISCOUNT_50"])
    change_segments(client, 1000, remove=["AVITO_DISCOUNT_30"])
    client.delete("/api/v1/segments/AVITO_DISCOUNT_50")
    month = sql.value("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')")
    lines = report_lines(client, f"from={month}&user_id=1000")
    assert [line.split(";")[1:3] + line.split(";")[4:5] for line in lines[1:]] == [
        ["AVITO_DISCOUNT_30", "added", "manual"],
        ["AVITO_DISCOUNT_50", "added", "manual"],
        ["AVITO_DISCOUNT_30", "removed", "manual"],
        ["AVITO_DISCOUNT_50", "removed", "segment_deleted"],
    ]


def test_a_report_first_ends_expired_memberships_at_their_expiry_time(client, sql):
    create_segment(client, "AVITO_DISCOUNT_30")
    change_segments(client, 1000, add=[{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 60}])
    expire_membership(sql, 1000, "AVITO_DISCOUNT_30")
    expires_at = sql.value(
        "SELECT to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        " FROM memberships"
    )
    month = sql.value("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')")
    lines = report_lines(client, f"from={month}")
    assert lines[-1] == f"1000;AVITO_DISCOUNT_30;removed;{expires_at};expired;1;"
    assert sql.value("SELECT count(*) FROM memberships") == 0


def test_re_adding_after_expiry_reports_added_removed_added(app, client, sql):
    create_segment(client, "AVITO_DISCOUNT_30")
    change_segments(client, 1000, add=[{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 60}])
    expire_membership(sql, 1000, "AVITO_DISCOUNT_30")
    change_segments(client, 1000, add=["AVITO_DISCOUNT_30"])
    month = sql.value("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')")
    lines = report_lines(client, f"from={month}&user_id=1000")
    assert [line.split(";")[2] + "/" + line.split(";")[4] for line in lines[1:]] == [
        "added/manual",
        "removed/expired",
        "added/manual",
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "from"),
        ("from=2023-13", "from"),
        ("from=2023-8", "from"),
        ("from=23-08", "from"),
        ("from=2023-02-30", "from"),
        ("from=2023-08-01T10:00:00", "from"),
        ("from=2023-08-01T10:00Z", "from"),
        ("from=2023-08-01T10:00:00+03:00", "from"),  # an unencoded `+` is a space
        ("from=2023-08-01T24:00:00Z", "from"),
        ("from=2023-08-01T10:00:00%2B24:00", "from"),
        ("from=20230801T100000Z", "from"),
        ("from=0000-12", "from"),
        ("from=0001-01-01T00:00:00%2B01:00", "from"),
        ("from=9999-12-31T23:59:59-01:00", "from"),
        ("from=2023-08-01T00:00:00Z&to=2023-08-01T00:00:00Z", "to"),
        ("from=2023-08-15&to=2023-08-14", "to"),
        ("from=2023-08&to=2023-07-31T23:59:59Z", "to"),
        ("from=2023-08&delimiter=%09", "delimiter"),
        ("from=2023-08&delimiter=", "delimiter"),
        ("from=2023-08&delimiter=;;", "delimiter"),
        ("from=2023-08&segment=A%20B", "segment"),
        ("from=2023-08&segment=", "segment"),
        ("from=2023-08%0A", "from"),
        ("from=2023-09&to=2023-08", "to"),
        ("from=2023-08&user_id=0", "user_id"),
        ("from=2023-08&user_id=abc", "user_id"),
        ("from=2023-08&user_id=9223372036854775808", "user_id"),
        ("from=2023-08&unknown=1", "unknown"),
    ],
)
def test_bad_report_parameters_are_422_before_any_csv(client, query, field):
    response = client.get(f"/api/v1/reports/history.csv?{query}")
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert field in response.get_json()["errors"]


def test_a_report_link_points_at_the_csv_download(client, boundary_history):
    response = client.post(
        "/api/v1/reports", json={"from": "2023-08", "to": "2023-09", "user_id": 1000}
    )
    assert response.status_code == 201
    url = response.get_json()["url"]
    assert url == "/api/v1/reports/history.csv?from=2023-08&to=2023-09&user_id=1000"
    assert response.headers["Location"] == url
    lines = client.get(url).get_data(as_text=True).splitlines()
    assert len(lines) == 1 + 2


@pytest.mark.parametrize(
    "host", ["evil.example", "user@evil.example", "evil.example/path", "evil example", "[::1]:1"]
)
def test_a_report_link_never_comes_from_the_host_header(client, host):
    response = client.post("/api/v1/reports", json={"from": "2023-08"}, headers={"Host": host})
    assert response.status_code == 201
    url = response.get_json()["url"]
    assert url == "/api/v1/reports/history.csv?from=2023-08&to=2023-08"
    assert response.headers["Location"] == url


def test_a_report_link_starts_with_the_configured_public_url(make_app):
    client = make_app(public_url="https://segsvc.example.com/segments").test_client()
    response = client.post("/api/v1/reports", json={"from": "2023-08"}, headers={"Host": "evil"})
    url = "https://segsvc.example.com/segments/api/v1/reports/history.csv?from=2023-08&to=2023-08"
    assert response.get_json()["url"] == url
    assert response.headers["Location"] == url


def test_a_report_link_without_a_user_covers_everyone(client, boundary_history):
    response = client.post("/api/v1/reports", json={"from": "2023-08"})
    assert response.get_json()["url"].endswith("/history.csv?from=2023-08&to=2023-08")
    assert len(client.get(response.get_json()["url"]).get_data(as_text=True).splitlines()) == 4


def test_a_report_link_validates_like_the_download(client):
    response = client.post("/api/v1/reports", json={"from": "2023-09", "to": "2023-08"})
    assert response.status_code == 422
    assert "to" in response.get_json()["errors"]
    response = client.post("/api/v1/reports", json={"from": "2023-09", "user_id": "1000"})
    assert response.status_code == 422


def fill_history(sql, rows: int) -> None:
    sql.execute("INSERT INTO segments (slug, created_at) VALUES ('BULK', '2023-08-01')")
    sql.execute(
        "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
        " SELECT 1 + i %% 50000, s.segment_id,"
        "        CASE WHEN i %% 2 = 0 THEN 'added' ELSE 'removed' END, 'manual',"
        "        timestamptz '2023-08-01 00:00Z' + i * interval '1 second'"
        "   FROM generate_series(0, %s - 1) AS i, segments s WHERE s.slug = 'BULK'",
        (rows,),
    )


def test_a_report_of_200000_rows_streams_with_bounded_memory(client, sql):
    fill_history(sql, 200000)
    tracemalloc.start()
    try:
        response = client.get("/api/v1/reports/history.csv?from=2023-08", buffered=False)
        lines = 0
        largest_chunk = 0
        for chunk in response.response:
            lines += chunk.count(b"\n")
            largest_chunk = max(largest_chunk, len(chunk))
        response.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == 1 + 200000
    assert largest_chunk < 1024 * 1024
    # The whole CSV is ~9 MB and its rows as Python objects several times that.
    assert peak < 8 * 1024 * 1024, f"peak traced memory {peak / 2**20:.1f} MiB"


def test_a_report_holds_no_connection_between_pages(app, client, sql):
    """A slow reader costs the database nothing, and a client leaving midway leaves no trace."""
    fill_history(sql, 50000)
    response = client.get("/api/v1/reports/history.csv?from=2023-08", buffered=False)
    chunks = iter(response.response)
    assert next(chunks).startswith(HEADER.encode())
    next(chunks)
    assert db.get_pool(app).in_use() == 0
    assert (
        sql.value(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'segsvc' AND state <> 'idle'"
        )
        == 0
    )
    response.close()
    assert db.get_pool(app).in_use() == 0
    assert client.get("/api/v1/reports/history.csv?from=2023-08").status_code == 200


def test_downloads_beyond_the_workers_report_slots_get_503_until_one_ends(make_app, sql):
    fill_history(sql, 20000)
    client = make_app(report_streams_max=1).test_client()
    first = client.get("/api/v1/reports/history.csv?from=2023-08", buffered=False)
    assert first.status_code == 200

    refused = client.get("/api/v1/reports/history.csv?from=2023-08")
    assert refused.status_code == 503
    assert refused.get_json()["code"] == "too_many_reports"
    assert refused.headers["Retry-After"] == "10"

    first.close()
    second = client.get("/api/v1/reports/history.csv?from=2023-08")
    assert second.status_code == 200
    second.get_data()  # read to the end, never closed: the slot is free all the same
    head = client.head("/api/v1/reports/history.csv?from=2023-08")
    assert head.status_code == 200
    head.close()  # as every WSGI server does; the body was never started
    assert client.get("/api/v1/reports/history.csv?from=2023-08").status_code == 200


def test_rows_sharing_a_time_across_pages_are_each_reported_once(client, sql):
    """Pages follow (at, history_id): a page may end in the middle of rows of one time."""
    sql.execute("INSERT INTO segments (slug, created_at) VALUES ('BULK', '2023-08-01')")
    sql.execute(
        "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
        " SELECT i, s.segment_id, 'added', 'manual', timestamptz '2023-08-02 10:00Z'"
        "   FROM generate_series(1, 12000) AS i, segments s WHERE s.slug = 'BULK'"
    )
    lines = report_lines(client, "from=2023-08")
    assert sorted(int(line.split(";")[0]) for line in lines[1:]) == list(range(1, 12001))
