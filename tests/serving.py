"""Serving over real sockets: the launcher as `make run` runs it, and plain HTTP calls to it."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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
        self.workers = int(environ.get("SEGSVC_WORKERS", WORKERS))
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
        while len(self.descendants) < 1 + self.workers:
            assert time.monotonic() < deadline, f"workers missing: {self.descendants}"
            self.descendants = psutil.Process(self.process.pid).children(recursive=True)
            time.sleep(0.05)

    def worker_processes(self) -> list[psutil.Process]:
        """gunicorn's workers now: the children of its master, the launcher's child."""
        return [
            worker
            for master in psutil.Process(self.process.pid).children()
            for worker in master.children()
        ]

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
