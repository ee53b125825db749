"""The per-worker read cache: hits, invalidation by every kind of change, expiry, other
instances' changes through LISTEN/NOTIFY, a lost listener, bounds and the off switch."""

import datetime as dt
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable

import psycopg2
import pytest
from prometheus_client import REGISTRY
from serving import Launcher
from support import change_segments, converge, create_segment, register

from segsvc import change_listener, db, read_cache

READ_SECONDS = 2.0


def lookups(result: str) -> float:
    return REGISTRY.get_sample_value("segsvc_read_cache_lookups_total", {"result": result}) or 0


def listening(app) -> read_cache.ReadCache:
    """Starts the app's listener and waits until its cache is in use."""
    change_listener.start_listening(app)
    return in_use(read_cache.cache_of(app))


def in_use(cache: read_cache.ReadCache) -> read_cache.ReadCache:
    deadline = time.monotonic() + READ_SECONDS
    while not cache.usable():
        assert time.monotonic() < deadline, "the listener is not listening"
        time.sleep(0.01)
    return cache


def slugs(client, user_id: int) -> list[str]:
    response = client.get(f"/api/v1/users/{user_id}/segments")
    assert response.status_code == 200
    return [segment["slug"] for segment in response.get_json()["segments"]]


def test_a_second_read_is_a_hit_with_the_same_answer(app, sql):
    listening(app)
    client = app.test_client()
    create_segment(client, "A")
    assert change_segments(client, 7, add=["A"]).status_code == 200
    first = client.get("/api/v1/users/7/segments")
    hits = lookups("hit")
    # Behind segsvc's back (no notification): only a hit still answers A.
    sql.execute("DELETE FROM memberships WHERE user_id = 7")
    second = client.get("/api/v1/users/7/segments")
    assert lookups("hit") == hits + 1
    assert second.get_data() == first.get_data()
    assert second.headers["Content-Type"] == "application/json"


def test_every_kind_of_change_is_read_right_after_its_answer(app, sql):
    listening(app)
    client = app.test_client()
    create_segment(client, "A")
    create_segment(client, "B")
    register(client, [1, 2])

    assert slugs(client, 1) == []
    assert change_segments(client, 1, add=["A", "B"]).status_code == 200
    assert slugs(client, 1) == ["A", "B"]
    assert change_segments(client, 1, remove=["A"]).status_code == 200
    assert slugs(client, 1) == ["B"]
    assert client.delete("/api/v1/segments/B").status_code == 204
    assert slugs(client, 1) == []

    # A ramp: unregistered ids read it at once, registered ones once their chunk ran.
    create_segment(client, "ALL", auto_percent=0)
    assert slugs(client, 2) == []
    assert slugs(client, 10_000) == []
    assert client.patch("/api/v1/segments/ALL", json={"auto_percent": 100}).status_code == 200
    assert slugs(client, 10_000) == ["ALL"]
    converge(app)
    assert slugs(client, 2) == ["ALL"]

    # Registration makes the computed membership real (its added_at stops moving).
    moving = client.get("/api/v1/users/10000/segments").get_json()
    register(client, [10_000])
    fixed = client.get("/api/v1/users/10000/segments").get_json()
    stored = sql.value("SELECT added_at FROM memberships WHERE user_id = 10000")
    assert fixed["segments"][0]["added_at"] == stored.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert fixed != moving

    assert client.delete("/api/v1/users/2").status_code == 204
    assert slugs(client, 2) == ["ALL"]  # computed again, as for any unregistered id
    assert client.patch("/api/v1/segments/ALL", json={"auto_percent": 0}).status_code == 200
    assert slugs(client, 2) == []


def test_an_expired_membership_is_never_served(app):
    listening(app)
    client = app.test_client()
    create_segment(client, "SOON")
    expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    body = {"add": [{"slug": "SOON", "expires_at": expires_at.isoformat()}]}
    assert client.patch("/api/v1/users/5/segments", json=body).status_code == 200
    assert slugs(client, 5) == ["SOON"]
    hits = lookups("hit")
    assert slugs(client, 5) == ["SOON"]
    assert lookups("hit") == hits + 1
    time.sleep(max((expires_at - dt.datetime.now(dt.UTC)).total_seconds(), 0) + 0.05)
    assert slugs(client, 5) == []


def test_an_unregistered_users_added_at_moves_on_hits(app):
    listening(app)
    client = app.test_client()
    create_segment(client, "ALL", auto_percent=100)
    first = client.get("/api/v1/users/424242/segments").get_json()["segments"][0]["added_at"]
    time.sleep(0.05)
    hits = lookups("hit")
    second = client.get("/api/v1/users/424242/segments").get_json()["segments"][0]["added_at"]
    assert lookups("hit") == hits + 1
    assert second > first


def test_the_batch_lookup_uses_the_cache_and_reads_all_misses_at_once(app):
    listening(app)
    client = app.test_client()
    create_segment(client, "A")
    for user_id in (1, 2, 3):
        assert change_segments(client, user_id, add=["A"]).status_code == 200
    asked = {"user_ids": [3, 1, 2, 99]}
    first = client.post("/api/v1/users/segments/lookup", json=asked)
    hits = lookups("hit")
    second = client.post("/api/v1/users/segments/lookup", json=asked)
    assert lookups("hit") == hits + 4
    assert second.get_json() == first.get_json()
    assert [user["user_id"] for user in second.get_json()["users"]] == [3, 1, 2, 99]
    assert change_segments(client, 1, remove=["A"]).status_code == 200
    users = client.post("/api/v1/users/segments/lookup", json=asked).get_json()["users"]
    assert [len(user["segments"]) for user in users] == [1, 0, 1, 0]
    # Each entry is what the single read answers.
    for user in users:
        single = client.get(f"/api/v1/users/{user['user_id']}/segments").get_json()
        assert single == user


def test_a_failed_change_invalidates_nothing(app):
    listening(app)
    client = app.test_client()
    create_segment(client, "A")
    cache = read_cache.cache_of(app)
    before = cache.stamp(8)
    assert change_segments(client, 8, add=["A", "MISSING"]).status_code == 404
    assert cache.stamp(8) == before


def test_a_one_statement_change_invalidates_when_its_outcome_is_unknown(app, sql):
    """A change made by one statement in autocommit sets the slots itself: not when the server
    refused it (nothing changed), but when the connection dropped and it may have committed."""
    cache = read_cache.cache_of(app)
    pool = db.get_pool(app)
    connection = pool.acquire()
    try:
        connection.autocommit = True
        refused_before = cache.stamp(31)
        with (
            pytest.raises(psycopg2.errors.DivisionByZero),
            read_cache.published_in_statement(connection, [31]),
        ):
            connection.cursor().execute("SELECT 1 / 0")
        assert cache.stamp(31) == refused_before
        dropped_before = cache.stamp(32)
        with read_cache.published_in_statement(connection, [32]):
            sql.execute("SELECT pg_terminate_backend(%s)", (connection.get_backend_pid(),))
            with pytest.raises(psycopg2.OperationalError):
                connection.cursor().execute("SELECT 1")
        assert connection.closed
        assert cache.stamp(32)[0] != dropped_before[0]
    finally:
        pool.release(connection)


def test_another_instances_change_reaches_this_one_through_notifications(make_app):
    here, there = make_app(), make_app()  # two version tables: two instances
    listening(here)
    client, other = here.test_client(), there.test_client()
    create_segment(other, "A")
    assert slugs(client, 11) == []
    assert slugs(client, 11) == []  # cached
    assert change_segments(other, 11, add=["A"]).status_code == 200
    started = time.monotonic()
    while slugs(client, 11) != ["A"]:
        assert time.monotonic() - started < READ_SECONDS, "never saw the other instance's change"
        time.sleep(0.002)
    # Well under the 1 s bound; the notification normally arrives within milliseconds.
    assert time.monotonic() - started < 1.0


def test_a_lost_listener_bypasses_the_cache_until_it_is_back(make_app, sql):
    here, there = make_app(), make_app()
    cache = listening(here)
    client, other = here.test_client(), there.test_client()
    create_segment(other, "A")
    assert slugs(client, 12) == []
    listener = here.extensions[change_listener.LISTENER_KEY]
    sql.execute("SELECT pg_terminate_backend(%s)", (listener.backend_pid,))
    deadline = time.monotonic() + 1.0
    while cache.usable():
        assert time.monotonic() < deadline, "the cache was still used 1 s after the loss"
        time.sleep(0.005)
    bypasses = lookups("bypass")
    assert change_segments(other, 12, add=["A"]).status_code == 200
    assert slugs(client, 12) == ["A"]  # from the database
    assert lookups("bypass") == bypasses + 1
    in_use(cache)  # the listener reconnects by itself
    assert listener.backend_pid is not None
    assert slugs(client, 12) == ["A"]
    hits = lookups("hit")
    assert slugs(client, 12) == ["A"]
    assert lookups("hit") == hits + 1


def test_the_cache_holds_at_most_its_bound(make_app):
    app = make_app(read_cache_max_users=2)
    cache = listening(app)
    client = app.test_client()
    for user_id in (1, 2, 3):
        slugs(client, user_id)
    assert cache.size() == 2


def test_switched_off_it_caches_nothing_and_listens_to_nothing(make_app):
    app = make_app(read_cache=False)
    change_listener.start_listening(app)
    assert change_listener.LISTENER_KEY not in app.extensions
    client = app.test_client()
    hits = lookups("hit")
    for _ in range(3):
        assert slugs(client, 1) == []
    assert lookups("hit") == hits
    assert read_cache.cache_of(app).size() == 0


def test_big_changes_are_notified_in_payloads_postgresql_accepts():
    user_ids = set(range(1, 5001))
    payloads = read_cache.notification_payloads("abc", read_cache.PendingChanges(user_ids))
    assert len(payloads) > 1
    assert all(len(payload.encode()) <= 7900 for payload in payloads)
    parsed = [read_cache.Notification.parse(payload) for payload in payloads]
    assert {(n.instance, n.pid) for n in parsed} == {("abc", os.getpid())}
    ids = [int(text) for notification in parsed for text in notification.changed.split(",")]
    assert sorted(ids) == sorted(user_ids)
    everyone = read_cache.PendingChanges(everyone=True)
    assert read_cache.notification_payloads("abc", everyone) == [f"abc:{os.getpid()}:*"]


def test_a_change_whose_worker_died_before_its_answer_still_reaches_its_instance(app, sql):
    """The changing worker sets the slots after its COMMIT; one killed in between never does,
    so the listener sets them for an own notification once it finds that worker gone."""
    cache = listening(app)
    instance = cache.versions.instance
    finished = subprocess.Popen(["true"])  # a pid no process has any more
    finished.wait()
    alive_before = cache.stamp(21)
    sql.execute("SELECT pg_notify('segsvc_changes', %s)", (f"{instance}:{os.getpid()}:21",))
    dead_before = cache.stamp(22)
    sql.execute("SELECT pg_notify('segsvc_changes', %s)", (f"{instance}:{finished.pid}:22",))
    deadline = time.monotonic() + READ_SECONDS
    while cache.stamp(22) == dead_before:
        assert time.monotonic() < deadline, "the dead worker's change was never applied"
        time.sleep(0.02)
    # The live worker sets its own slots: the listener left them alone.
    assert cache.stamp(21) == alive_before


def test_served_reads_reflect_a_change_acknowledged_by_any_worker(
    start_launcher: Callable[..., Launcher], database_url_for_test: str
):
    """Read-your-writes across the workers of one instance: both workers hold the user's entry,
    a change answered by either is seen by every read that starts after its answer."""
    launcher = start_launcher(DATABASE_URL=database_url_for_test, SEGSVC_WORKERS="2")
    launcher.wait_until_healthy()
    connection = http.client.HTTPConnection("127.0.0.1", launcher.port, timeout=5)

    def call(method: str, path: str, body: object = None) -> tuple[int, object]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, None if body is None else json.dumps(body), headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None

    assert call("POST", "/api/v1/segments", {"slug": "A"})[0] == 201
    stale = []
    for round_number in range(40):
        for _ in range(6):  # new connections land on either worker
            connection.close()
            call("GET", "/api/v1/users/77/segments")
        change = {"add": ["A"]} if round_number % 2 == 0 else {"remove": ["A"]}
        assert call("PATCH", "/api/v1/users/77/segments", change)[0] == 200
        expected = ["A"] if round_number % 2 == 0 else []
        for _ in range(6):
            connection.close()
            status, body = call("GET", "/api/v1/users/77/segments")
            read = [segment["slug"] for segment in body["segments"]]
            if status != 200 or read != expected:
                stale.append((round_number, status, read))
    assert stale == []
    # The workers did serve hits (the reads above were not all misses), summed over both.
    connection.request("GET", "/metrics")
    scraped = connection.getresponse().read().decode()
    connection.close()
    hit_line = 'segsvc_read_cache_lookups_total{result="hit"} '
    hits = [float(line.split()[-1]) for line in scraped.splitlines() if line.startswith(hit_line)]
    assert len(hits) == 1, scraped
    assert hits[0] > 0, scraped
    assert launcher.stop(signal.SIGTERM) == 0
