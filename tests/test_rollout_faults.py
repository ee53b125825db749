"""Faults in the middle of a rollout's chunk, with real processes: the worker running it killed,
PostgreSQL restarted, the whole service restarted. Each time the rollout resumes by itself; the
converged segment is checked against the bucket rule computed in Python, and its history for
rows lost, written twice or redone.

A chunk is caught in progress by stopping the one gunicorn worker (SIGSTOP) until PostgreSQL
shows its transaction holding the rollout's lease after writing a chunk, not yet committed: the
fault then strikes that transaction, which cannot commit meanwhile.
"""

import contextlib
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import psutil
import psycopg2
import pytest
from conftest import SqlRunner, database_url
from serving import STOP_TIMEOUT_SECONDS, Launcher, call
from support import assert_history_replays_to_current_state, members, selected

from benchmarks.consistency import duplicated_history_rows
from benchmarks.soak import RestartablePostgres
from benchmarks.support import bucket_rule_violations
from segsvc import queries
from segsvc.db import APPLICATION_NAME
from segsvc.launcher import ensure_database
from segsvc.migrate import apply_migrations

# Ten chunks, a few seconds with one worker; each chunk long enough to be caught.
USERS = 100_000
CHUNK_USERS = 10_000
PERCENT = 40
SLUG = "AVITO_FAULT_TOLERANT"
TIMEOUT_SECONDS = 60
OUTAGE_SECONDS = 2

# A chunk has written once it has run one of these (their text up to the first parameter).
CHUNK_WRITES = tuple(
    queries.load_queries()[name].split("%(")[0]
    for name in ("enroll_user_chunk", "disenroll_user_chunk", "advance_rollout")
)


def insert_users(sql) -> None:
    """Registered directly, before any percentage segment exists, so none is enrolled."""
    sql.execute(
        "INSERT INTO users (user_id, registered_at)"
        " SELECT id, now() FROM generate_series(1, %s) AS id",
        (USERS,),
    )


def serve_with_one_worker(start_launcher: Callable[..., Launcher], url: str) -> Launcher:
    launcher = start_launcher(
        DATABASE_URL=url, SEGSVC_WORKERS="1", SEGSVC_ROLLOUT_CHUNK_USERS=str(CHUNK_USERS)
    )
    launcher.wait_until_healthy()
    return launcher


def the_worker(launcher: Launcher) -> psutil.Process:
    (worker,) = launcher.worker_processes()
    return worker


def start_rollout(port: int) -> dict:
    body = {"slug": SLUG, "auto_percent": PERCENT}
    status, created = call(port, "POST", "/api/v1/segments", body)
    assert status == 201, created
    assert created["rollout"]["state"] == "converging"
    return created["rollout"]


def wait_for_rollout(port: int, reached: Callable[[dict], bool]) -> dict:
    """Polls the segment until its rollout has `reached` a state; answers other than 200 (a
    503 while PostgreSQL is down) are waited through."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        status, segment = call(port, "GET", f"/api/v1/segments/{SLUG}")
        if status == 200 and reached(segment["rollout"]):
            return segment["rollout"]
        assert time.monotonic() < deadline, f"the rollout is stuck: {status} {segment}"
        time.sleep(0.2)


def wait_for_progress(port: int) -> None:
    """Until a chunk has committed, with most still to come."""
    wait_for_rollout(port, lambda rollout: rollout["users_left"] < USERS)


def wait_until_converged(port: int) -> dict:
    rollout = wait_for_rollout(port, lambda rollout: rollout["state"] == "done")
    assert rollout["users_left"] == 0
    return rollout


def chunk_in_progress(sql) -> int | None:
    """The pid of the service's backend whose transaction holds the rollout's lease and has
    written a chunk not yet committed, once no statement of the (stopped) service runs."""
    deadline = time.monotonic() + 5
    while sql.value(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = %s AND datname = current_database() AND state = 'active'",
        (APPLICATION_NAME,),
    ):
        assert time.monotonic() < deadline, "a statement of the stopped worker never ended"
        time.sleep(0.005)
    for pid, last_statement in sql.rows(
        "SELECT a.pid, a.query FROM pg_stat_activity a"
        " WHERE a.application_name = %s AND a.datname = current_database()"
        "   AND a.state = 'idle in transaction'"
        "   AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted"
        "                  AND l.relation = 'rollouts'::regclass AND l.mode = 'RowShareLock')",
        (APPLICATION_NAME,),
    ):
        if last_statement.startswith(CHUNK_WRITES):
            return pid
    return None


@contextlib.contextmanager
def frozen_mid_chunk(worker: psutil.Process, sql) -> Iterator[int]:
    """Stops the worker at a moment its rollout job has written a chunk and not committed it,
    trying again until it catches one; yields the pid of that chunk's backend. The worker
    continues afterwards, if it is still there."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        worker.suspend()
        backend = chunk_in_progress(sql)
        if backend is not None:
            break
        worker.resume()
        assert time.monotonic() < deadline, "no chunk was ever caught in progress"
        time.sleep(random.uniform(0, 0.05))
    assert sql.rows("SELECT segment_id FROM rollouts FOR UPDATE SKIP LOCKED") == [], (
        "the chunk in progress does not hold the rollout's lease"
    )
    try:
        yield backend
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.resume()


def converged_up_to(sql) -> int:
    return sql.value("SELECT converged_up_to FROM rollouts")


def database_clock(sql) -> datetime:
    return sql.value("SELECT clock_timestamp()")


def assert_converged_exactly(sql) -> None:
    """The members are exactly the users the bucket rule selects (computed in Python, and by
    SQL's segment_bucket as a second opinion), each added once, by the rollout."""
    expected = selected(SLUG, range(1, USERS + 1), PERCENT)
    assert members(sql, SLUG, source="auto") == expected
    assert members(sql, SLUG) == expected
    assert bucket_rule_violations(sql.rows) == []
    assert sql.rows(
        "SELECT operation, reason, count(*), count(DISTINCT user_id) FROM membership_history"
        " GROUP BY operation, reason"
    ) == [("added", "auto", len(expected), len(expected))]
    assert duplicated_history_rows(sql.rows) == []
    assert_history_replays_to_current_state(sql)


def assert_resumed_from(sql, position: int, fault_at: datetime) -> None:
    """The users up to `position` were enrolled before the fault and never again; all the
    others (those of the chunk it struck too) after it."""
    assert sql.rows(
        "SELECT user_id <= %(position)s, at < %(fault_at)s, count(*) FROM membership_history"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        {"position": position, "fault_at": fault_at},
    ) == [
        (False, False, len(selected(SLUG, range(position + 1, USERS + 1), PERCENT))),
        (True, True, len(selected(SLUG, range(1, position + 1), PERCENT))),
    ]


def test_a_worker_killed_mid_chunk_is_replaced_and_the_rollout_completes(
    start_launcher, database_url_for_test, sql
):
    insert_users(sql)
    launcher = serve_with_one_worker(start_launcher, database_url_for_test)
    worker = the_worker(launcher)
    started = start_rollout(launcher.port)
    wait_for_progress(launcher.port)

    with frozen_mid_chunk(worker, sql) as backend:
        committed, killed_at = converged_up_to(sql), database_clock(sql)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    deadline = time.monotonic() + 10
    while sql.value("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend,)):
        assert time.monotonic() < deadline, "the killed chunk's transaction is still open"
        time.sleep(0.02)

    assert wait_until_converged(launcher.port)["started_at"] == started["started_at"]
    assert the_worker(launcher).pid != worker.pid
    assert_converged_exactly(sql)
    assert_resumed_from(sql, committed, killed_at)
    assert launcher.stop(signal.SIGTERM) == 0


@pytest.fixture
def stoppable_postgres() -> Iterator[RestartablePostgres]:
    """An embedded PostgreSQL of this test's own, outside pytest's temporary tree (as root it
    runs as another user), stopped at the end whatever happened."""
    with tempfile.TemporaryDirectory(prefix="segsvc-faults-pg-", ignore_cleanup_errors=True) as top:
        postgres = RestartablePostgres(Path(top).resolve() / "pgdata")
        try:
            yield postgres
        finally:
            postgres.stop()


def test_a_postgresql_restart_mid_chunk_loses_the_chunk_and_the_rollout_completes(
    start_launcher, stoppable_postgres
):
    ensure_database(stoppable_postgres.admin_url, "faults")
    url = database_url(stoppable_postgres.admin_url, "faults")
    apply_migrations(url)
    sql = SqlRunner(url)
    insert_users(sql)
    launcher = serve_with_one_worker(start_launcher, url)
    started = start_rollout(launcher.port)
    wait_for_progress(launcher.port)

    with frozen_mid_chunk(the_worker(launcher), sql):
        committed, stopped_at = converged_up_to(sql), database_clock(sql)
        sql.close()
        stoppable_postgres.stop()
    time.sleep(OUTAGE_SECONDS)
    assert call(launcher.port, "GET", f"/api/v1/segments/{SLUG}")[0] == 503
    stoppable_postgres.start()
    stoppable_postgres.wait_until_answering()

    sql = SqlRunner(url)
    try:
        assert wait_until_converged(launcher.port)["started_at"] == started["started_at"]
        assert_converged_exactly(sql)
        assert_resumed_from(sql, committed, stopped_at)
        assert launcher.stop(signal.SIGTERM) == 0
    finally:
        sql.close()


def take_the_lease(connection) -> None:
    """The rollout's row lock, as a change of the percentage takes it: waits for the chunk in
    progress, and keeps any other from starting until this transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT segment_id FROM rollouts FOR UPDATE")


def test_a_service_stopped_mid_chunk_commits_it_and_a_new_one_resumes_from_there(
    start_launcher, database_url_for_test, sql
):
    """SIGTERM lets the chunk in progress commit (the worker finishes its job's run). The test
    waits for the lease meanwhile and then holds it, so that the stopping service starts no
    further chunk; one may still slip in before the test gets it."""
    insert_users(sql)
    launcher = serve_with_one_worker(start_launcher, database_url_for_test)
    started = start_rollout(launcher.port)
    wait_for_progress(launcher.port)

    holder = psycopg2.connect(database_url_for_test)
    try:
        taking = threading.Thread(target=take_the_lease, args=(holder,))
        with frozen_mid_chunk(the_worker(launcher), sql) as backend:
            committed = converged_up_to(sql)
            taking.start()
            deadline = time.monotonic() + 10
            while not sql.value(
                "SELECT %s = ANY (pg_blocking_pids(%s))", (backend, holder.info.backend_pid)
            ):
                assert time.monotonic() < deadline, "the lease was not waited for"
                time.sleep(0.01)
            launcher.process.send_signal(signal.SIGTERM)
        taking.join(timeout=10)
        assert not taking.is_alive(), "the chunk in progress never ended"
        assert launcher.process.wait(timeout=STOP_TIMEOUT_SECONDS) == 0, launcher.output()
        stopped_at = converged_up_to(sql)
        assert committed + CHUNK_USERS <= stopped_at < USERS
        holder.rollback()
    finally:
        holder.close()
    restarted_at = database_clock(sql)

    restarted = serve_with_one_worker(start_launcher, database_url_for_test)
    assert wait_until_converged(restarted.port)["started_at"] == started["started_at"]
    assert_converged_exactly(sql)
    assert_resumed_from(sql, stopped_at, restarted_at)
    assert restarted.stop(signal.SIGTERM) == 0
