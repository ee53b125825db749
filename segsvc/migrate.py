"""Applies the yoyo migrations in `migrations/`; safe to run from several processes at once."""

from pathlib import Path

from yoyo import get_backend, read_migrations

MIGRATION_DIRECTORY = Path(__file__).resolve().parent.parent / "migrations"


def apply_migrations(database_url: str) -> int:
    """Brings the schema up to date and returns how many migrations were applied."""
    backend = get_backend(database_url)
    try:
        migrations = read_migrations(str(MIGRATION_DIRECTORY))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return len(pending)
    finally:
        backend.connection.close()
