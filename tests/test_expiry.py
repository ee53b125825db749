"""The expiry job: each expired membership ends once, recorded at its expiry time."""

import datetime as dt
import multiprocessing
import os
import signal
import threading
import time

import psycopg2
from support import (
    assert_history_replays_to_current_state,
    change_segments,
    create_segment,
    expire_membership,
    insert_due_memberships,
    segment_slugs,
)

from segsvc import db, expiry, queries, scheduler
from segsvc.config import Config


def test_the_job_ends_due_memberships_at_their_expiry_time(app, client, sql):
    create_segment(client, "AVITO_DISCOUNT_30")
    create_segment(client, "AVITO_VOICE_MESSAGES")
    change_segments(client, 1000, add=[{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 60}])
    change_segments(client, 1000, add=["AVITO_VOICE_MESSAGES"])
    change_segments(client, 1002, add=[{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 3600}])
    expire_membership(sql, 1000, "AVITO_DISCOUNT_30")
    expires_at = sql.value(
        "SELECT expires_at FROM memberships WHERE user_id = 1000 AND expires_at IS NOT NULL"
    )

    assert scheduler.run_expiry_job(app) == 1

    assert sql.rows(
        "SELECT user_id, reason, at FROM membership_history WHERE operation = 'removed'"
    ) == [(1000, "expired", expires_at)]
    assert sql.value("SELECT count(*) FROM memberships") == 2
    assert segment_slugs(client, 1002) == ["AVITO_DISCOUNT_30"]
    assert scheduler.run_expiry_job(app) == 0


def test_the_job_works_in_batches_until_nothing_is_due(app, client, sql):
    create_segment(client, "A")
    insert_due_memberships(sql, "A", 2500)
    assert expiry.expire_due_memberships(db.get_pool(app), batch_size=1000) == 2500
    assert sql.value("SELECT count(*) FROM memberships") == 0
    assert sql.value("SELECT count(*) FROM membership_history WHERE reason = 'expired'") == 2500
    assert_history_replays_to_current_state(sql)


def _expire_in_process(database_url: str, batch_size: int, results) -> None:
    pool = db.ConnectionPool(Config(database_url=database_url, db_pool_max=1))
    try:
        results.put(expiry.expire_due_memberships(pool, batch_size))
    finally:
        pool.close()


def test_concurrent_processes_record_each_expiry_once(client, sql, database_url_for_test):
    create_segment(client, "A")
    create_segment(client, "B")
    insert_due_memberships(sql, "A", 10000)
    insert_due_memberships(sql, "B", 10000)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=_expire_in_process, args=(database_url_for_test, 700, results))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    counts = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0

    assert sum(counts) == 20000
    assert sql.value("SELECT count(*) FROM memberships") == 0
    assert sql.rows(
        "SELECT count(*), count(DISTINCT (user_id, segment_id)) FROM membership_history"
        " WHERE reason = 'expired'"
    ) == [(20000, 20000)]
    assert (
        sql.value(
            "SELECT count(*) FROM membership_history h"
            " WHERE reason = 'expired' AND at >= now() - interval '30 minutes'"
        )
        == 0
    ), "every row is dated at its expiry, an hour or more ago, not at the run"


def _expire_then_hang(database_url: str, ready) -> None:
    connection = psycopg2.connect(database_url)
    expiry.expire_due_batch(connection, batch_size=100000)
    ready.set()
    time.sleep(600)


def test_a_job_killed_mid_run_loses_nothing_and_the_next_run_finishes(
    app, client, sql, database_url_for_test
):
    create_segment(client, "A")
    insert_due_memberships(sql, "A", 3000)
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=_expire_then_hang, args=(database_url_for_test, ready))
    process.start()
    assert ready.wait(timeout=60)
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=30)

    deadline = time.monotonic() + 10
    while (
        sql.value(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND state = 'idle in transaction'"
        )
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert sql.value("SELECT count(*) FROM memberships") == 3000
    assert sql.value("SELECT count(*) FROM membership_history WHERE reason = 'expired'") == 0
    assert scheduler.run_expiry_job(app) == 3000
    assert sql.value("SELECT count(*) FROM membership_history WHERE reason = 'expired'") == 3000


def test_deleting_a_segment_ends_expired_members_at_their_expiry_first(client, sql):
    create_segment(client, "A")
    change_segments(client, 1000, add=[{"slug": "A", "ttl_seconds": 60}])
    change_segments(client, 1002, add=["A"])
    expire_membership(sql, 1000, "A")
    expires_at = sql.value("SELECT expires_at FROM memberships WHERE user_id = 1000")
    client.delete("/api/v1/segments/A")
    assert sql.rows(
        "SELECT user_id, reason, at = %s FROM membership_history"
        " WHERE operation = 'removed' ORDER BY user_id",
        (expires_at,),
    ) == [(1000, "expired", True), (1002, "segment_deleted", False)]


def test_deleting_a_user_ends_expired_memberships_at_their_expiry_first(client, sql):
    create_segment(client, "A")
    create_segment(client, "B")
    change_segments(client, 1000, add=[{"slug": "A", "ttl_seconds": 60}, "B"])
    expire_membership(sql, 1000, "A")
    client.delete("/api/v1/users/1000")
    assert sql.rows(
        "SELECT s.slug, h.reason FROM membership_history h JOIN segments s USING (segment_id)"
        " WHERE operation = 'removed' ORDER BY h.at, h.history_id"
    ) == [("A", "expired"), ("B", "user_deleted")]


def test_the_job_skips_the_memberships_of_a_segment_being_deleted_or_ramped(
    app, client, sql, database_url_for_test
):
    """Those settle the segment's expired memberships themselves, at their own change time."""
    create_segment(client, "A")
    change_segments(client, 1000, add=[{"slug": "A", "ttl_seconds": 60}])
    expire_membership(sql, 1000, "A")
    changing = psycopg2.connect(database_url_for_test)
    try:
        queries.fetch_one(changing, "lock_active_segment", slug="A")
        assert scheduler.run_expiry_job(app) == 0
    finally:
        changing.rollback()
        changing.close()
    assert scheduler.run_expiry_job(app) == 1


def test_the_job_racing_changes_of_the_same_users_keeps_history_in_order(app, client, sql):
    """Memberships expire while their users are re-added and removed: whatever interleaving
    happens, each pair's history alternates and matches the final state."""
    create_segment(client, "A")
    user_ids = list(range(1, 11))
    stop = threading.Event()
    failures: list[BaseException] = []

    def run_job() -> None:
        try:
            while not stop.is_set():
                scheduler.run_expiry_job(app)
        except BaseException as error:
            failures.append(error)

    def churn(offset: int) -> None:
        thread_client = app.test_client()
        try:
            for round_number in range(60):
                user_id = user_ids[(offset + round_number) % len(user_ids)]
                if round_number % 3 == 2:
                    body = {"remove": ["A"]}
                else:
                    body = {"add": [{"slug": "A", "expires_at": _soon(milliseconds=30)}]}
                response = thread_client.patch(f"/api/v1/users/{user_id}/segments", json=body)
                assert response.status_code in (200, 422), response.get_json()
        except BaseException as error:
            failures.append(error)

    job = threading.Thread(target=run_job)
    job.start()
    workers = [threading.Thread(target=churn, args=(offset,)) for offset in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    time.sleep(0.1)
    stop.set()
    job.join(timeout=30)
    assert not failures, failures
    scheduler.run_expiry_job(app)
    assert sql.value("SELECT count(*) FROM membership_history WHERE reason = 'expired'") > 0
    assert_history_replays_to_current_state(sql)


def _soon(milliseconds: int) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=milliseconds)).isoformat()


def test_the_real_scheduler_ends_a_membership_soon_after_it_expires(config, client, sql):
    from segsvc import create_app

    app = create_app(
        Config(database_url=config.database_url, expiry_interval_seconds=1, db_pool_max=2)
    )
    create_segment(client, "AVITO_DISCOUNT_30")
    change_segments(client, 1000, add=[{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 1}])
    expires_at = sql.value("SELECT expires_at FROM memberships")
    assert scheduler.start_scheduler(app) is not None
    try:
        deadline = time.monotonic() + 10
        while sql.value("SELECT count(*) FROM memberships") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        scheduler.stop_scheduler(app)
        db.close_pools(app)
    assert sql.rows("SELECT reason, at FROM membership_history WHERE operation = 'removed'") == [
        ("expired", expires_at)
    ]


def test_a_switched_off_scheduler_does_not_start(config):
    from segsvc import create_app

    app = create_app(Config(database_url=config.database_url, expiry_enabled=False))
    assert scheduler.start_scheduler(app) is None
