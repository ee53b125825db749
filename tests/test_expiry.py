"""The expiry job: each expired membership ends once, recorded at its expiry time."""

import datetime as dt
import multiprocessing
import os
import signal
import threading
import time

import psycopg2
import pytest
from support import (
    assert_history_replays_to_current_state,
    change_segments,
    converge,
    create_segment,
    expire_membership,
    insert_due_memberships,
    segment_slugs,
)

from segsvc import db, expiry, queries, rollout, scheduler, users
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
    converge(client.application)
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
        segment_id = sql.value("SELECT segment_id FROM segments WHERE slug = 'A'")
        queries.fetch_one(changing, "lock_active_segment", segment_id=segment_id)
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


def test_switching_expiry_off_leaves_only_the_rollout_job(config):
    from segsvc import create_app

    app = create_app(Config(database_url=config.database_url, expiry_enabled=False))
    started = scheduler.start_scheduler(app)
    try:
        assert [job.id for job in started.get_jobs()] == ["converge_rollouts"]
    finally:
        scheduler.stop_scheduler(app)


# An expiry inside a rollout's range excludes the user from the rollout, dated at the expiry,
# whichever path settles it; outside the range it leaves the rollout free to enrol them later.

ROLLOUT = "AVITO_DISCOUNT_30"


def _first_user(from_bucket: int, to_bucket: int) -> int:
    return next(
        u for u in range(1000, 100000) if from_bucket <= rollout.bucket(ROLLOUT, u) < to_bucket
    )


def _expired_ttl_memberships(
    client, sql, percent: float, users: list[int]
) -> dict[int, dt.datetime]:
    """The users got segment ROLLOUT (at `percent`) by hand with a TTL that ran out an hour ago,
    not settled yet; returns each one's expiry time."""
    create_segment(client, ROLLOUT, auto_percent=percent)
    create_segment(client, "AVITO_VOICE_MESSAGES")
    for user_id in users:
        change_segments(client, user_id, add=[{"slug": ROLLOUT, "ttl_seconds": 60}])
        expire_membership(sql, user_id, ROLLOUT)
    return dict(
        sql.rows("SELECT user_id, expires_at FROM memberships WHERE expires_at IS NOT NULL")
    )


def _exclusions(sql) -> dict[int, dt.datetime]:
    return dict(sql.rows("SELECT user_id, excluded_at FROM auto_exclusions"))


def _ramp(client, app, percent: float) -> None:
    response = client.patch(f"/api/v1/segments/{ROLLOUT}", json={"auto_percent": percent})
    assert response.status_code == 200, response.get_json()
    converge(app)


def _settle_by_the_job(app, client, users):
    scheduler.run_expiry_job(app)


def _settle_by_changes_of_the_users(app, client, users):
    for user_id in users:
        response = change_segments(client, user_id, add=["AVITO_VOICE_MESSAGES"])
        assert response.status_code == 200, response.get_json()


def _settle_by_a_report(app, client, users):
    response = client.get("/api/v1/reports/history.csv?from=2020-01")
    assert response.status_code == 200


def _settle_by_a_ramp(app, client, users):
    _ramp(client, app, 70)


@pytest.mark.parametrize(
    "settle",
    [_settle_by_the_job, _settle_by_changes_of_the_users, _settle_by_a_report, _settle_by_a_ramp],
)
def test_an_expiry_inside_the_rollout_range_excludes_the_user_at_the_expiry_time(
    app, client, sql, settle
):
    inside, outside = _first_user(0, 6000), _first_user(7000, 10000)
    expires_at = _expired_ttl_memberships(client, sql, 60, [inside, outside])
    settle(app, client, [inside, outside])
    assert _exclusions(sql) == {inside: expires_at[inside]}
    _ramp(client, app, 100)
    assert ROLLOUT not in segment_slugs(client, inside)
    assert ROLLOUT in segment_slugs(client, outside)
    assert_history_replays_to_current_state(sql)


def test_a_deleted_user_takes_the_exclusion_of_its_expiry_along(client, sql):
    inside = _first_user(0, 6000)
    _expired_ttl_memberships(client, sql, 60, [inside])
    assert client.delete(f"/api/v1/users/{inside}").status_code == 204
    assert _exclusions(sql) == {}
    assert client.post("/api/v1/users", json={"user_ids": [inside]}).status_code == 200
    assert segment_slugs(client, inside) == [ROLLOUT]


def test_a_user_whose_ttl_ran_out_is_not_put_back_by_ramping_down_and_up(app, client, sql):
    """The issue's case: 60 % -> 10 % -> 60 % put the user back once the job had ended the row."""
    user_id = _first_user(1000, 6000)
    expires_at = _expired_ttl_memberships(client, sql, 60, [user_id])
    scheduler.run_expiry_job(app)
    _ramp(client, app, 10)
    _ramp(client, app, 60)
    assert _exclusions(sql) == {user_id: expires_at[user_id]}
    assert ROLLOUT not in segment_slugs(client, user_id)
    assert_history_replays_to_current_state(sql)


@pytest.mark.parametrize(
    ("user_buckets", "ramps", "excluded"),
    [((1000, 6000), [10, 60], True), ((6000, 7000), [70], False)],
    ids=["down_and_up", "up"],
)
def test_a_ramp_judges_the_expiries_it_settles_by_the_percentage_they_ran_out_under(
    app, client, sql, user_buckets, ramps, excluded
):
    user_id = _first_user(*user_buckets)
    expires_at = _expired_ttl_memberships(client, sql, 60, [user_id])
    for percent in ramps:
        _ramp(client, app, percent)
    assert _exclusions(sql) == ({user_id: expires_at[user_id]} if excluded else {})
    assert (ROLLOUT in segment_slugs(client, user_id)) is not excluded


def test_the_job_skips_the_expiries_of_a_user_being_deleted(
    app, client, sql, database_url_for_test
):
    """The exclusion's foreign key would wait for the deleted user, which waits for the row the
    job holds: the job skips the user, whose deletion settles the row itself."""
    user_id = _first_user(0, 6000)
    _expired_ttl_memberships(client, sql, 60, [user_id])
    deleting = psycopg2.connect(database_url_for_test)
    try:
        queries.fetch_one(deleting, "lock_user_for_deletion", user_id=user_id)
        assert scheduler.run_expiry_job(app) == 0
        users.delete_user(deleting, user_id)
        deleting.commit()
    finally:
        deleting.close()
    assert sql.rows("SELECT operation, reason FROM membership_history ORDER BY at") == [
        ("added", "auto"),
        ("removed", "expired"),
    ]
    assert_history_replays_to_current_state(sql)


def test_a_user_deleted_while_its_segment_is_deleted_ends_its_expired_membership_once(
    app, client, sql, database_url_for_test
):
    """The segment's deletion answers without touching members; the user's deletion, holding the
    user meanwhile, ends the expired membership at its expiry, and the leaving chunks skip it."""
    user_id = _first_user(0, 6000)
    _expired_ttl_memberships(client, sql, 60, [user_id])
    expires_at = sql.value("SELECT expires_at FROM memberships WHERE user_id = %s", (user_id,))
    deleting = psycopg2.connect(database_url_for_test)
    try:
        queries.fetch_one(deleting, "lock_user_for_deletion", user_id=user_id)
        assert app.test_client().delete(f"/api/v1/segments/{ROLLOUT}").status_code == 204
        users.delete_user(deleting, user_id)
        deleting.commit()
    finally:
        deleting.close()
    converge(app)
    assert sql.rows(
        "SELECT operation, reason, at FROM membership_history WHERE user_id = %s"
        " AND operation = 'removed'",
        (user_id,),
    ) == [("removed", "expired", expires_at)]
    assert_history_replays_to_current_state(sql)
