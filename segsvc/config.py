"""Settings read from the environment once at start, with defaults, validated early.

Every variable is documented in the README's configuration table; a test keeps the two equal.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


def _choice(environ: Mapping[str, str], name: str, default: str, allowed: set[str]) -> str:
    value = environ.get(name, "").strip().lower() or default
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(sorted(allowed))}, got {value!r}")
    return value


def _boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _integer(environ: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _max_body_bytes(environ: Mapping[str, str]) -> int:
    """Read by the app (413 beyond it) and by the gunicorn worker (how much it buffers)."""
    return _integer(environ, "SEGSVC_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)


def parse_public_url(value: str) -> str | None:
    """`SEGSVC_PUBLIC_URL`: where clients reach the service (`https://segsvc.example/prefix`).

    Links the service hands out start with it; without it they are relative, so that a `Host`
    header never reaches a link.
    """
    value = value.strip()
    if not value:
        return None
    name = "SEGSVC_PUBLIC_URL"
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{name} must be an absolute http(s) URL, got {value!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"{name} must have no user, query or fragment, got {value!r}")
    if not value.isascii() or any(
        not character.isprintable() or character == " " for character in value
    ):
        raise ConfigError(f"{name} must be printable ASCII without spaces, got {value!r}")
    return value.rstrip("/")


_API_TOKEN_SCOPES = {"read": "read", "reader": "read", "write": "write", "writer": "write"}


class ApiToken(NamedTuple):
    scope: str  # "read" or "write"
    token: str
    name: str  # the actor its changes are recorded with


# A token's name: what history rows and audit events show as the actor.
_TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


def parse_api_tokens(value: str) -> tuple[ApiToken, ...]:
    """`SEGSVC_API_TOKENS`: a file of `name:scope:token` lines, or such entries by commas.
    An entry of the earlier `scope:token` form is named after its scope; so an entry whose
    first part is a scope word is of that form, and a name may not be one.

    Errors name the entry, never its text: a token must not reach a log.
    """
    value = value.strip()
    if not value:
        return ()
    name = "SEGSVC_API_TOKENS"
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as file:
                lines = file.read().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{name}: cannot read {value}: {type(error).__name__}") from None
        entries = [
            (f"line {number} of {value}", line.strip())
            for number, line in enumerate(lines, start=1)
            if line.strip() and not line.strip().startswith("#")
        ]
        if not entries:
            raise ConfigError(f"{name}: {value} has no `name:scope:token` lines")
    else:
        entries = [
            (f"entry {number}", entry.strip())
            for number, entry in enumerate(value.split(","), start=1)
        ]
    tokens: dict[str, ApiToken] = {}
    for where, entry in entries:
        first, colon, rest = (part.strip() for part in entry.partition(":"))
        if not colon:
            raise ConfigError(
                f"{name}: {where} is not `name:scope:token` (and the value is not an existing file)"
            )
        if first.lower() in _API_TOKEN_SCOPES:
            token_name, scope, token = _API_TOKEN_SCOPES[first.lower()], first, rest
        else:
            token_name = first
            scope, colon, token = (part.strip() for part in rest.partition(":"))
            if not colon:
                raise ConfigError(
                    f"{name}: {where} has an unknown scope (read or write) or is not"
                    " `name:scope:token`"
                )
            if not _TOKEN_NAME.fullmatch(token_name):
                raise ConfigError(
                    f"{name}: {where} has a bad name: 1-64 of A-Z a-z 0-9 _ . @ -, first a"
                    " letter or digit"
                )
        if scope.lower() not in _API_TOKEN_SCOPES:
            raise ConfigError(f"{name}: {where} has an unknown scope; use read or write")
        if not token:
            raise ConfigError(f"{name}: {where} has an empty token")
        if not token.isascii() or not token.isprintable() or " " in token:
            raise ConfigError(f"{name}: {where} has a token that is not printable ASCII")
        parsed = ApiToken(_API_TOKEN_SCOPES[scope.lower()], token, token_name)
        if tokens.setdefault(token, parsed) != parsed:
            raise ConfigError(
                f"{name}: {where} repeats an earlier token with another scope or name"
            )
    return tuple(tokens.values())


SECRET_KEY_MIN_CHARACTERS = 32


def _secret_key(environ: Mapping[str, str]) -> str | None:
    """A key short enough to guess would let anyone forge a console session."""
    key = environ.get("SEGSVC_SECRET_KEY", "").strip()
    if key and len(key) < SECRET_KEY_MIN_CHARACTERS:
        raise ConfigError(
            f"SEGSVC_SECRET_KEY must be at least {SECRET_KEY_MIN_CHARACTERS} characters, e.g. "
            "the output of `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return key or None


@dataclass(frozen=True)
class Config:
    database_url: str
    db_pool_max: int = 5
    db_pool_wait_seconds: int = 5
    db_connect_timeout_seconds: int = 2
    db_prepared_statements: bool = True
    statement_timeout_seconds: int = 5
    idle_in_transaction_timeout_seconds: int = 60
    max_body_bytes: int = 1024 * 1024
    report_streams_max: int = 2
    public_url: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    expiry_enabled: bool = True
    expiry_interval_seconds: int = 10
    expiry_batch_size: int = 10000
    rollout_interval_seconds: int = 1
    rollout_chunk_users: int = 20000
    read_cache: bool = True
    read_cache_max_users: int = 100000
    # Not in the repr, so that logging a Config cannot show it.
    metrics_token: str | None = field(default=None, repr=False)
    # Not in the repr, so that logging a Config cannot show a token.
    api_tokens: tuple[ApiToken, ...] = field(default=(), repr=False)
    # Signs the web console's session cookies (segsvc/console); not in the repr either.
    secret_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "Config":
        database_url = environ.get("DATABASE_URL", "").strip()
        if not database_url:
            raise ConfigError(
                "DATABASE_URL is not set; start the service with `make run`, which provides "
                "an embedded PostgreSQL when it is unset"
            )
        log_level = environ.get("SEGSVC_LOG_LEVEL", "INFO").strip().upper()
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ConfigError(
                f"SEGSVC_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}"
            )
        return cls(
            database_url=database_url,
            db_pool_max=_integer(environ, "SEGSVC_DB_POOL_MAX", 5, minimum=1),
            db_connect_timeout_seconds=_integer(
                environ, "SEGSVC_DB_CONNECT_TIMEOUT_SECONDS", 2, minimum=1
            ),
            db_prepared_statements=_boolean(environ, "SEGSVC_DB_PREPARED_STATEMENTS", True),
            statement_timeout_seconds=_integer(
                environ, "SEGSVC_STATEMENT_TIMEOUT_SECONDS", 5, minimum=1
            ),
            idle_in_transaction_timeout_seconds=_integer(
                environ, "SEGSVC_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", 60, minimum=1
            ),
            db_pool_wait_seconds=_integer(environ, "SEGSVC_DB_POOL_WAIT_SECONDS", 5, minimum=1),
            max_body_bytes=_max_body_bytes(environ),
            report_streams_max=_integer(environ, "SEGSVC_REPORT_STREAMS_MAX", 2, minimum=1),
            public_url=parse_public_url(environ.get("SEGSVC_PUBLIC_URL", "")),
            log_level=log_level,
            log_format=_choice(environ, "SEGSVC_LOG_FORMAT", "text", {"text", "json"}),
            expiry_enabled=_boolean(environ, "SEGSVC_EXPIRY_ENABLED", True),
            expiry_interval_seconds=_integer(
                environ, "SEGSVC_EXPIRY_INTERVAL_SECONDS", 10, minimum=1
            ),
            expiry_batch_size=_integer(environ, "SEGSVC_EXPIRY_BATCH_SIZE", 10000, minimum=1),
            rollout_interval_seconds=_integer(
                environ, "SEGSVC_ROLLOUT_INTERVAL_SECONDS", 1, minimum=1
            ),
            rollout_chunk_users=_integer(environ, "SEGSVC_ROLLOUT_CHUNK_USERS", 20000, minimum=1),
            read_cache=_boolean(environ, "SEGSVC_READ_CACHE", True),
            read_cache_max_users=_integer(
                environ, "SEGSVC_READ_CACHE_MAX_USERS", 100000, minimum=1
            ),
            metrics_token=environ.get("SEGSVC_METRICS_TOKEN", "").strip() or None,
            api_tokens=parse_api_tokens(environ.get("SEGSVC_API_TOKENS", "")),
            secret_key=_secret_key(environ),
        )


@dataclass(frozen=True)
class ServeConfig:
    """How gunicorn serves the app (read by `segsvc/gunicorn_conf.py`)."""

    port: int
    workers: int
    threads: int
    worker_timeout_seconds: int
    request_read_timeout_seconds: int
    send_timeout_seconds: int
    max_body_bytes: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "ServeConfig":
        port = _integer(environ, "PORT", 8080, minimum=1)
        if port > 65535:
            raise ConfigError(f"PORT must be at most 65535, got {port}")
        return cls(
            port=port,
            workers=_integer(environ, "SEGSVC_WORKERS", 2 * (os.cpu_count() or 1) + 1, minimum=1),
            threads=_integer(environ, "SEGSVC_THREADS", 4, minimum=1),
            worker_timeout_seconds=_integer(
                environ,
                "SEGSVC_WORKER_TIMEOUT_SECONDS",
                _integer(environ, "SEGSVC_STATEMENT_TIMEOUT_SECONDS", 5, minimum=1) + 10,
                minimum=1,
            ),
            request_read_timeout_seconds=_integer(
                environ, "SEGSVC_REQUEST_READ_TIMEOUT_SECONDS", 15, minimum=1
            ),
            send_timeout_seconds=_integer(environ, "SEGSVC_SEND_TIMEOUT_SECONDS", 30, minimum=1),
            max_body_bytes=_max_body_bytes(environ),
        )
