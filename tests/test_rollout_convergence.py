"""Percentage changes answer at once and converge in the background, chunk by chunk."""

import datetime as dt
import threading
import time

import psycopg2
from support import (
    assert_history_replays_to_current_state,
    change_segments,
    converge,
    create_segment,
    expire_membership,
    members,
    register,
    selected,
)

from segsvc import db, queries, rollout

USERS = 5000


def step(app, chunk_users: int = 1000) -> int:
    """One step of the rollout job; retried while the rollout waits for transactions that were
    running when it was first picked up (a test's own connections may briefly be such)."""
    deadline = time.monotonic() + 10
    while (stepped := rollout.converge_next_chunk(db.get_pool(app), chunk_users)) is None:
        assert time.monotonic() < deadline, "no rollout could step"
        time.sleep(0.02)
    return stepped


def hold_chunks_after_their_time(monkeypatch, hold) -> threading.Event:
    """Chunks stepped in a thread named `chunk` run `hold` once they have read their time (their
    users' and memberships' locks taken); the event tells that one got there."""
    chunk_has_its_time = threading.Event()
    change_time = queries.change_time

    def pause_the_chunk(connection):
        at = change_time(connection)
        if threading.current_thread().name == "chunk":
            chunk_has_its_time.set()
            hold()
        return at

    monkeypatch.setattr(queries, "change_time", pause_the_chunk)
    return chunk_has_its_time


def test_a_percentage_change_answers_at_once_and_shows_its_progress(app, client, sql):
    register(client, range(1, USERS + 1))
    created = create_segment(client, "AVITO_VOICE_MESSAGES", auto_percent=10)
    assert created["member_count"] == 0
    assert created["rollout"]["target_percent"] == 10
    assert created["rollout"]["state"] == "converging"
    assert created["rollout"]["users_left"] == USERS
    assert created["rollout"]["finished_at"] is None

    assert step(app) == 0  # notes the transactions running; none
    assert step(app) == 1000
    progress = client.get("/api/v1/segments/AVITO_VOICE_MESSAGES").get_json()["rollout"]
    assert (progress["state"], progress["users_left"]) == ("converging", USERS - 1000)

    converge(app)
    done = client.get("/api/v1/segments/AVITO_VOICE_MESSAGES").get_json()
    assert done["rollout"]["state"] == "done"
    assert done["rollout"]["users_left"] == 0
    assert done["rollout"]["finished_at"] >= done["rollout"]["started_at"]
    assert members(sql, "AVITO_VOICE_MESSAGES") == selected(
        "AVITO_VOICE_MESSAGES", range(1, USERS + 1), 10
    )
    assert done["member_count"] == len(members(sql, "AVITO_VOICE_MESSAGES"))
    assert client.get("/api/v1/segments").get_json()["segments"][0]["rollout"] == done["rollout"]


def test_a_segment_whose_percentage_was_never_set_has_no_rollout(client):
    assert create_segment(client, "MANUAL")["rollout"] is None


def test_a_target_changed_mid_convergence_converges_to_the_latest(app, client, sql):
    register(client, range(1, USERS + 1))
    create_segment(client, "A", auto_percent=50)
    for _ in range(3):
        step(app)
    for percent in (10, 80):
        response = client.patch("/api/v1/segments/A", json={"auto_percent": percent})
        assert response.get_json()["rollout"]["users_left"] == USERS
        step(app)
        step(app)
    response = client.patch("/api/v1/segments/A", json={"auto_percent": 30})
    assert response.status_code == 200
    converge(app)
    assert members(sql, "A") == selected("A", range(1, USERS + 1), 30)
    assert_history_replays_to_current_state(sql)


def test_a_registration_running_across_a_creation_is_enrolled_by_the_rollout(
    app, client, sql, database_url_for_test
):
    """Its enrolment read the segments before the creation committed, so it enrolled the user
    nowhere; the rollout's chunks must not pass the user before the registration commits."""
    register(client, range(1, 101))
    registration = psycopg2.connect(database_url_for_test)
    try:
        with registration.cursor() as cursor:
            cursor.execute("INSERT INTO users (user_id, registered_at) VALUES (50000, now())")
        create_segment(client, "EVERYONE", auto_percent=100)
        rollout.converge_rollouts(db.get_pool(app), chunk_users=1000, budget_seconds=2)
        state = client.get("/api/v1/segments/EVERYONE").get_json()["rollout"]["state"]
        assert state == "converging", "chunks ran while a registration was in flight"
        registration.commit()
    finally:
        registration.close()
    converge(app)
    assert members(sql, "EVERYONE") == set(range(1, 101)) | {50000}
    assert (
        sql.value(
            "SELECT count(*) FROM membership_history WHERE user_id = 50000 AND reason = 'auto'"
        )
        == 1
    )


def test_rollouts_step_concurrently_from_many_workers_without_duplicates(app, client, sql):
    """Every worker of every replica runs the job: chunks of one rollout never overlap."""
    register(client, range(1, USERS + 1))
    for slug in ("A", "B", "C"):
        create_segment(client, slug, auto_percent=40)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            converge(app)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for slug in ("A", "B", "C"):
        assert members(sql, slug) == selected(slug, range(1, USERS + 1), 40)
    assert_history_replays_to_current_state(sql)


def test_a_change_of_a_user_while_a_chunk_holds_it_comes_after_the_chunk(
    app, client, sql, monkeypatch
):
    """A chunk holds its users from before it reads its time until it commits: a removal by hand
    racing it waits, is dated after it, and wins (the user stays out). Without the users' locks
    the removal could find nothing to remove, and the chunk then add the user after all."""
    register(client, range(1, 101))
    create_segment(client, "A", auto_percent=100)
    go_on = threading.Event()
    chunk_has_its_time = hold_chunks_after_their_time(monkeypatch, lambda: go_on.wait(30))
    step(app)  # notes the transactions running
    chunk = threading.Thread(target=step, args=(app,), name="chunk")
    removal_answers: list[int] = []
    removal = threading.Thread(
        target=lambda: removal_answers.append(
            app.test_client().patch("/api/v1/users/50/segments", json={"remove": ["A"]}).status_code
        )
    )
    try:
        chunk.start()
        assert chunk_has_its_time.wait(timeout=30)
        removal.start()
        deadline = time.monotonic() + 10
        while not sql.value(
            "SELECT bool_or(cardinality(pg_blocking_pids(pid)) > 0) FROM pg_stat_activity"
            " WHERE datname = current_database()"
        ):
            assert time.monotonic() < deadline, "the removal did not wait for the chunk"
            time.sleep(0.02)
    finally:
        go_on.set()
        chunk.join(timeout=30)
        removal.join(timeout=30)
    assert removal_answers == [200]
    converge(app)
    assert members(sql, "A") == set(range(1, 101)) - {50}
    assert sql.rows(
        "SELECT operation, reason FROM membership_history WHERE user_id = 50 ORDER BY at"
    ) == [("added", "auto"), ("removed", "manual")]
    assert_history_replays_to_current_state(sql)


def test_a_report_taken_while_a_chunk_holds_a_due_expiry_still_has_it(
    app, client, sql, monkeypatch
):
    """A report first ends every due expiry, waiting (at most 5 s) for rows others hold. A chunk
    holds its rows for one short transaction; a ramp used to hold its segment for the whole ramp
    (21 s over 600,000 users), so a report taken meanwhile left out an expiry already due and a
    later report showed it, dated before the first."""
    register(client, range(1, 51))
    create_segment(client, "A")
    change_segments(client, 7, add=[{"slug": "A", "ttl_seconds": 3600}])
    assert client.patch("/api/v1/segments/A", json={"auto_percent": 100}).status_code == 200
    expire_membership(sql, 7, "A")  # due now; nothing has ended it yet
    expires_at = sql.value("SELECT expires_at FROM memberships WHERE user_id = 7")
    chunk_has_its_time = hold_chunks_after_their_time(monkeypatch, lambda: time.sleep(1))
    step(app)  # notes the transactions running
    chunk = threading.Thread(target=step, args=(app,), name="chunk")
    chunk.start()
    try:
        assert chunk_has_its_time.wait(timeout=30)
        month = expires_at.strftime("%Y-%m")
        lines = client.get(f"/api/v1/reports/history.csv?from={month}&user_id=7").get_data(
            as_text=True
        )
    finally:
        chunk.join(timeout=30)
    _, slug, operation, at, reason, _, _ = lines.splitlines()[-1].split(";")
    assert (slug, operation, reason) == ("A", "removed", "expired")
    assert dt.datetime.fromisoformat(at.replace("Z", "+00:00")) == expires_at
