"""`make run`: database (embedded unless DATABASE_URL is set), migrations, then gunicorn.

SIGINT and SIGTERM stop gunicorn gracefully and then the embedded PostgreSQL, if one was started.
"""

import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2

from .embedded import embedded_server
from .migrate import apply_migrations
from .request_log import configure_logging

PROJECT_DIRECTORY = Path(__file__).resolve().parent.parent
EMBEDDED_DATABASE = "segsvc"

log = logging.getLogger("segsvc.launcher")


@contextmanager
def embedded_database(pgdata: Path) -> Iterator[str]:
    """Starts (or reuses) a PostgreSQL server on `pgdata`; yields the URL of its segsvc database."""
    with embedded_server(pgdata) as admin_url:
        try:
            ensure_database(admin_url, EMBEDDED_DATABASE)
            yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{EMBEDDED_DATABASE}"))
        finally:
            log.info("stopping embedded PostgreSQL")


def ensure_database(admin_url: str, name: str) -> None:
    connection = psycopg2.connect(admin_url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


def serve(database_url: str) -> int:
    """Runs gunicorn in its own session and relays stop signals to it; returns its exit code.

    Its workers share their metrics through files in a directory of their own (unless
    PROMETHEUS_MULTIPROC_DIR names one), removed when gunicorn has stopped.
    """
    with tempfile.TemporaryDirectory(prefix="segsvc-metrics-") as metrics_directory:
        environment = {
            "PROMETHEUS_MULTIPROC_DIR": metrics_directory,
            **os.environ,
            "DATABASE_URL": database_url,
        }
        command = [sys.executable, "-m", "gunicorn", "-c", "python:segsvc.gunicorn_conf"]
        gunicorn = subprocess.Popen(
            command, cwd=PROJECT_DIRECTORY, env=environment, start_new_session=True
        )

        def relay(signum: int, _frame: object) -> None:
            log.info("received %s, stopping gunicorn", signal.Signals(signum).name)
            gunicorn.terminate()

        signal.signal(signal.SIGINT, relay)
        signal.signal(signal.SIGTERM, relay)
        return gunicorn.wait()


def _stop_before_serving(signum: int, _frame: object) -> None:
    """Until gunicorn runs, a stop signal unwinds main() so the embedded database stops too."""
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_before_serving)
    signal.signal(signal.SIGINT, _stop_before_serving)
    configure_logging(
        os.environ.get("SEGSVC_LOG_LEVEL", "INFO").upper(),
        os.environ.get("SEGSVC_LOG_FORMAT", "text").strip().lower(),
    )
    # At INFO it logs every migration step; problems come at WARNING and above.
    logging.getLogger("yoyo").setLevel(logging.WARNING)
    with ExitStack() as stack:
        database_url = os.environ.get("DATABASE_URL", "").strip()
        if database_url:
            log.info("using the database at DATABASE_URL")
        else:
            pgdata = Path(
                os.environ.get("SEGSVC_EMBEDDED_PGDATA", PROJECT_DIRECTORY / "var/pgdata")
            )
            log.info("DATABASE_URL is unset: starting embedded PostgreSQL in %s", pgdata)
            database_url = stack.enter_context(embedded_database(pgdata.resolve()))
        applied = apply_migrations(database_url)
        log.info("migrations applied: %d", applied)
        return serve(database_url)


if __name__ == "__main__":
    sys.exit(main())
