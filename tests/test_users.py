"""Users: idempotent registration, lookup, deletion with history."""

from support import change_segments, create_segment, segment_slugs


def test_registering_users_counts_only_new_ones(client, sql):
    response = client.post("/api/v1/users", json={"user_ids": [1000, 1002, 1004]})
    assert response.status_code == 200
    assert response.get_json() == {"registered": 3}
    response = client.post("/api/v1/users", json={"user_ids": [1004, 1006, 1006]})
    assert response.get_json() == {"registered": 1}
    assert sql.rows("SELECT user_id FROM users ORDER BY user_id") == [
        (1000,),
        (1002,),
        (1004,),
        (1006,),
    ]


def test_registering_ten_thousand_users_at_once(client, sql):
    response = client.post("/api/v1/users", json={"user_ids": list(range(1, 10001))})
    assert response.get_json() == {"registered": 10000}
    assert sql.value("SELECT count(*) FROM users") == 10000


def test_the_largest_user_id_is_accepted(client):
    largest = 2**63 - 1
    assert client.post("/api/v1/users", json={"user_ids": [largest]}).status_code == 200
    assert client.get(f"/api/v1/users/{largest}").get_json()["user_id"] == largest


def test_reading_a_registered_user(client):
    client.post("/api/v1/users", json={"user_ids": [1000]})
    response = client.get("/api/v1/users/1000")
    assert response.status_code == 200
    body = response.get_json()
    assert body["user_id"] == 1000
    assert body["registered_at"].endswith("Z")


def test_reading_an_unknown_user_is_404(client):
    response = client.get("/api/v1/users/1004")
    assert response.status_code == 404
    assert response.get_json()["code"] == "user_not_found"


def test_changing_segments_registers_the_user(client):
    create_segment(client, "AVITO_VOICE_MESSAGES")
    change_segments(client, 1000, add=["AVITO_VOICE_MESSAGES"])
    assert client.get("/api/v1/users/1000").status_code == 200


def test_deleting_a_user_removes_every_membership_with_history(client, sql):
    create_segment(client, "A")
    create_segment(client, "B")
    change_segments(client, 1000, add=["A", "B"])
    change_segments(client, 1002, add=["A"])
    response = client.delete("/api/v1/users/1000")
    assert response.status_code == 204
    assert client.get("/api/v1/users/1000").status_code == 404
    assert segment_slugs(client, 1000) == []
    assert segment_slugs(client, 1002) == ["A"]
    assert sql.rows(
        "SELECT user_id, operation, reason FROM membership_history"
        " WHERE operation = 'removed' ORDER BY history_id"
    ) == [(1000, "removed", "user_deleted"), (1000, "removed", "user_deleted")]


def test_deleting_an_unknown_user_is_404(client):
    response = client.delete("/api/v1/users/1004")
    assert response.status_code == 404
    assert response.get_json()["code"] == "user_not_found"


def test_a_deleted_user_can_come_back_with_history_kept(client, sql):
    create_segment(client, "A")
    change_segments(client, 1000, add=["A"])
    client.delete("/api/v1/users/1000")
    change_segments(client, 1000, add=["A"])
    assert segment_slugs(client, 1000) == ["A"]
    assert sql.rows("SELECT operation, reason FROM membership_history ORDER BY at, history_id") == [
        ("added", "manual"),
        ("removed", "user_deleted"),
        ("added", "manual"),
    ]
