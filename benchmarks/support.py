"""What the benchmarks share: a database of their own, segsvc served as `make run` does, one
request to it, and the percentage rule checked over the stored memberships."""

import contextlib
import http.client
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

from .consistency import Rows

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


def call_api(
    port: int, method: str, path: str, body: object = None, timeout: float = 60.0
) -> tuple[int | str, bytes]:
    """One request on a connection of its own: its status and body, or the transport error's
    name and no body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if body is None:
            connection.request(method, path)
        else:
            headers = {"Content-Type": "application/json"}
            connection.request(method, path, json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as error:
        return type(error).__name__, b""
    finally:
        connection.close()


# Per active segment: the registered users its percentage selects (segment_bucket, as
# migrations/0002 defines it), minus those excluded from its rollout and those who hold it by
# hand, against its `auto` members. A segment at 0 % selects no one.
BUCKET_RULE_MISMATCHES = """
WITH selected AS (
    SELECT s.segment_id, u.user_id
      FROM segments s CROSS JOIN users u
     WHERE s.deleted_at IS NULL AND s.auto_percent > 0
       AND segment_bucket(s.slug, u.user_id) < s.auto_percent * 100
       AND NOT EXISTS (SELECT 1 FROM auto_exclusions e
                        WHERE e.segment_id = s.segment_id AND e.user_id = u.user_id)
       AND NOT EXISTS (SELECT 1 FROM memberships m
                        WHERE m.segment_id = s.segment_id AND m.user_id = u.user_id
                          AND m.source = 'manual')
),
automatic AS (
    SELECT m.segment_id, m.user_id
      FROM memberships m JOIN segments s USING (segment_id)
     WHERE s.deleted_at IS NULL AND m.source = 'auto'
),
mismatches AS (
    (SELECT segment_id, user_id, 'selected but not an auto member' AS problem
       FROM (SELECT * FROM selected EXCEPT SELECT * FROM automatic) AS missing)
    UNION ALL
    (SELECT segment_id, user_id, 'an auto member but not selected'
       FROM (SELECT * FROM automatic EXCEPT SELECT * FROM selected) AS extra)
)
SELECT s.slug, s.auto_percent, x.user_id, x.problem
  FROM mismatches x JOIN segments s USING (segment_id)
 ORDER BY s.slug, x.user_id
"""


def bucket_rule_violations(rows: Rows) -> list[str]:
    """Every active segment's `auto` members are exactly the registered users whose bucket is
    below its percentage, minus the users excluded from its rollout (by hand, or by an expiry)
    and those who hold it by hand (a percentage never touches those)."""
    return [
        f"user {user_id} in {slug} at {percent} %: {problem}"
        for slug, percent, user_id, problem in rows(BUCKET_RULE_MISMATCHES)
    ]
