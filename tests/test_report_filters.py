"""The history report's filters (a slug, a user, both) and its delimiter."""

import csv
import io

import pytest
from support import change_segments, create_segment

HEADER = ["user_id", "segment", "operation", "at", "reason", "segment_id", "actor"]


def report_rows(client, query: str, delimiter: str = ";") -> list[list[str]]:
    response = client.get(f"/api/v1/reports/history.csv?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True)), delimiter=delimiter))
    assert rows[0] == HEADER
    return rows[1:]


@pytest.fixture
def recreated_slug(client, sql) -> tuple[int, int]:
    """`A` created, joined by users 1 and 2, deleted, created again and joined by user 1; `B`
    joined by both meanwhile. Returns the two segment ids of `A`."""
    create_segment(client, "A")
    create_segment(client, "B")
    change_segments(client, 1, add=["A", "B"])
    change_segments(client, 2, add=["A"])
    assert client.delete("/api/v1/segments/A").status_code == 204
    change_segments(client, 2, add=["B"])
    create_segment(client, "A")
    change_segments(client, 1, add=["A"])
    (old,), (new,) = sql.rows("SELECT segment_id FROM segments WHERE slug = 'A' ORDER BY 1")
    return old, new


def this_month(sql) -> str:
    return sql.value("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')")


def test_a_slug_reports_every_segment_that_ever_had_it(client, sql, recreated_slug):
    old, new = recreated_slug
    rows = report_rows(client, f"from={this_month(sql)}&segment=A")
    assert [(row[0], row[2], row[4], row[5]) for row in rows] == [
        ("1", "added", "manual", str(old)),
        ("2", "added", "manual", str(old)),
        ("1", "removed", "segment_deleted", str(old)),
        ("2", "removed", "segment_deleted", str(old)),
        ("1", "added", "manual", str(new)),
    ]
    assert {row[1] for row in rows} == {"A"}


def test_a_slug_and_a_user_together_report_that_users_rows_of_the_slug(client, sql, recreated_slug):
    old = recreated_slug[0]
    rows = report_rows(client, f"from={this_month(sql)}&segment=A&user_id=2")
    assert [(row[0], row[2], row[5]) for row in rows] == [
        ("2", "added", str(old)),
        ("2", "removed", str(old)),
    ]
    of_user = report_rows(client, f"from={this_month(sql)}&user_id=1")
    of_both = report_rows(client, f"from={this_month(sql)}&segment=B&user_id=1")
    assert of_both == [row for row in of_user if row[1] == "B"] != []


def test_a_slug_no_segment_ever_had_reports_no_rows(client, sql, recreated_slug):
    assert report_rows(client, f"from={this_month(sql)}&segment=NEVER_CREATED") == []


def test_a_slug_reports_its_segments_rows_merged_in_order_across_pages(client, sql):
    """Two segments of one slug whose rows interleave in time, around rows of another slug,
    some sharing a time, over several pages."""
    for slug in ("A", "OTHER"):
        create_segment(client, slug)
    sql.execute("UPDATE segments SET deleted_at = now(), is_active = false WHERE slug = 'A'")
    create_segment(client, "A")
    sql.execute(
        "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
        " SELECT 1 + i, s.segment_id, 'added', 'manual',"
        "        timestamptz '2023-08-01 00:00Z' + (i / 4) * interval '1 second'"
        "   FROM generate_series(0, 23999) AS i"
        "   JOIN (SELECT segment_id, row_number() OVER (ORDER BY segment_id) - 1 AS n"
        "           FROM segments) s ON s.n = i % 3"
    )
    expected = sql.rows(
        "SELECT h.user_id::text, h.segment_id::text FROM membership_history h"
        " JOIN segments s USING (segment_id) WHERE s.slug = 'A' ORDER BY h.at, h.history_id"
    )
    assert len(expected) == 16000
    rows = report_rows(client, "from=2023-08&segment=A")
    assert [(row[0], row[5]) for row in rows] == expected
    assert len({row[5] for row in rows}) == 2
    rows = report_rows(client, "from=2023-08-01T00:30:00Z&to=2023-08-01T01:00:00Z&segment=A")
    assert len(rows) == 30 * 60 * 4 * 2 // 3


def test_a_comma_delimited_report_holds_the_same_fields(client, sql, recreated_slug):
    client.get(f"/api/v1/reports/history.csv?from={this_month(sql)}")  # A's members leave
    sql.execute(
        "UPDATE membership_history SET actor = %s WHERE user_id = 2",
        ('ops; "Ann", on call',),
    )
    query = f"from={this_month(sql)}&segment=A"
    response = client.get(f"/api/v1/reports/history.csv?{query}&delimiter=,")
    assert response.get_data(as_text=True).startswith(",".join(HEADER) + "\n")
    assert '"ops; ""Ann"", on call"' in response.get_data(as_text=True)
    semicolons = report_rows(client, query)
    assert report_rows(client, f"{query}&delimiter=,", delimiter=",") == semicolons
    assert report_rows(client, f"{query}&delimiter=%3B") == semicolons
    assert [row[6] for row in semicolons if row[0] == "2"] == ['ops; "Ann", on call'] * 2


def test_a_comma_delimited_report_streams_every_page(client, sql):
    create_segment(client, "BULK")
    sql.execute(
        "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
        " SELECT 1 + i, s.segment_id, 'added', 'manual',"
        "        timestamptz '2023-08-01 00:00Z' + i * interval '1 second'"
        "   FROM generate_series(0, 11999) AS i, segments s WHERE s.slug = 'BULK'"
    )
    response = client.get("/api/v1/reports/history.csv?from=2023-08&delimiter=,", buffered=False)
    chunks = list(response.response)
    response.close()
    assert len(chunks) == 3
    lines = b"".join(chunks).decode().splitlines()
    assert len(lines) == 1 + 12000
    assert lines[-1] == "12000,BULK,added,2023-08-01T03:19:59Z,manual,1,"


@pytest.mark.parametrize(
    ("body", "query"),
    [
        ({"from": "2023-08", "segment": "A"}, "from=2023-08&to=2023-08&segment=A"),
        (
            {"from": "2023-08", "user_id": 7, "segment": "A", "delimiter": ","},
            "from=2023-08&to=2023-08&segment=A&user_id=7&delimiter=,",
        ),
        ({"from": "2023-08", "delimiter": ";"}, "from=2023-08&to=2023-08"),
    ],
)
def test_a_link_carries_the_filters_and_the_delimiter(client, body, query):
    response = client.post("/api/v1/reports", json=body)
    assert response.status_code == 201
    assert response.get_json()["url"] == f"/api/v1/reports/history.csv?{query}"


@pytest.mark.parametrize(
    "body",
    [
        {"from": "2023-08", "segment": "A B"},
        {"from": "2023-08", "segment": 5},
        {"from": "2023-08", "delimiter": "\t"},
        {"from": "2023-08", "delimiter": None},
        {"from": "2023-08-01T00:00:00"},
        {"from": 202308},
    ],
)
def test_a_link_validates_the_filters_like_the_download(client, body):
    response = client.post("/api/v1/reports", json=body)
    assert response.status_code == 422
    assert response.get_json()["errors"].keys() <= {"from", "segment", "delimiter"}


def test_a_reports_file_names_its_slug_and_user(client):
    response = client.get("/api/v1/reports/history.csv?from=2023-08&segment=A.b-1&user_id=7")
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="segsvc-history-2023-08-segment-A.b-1-user-7.csv"'
    )


def test_a_comma_delimited_download_left_midway_gives_its_slot_back(make_app, sql):
    bulk_history = (
        "INSERT INTO segments (slug, created_at) VALUES ('BULK', '2023-08-01 00:00Z');"
        "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
        " SELECT 1 + i, s.segment_id, 'added', 'manual',"
        "        timestamptz '2023-08-01 00:00Z' + i * interval '1 second'"
        "   FROM generate_series(0, 11999) AS i, segments s WHERE s.slug = 'BULK'"
    )
    sql.execute(bulk_history)
    client = make_app(report_streams_max=1).test_client()
    first = client.get("/api/v1/reports/history.csv?from=2023-08&delimiter=,", buffered=False)
    assert next(iter(first.response)).startswith(b"user_id,segment,")
    assert client.get("/api/v1/reports/history.csv?from=2023-08").status_code == 503
    first.close()
    assert client.get("/api/v1/reports/history.csv?from=2023-08&delimiter=,").status_code == 200
