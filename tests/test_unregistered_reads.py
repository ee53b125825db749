"""Reads of ids that are not registered: the percentage rule computed, nothing written."""

import random
from datetime import datetime

import pytest
from support import change_segments, create_segment, segment_slugs

from segsvc import rollout

PERCENTAGES = {
    "AVITO_RARE": 0.01,
    "AVITO_TENTH": 10,
    "AVITO_THREE_EIGHTHS": 37.5,
    "AVITO_HALF": 50,
    "AVITO_EVERYONE": 100,
}


def selected_slugs(user_id: int) -> list[str]:
    """The bucket rule computed independently of the database."""
    return sorted(
        slug
        for slug, percent in PERCENTAGES.items()
        if rollout.bucket(slug, user_id) < rollout.bucket_limit(percent)
    )


def user_ids() -> list[int]:
    """300 ids: small and huge ones, and one whose bucket is 0, the only one 0.01 % selects."""
    rng = random.Random(10)
    rare = next(u for u in range(1, 10**6) if rollout.bucket("AVITO_RARE", u) == 0)
    return [rare, 2**63 - 1] + list(range(1, 150)) + [rng.randint(1, 2**63 - 1) for _ in range(149)]


def table_counts(sql) -> dict[str, int]:
    return {
        table: sql.value(f"SELECT count(*) FROM {table}")
        for table in ("users", "memberships", "membership_history", "auto_exclusions")
    }


@pytest.fixture
def percentage_segments(client) -> None:
    """The segments above, beside ones that never select anybody: 0 %, manual, deleted."""
    for slug, percent in PERCENTAGES.items():
        create_segment(client, slug, auto_percent=percent)
    create_segment(client, "AVITO_NOBODY", auto_percent=0)
    create_segment(client, "AVITO_MANUAL")
    create_segment(client, "AVITO_RETIRED", auto_percent=100)
    assert client.delete("/api/v1/segments/AVITO_RETIRED").status_code == 204


def test_an_unregistered_id_reads_exactly_the_segments_its_buckets_select(
    client, percentage_segments
):
    reads = {user_id: segment_slugs(client, user_id) for user_id in user_ids()}
    assert reads == {user_id: selected_slugs(user_id) for user_id in reads}
    assert "AVITO_RARE" in reads[user_ids()[0]]
    counts = {slug: sum(slug in slugs for slugs in reads.values()) for slug in PERCENTAGES}
    assert counts["AVITO_EVERYONE"] == 300
    assert 0 < counts["AVITO_TENTH"] < counts["AVITO_HALF"] < 300


def test_a_virtual_membership_is_permanent_and_added_at_the_time_of_the_read(
    client, sql, percentage_segments
):
    before = sql.value("SELECT now()")
    segments = client.get("/api/v1/users/1000/segments").get_json()["segments"]
    after = sql.value("SELECT now()")
    assert [segment["slug"] for segment in segments] == selected_slugs(1000)
    assert {segment["expires_at"] for segment in segments} == {None}
    added_at = {datetime.fromisoformat(segment["added_at"]) for segment in segments}
    assert len(added_at) == 1
    assert before <= added_at.pop() <= after


def test_reading_unregistered_ids_writes_nothing(client, sql, percentage_segments):
    change_segments(client, 1, add=["AVITO_MANUAL"])
    before = table_counts(sql)
    for user_id in range(2, 52):
        segment_slugs(client, user_id)
    assert table_counts(sql) == before
    assert sql.rows("SELECT user_id FROM users") == [(1,)]


def test_registering_read_ids_makes_the_same_segments_real_with_history(
    client, sql, percentage_segments
):
    ids = user_ids()[:60]
    reads = {user_id: segment_slugs(client, user_id) for user_id in ids}
    response = client.post("/api/v1/users", json={"user_ids": ids})
    assert response.get_json() == {"registered": len(ids)}
    assert {user_id: segment_slugs(client, user_id) for user_id in ids} == reads
    memberships = sql.rows(
        "SELECT m.user_id, s.slug, m.source FROM memberships m JOIN segments s USING (segment_id)"
    )
    history = sql.rows(
        "SELECT h.user_id, s.slug, h.operation, h.reason"
        "  FROM membership_history h JOIN segments s USING (segment_id)"
    )
    expected = {(user_id, slug) for user_id, slugs in reads.items() for slug in slugs}
    assert sorted(memberships) == sorted((*pair, "auto") for pair in expected)
    assert sorted(history) == sorted((*pair, "added", "auto") for pair in expected)


def test_a_registered_user_removed_by_hand_does_not_read_the_segment_back(
    client, percentage_segments
):
    assert client.post("/api/v1/users", json={"user_ids": [1000]}).status_code == 200
    assert segment_slugs(client, 1000) == selected_slugs(1000)
    change_segments(client, 1000, remove=["AVITO_EVERYONE"], add=["AVITO_MANUAL"])
    assert segment_slugs(client, 1000) == sorted(
        set(selected_slugs(1000)) - {"AVITO_EVERYONE"} | {"AVITO_MANUAL"}
    )
    change_segments(client, 1000, remove=[*selected_slugs(1000), "AVITO_MANUAL"])
    assert segment_slugs(client, 1000) == []
