"""What the benchmarks share: a database of their own, and segsvc served as `make run` does."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg2

from segsvc.embedded import throwaway_server
from segsvc.migrate import apply_migrations

PROJECT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A fresh, migrated database on BENCH_DATABASE_URL's server, or on a throwaway embedded
    PostgreSQL when that is unset; dropped afterwards."""
    admin_url = os.environ.get("BENCH_DATABASE_URL", "").strip()
    with contextlib.ExitStack() as stack:
        if not admin_url:
            admin_url = stack.enter_context(throwaway_server("bench"))
        name = f"segsvc_bench_{os.getpid()}"
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        stack.callback(admin.close)
        stack.callback(admin.cursor().execute, f'DROP DATABASE "{name}" WITH (FORCE)')
        url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
        apply_migrations(url)
        yield url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {seconds} s")


class Served:
    """segsvc started through the launcher (as `make run` does) on a free port."""

    def __init__(self, database_url: str, **environment: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "PORT": str(self.port),
            "SEGSVC_LOG_LEVEL": "WARNING",
            **environment,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "segsvc.launcher"], cwd=PROJECT, env=env
        )
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        wait_until_ready(f"{self.base_url}/readyz")

    def workers(self) -> list[psutil.Process]:
        """gunicorn's worker processes (children of its master, the launcher's child)."""
        launcher = psutil.Process(self.process.pid)
        return [worker for master in launcher.children() for worker in master.children()]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def __enter__(self) -> "Served":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def write_results(path: Path, results: dict[str, object]) -> None:
    """The figures as JSON next to the project, with the machine's core count."""
    path.write_text(json.dumps({"cpu_count": os.cpu_count(), **results}, indent=2) + "\n")
    print(f"figures written to {path.name} (cores: {os.cpu_count()})")
