"""The README stays true: every setting the code reads is documented, and nothing else is."""

import re
from pathlib import Path

import pytest

from segsvc.config import Config, ConfigError, ServeConfig

PROJECT = Path(__file__).resolve().parent.parent
ENVIRONMENT_NAME = re.compile(r'"((?:SEGSVC|TEST|BENCH)_[A-Z_]+|DATABASE_URL|PORT)"')


def documented_settings() -> set[str]:
    readme = (PROJECT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z_]+)` \|", section, re.MULTILINE))


def settings_read_by_code() -> set[str]:
    sources = [
        *(PROJECT / "segsvc").rglob("*.py"),
        *(PROJECT / "benchmarks").rglob("*.py"),
        PROJECT / "tests" / "conftest.py",
    ]
    return {name for path in sources for name in ENVIRONMENT_NAME.findall(path.read_text())}


def test_every_setting_the_code_reads_is_documented_and_only_those():
    assert settings_read_by_code() == documented_settings()


def test_defaults_are_as_documented():
    config = Config.from_environ({"DATABASE_URL": "postgresql://x/y"})
    assert (config.db_pool_max, config.db_pool_wait_seconds) == (5, 5)
    assert (config.db_connect_timeout_seconds, config.statement_timeout_seconds) == (2, 5)
    assert (config.expiry_enabled, config.expiry_interval_seconds) == (True, 10)
    assert config.expiry_batch_size == 10000
    assert config.max_body_bytes == 1048576
    assert config.log_level == "INFO"
    serve = ServeConfig.from_environ({})
    assert (serve.port, serve.threads, serve.worker_timeout_seconds) == (8080, 4, 15)
    longer = ServeConfig.from_environ({"SEGSVC_STATEMENT_TIMEOUT_SECONDS": "20"})
    assert longer.worker_timeout_seconds == 30


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "DATABASE_URL is not set"),
        ({"DATABASE_URL": "x", "SEGSVC_DB_POOL_MAX": "many"}, "SEGSVC_DB_POOL_MAX must be an"),
        ({"DATABASE_URL": "x", "SEGSVC_DB_POOL_MAX": "0"}, "at least 1"),
        ({"DATABASE_URL": "x", "SEGSVC_STATEMENT_TIMEOUT_SECONDS": "0"}, "at least 1"),
        ({"DATABASE_URL": "x", "SEGSVC_LOG_LEVEL": "loud"}, "SEGSVC_LOG_LEVEL"),
    ],
)
def test_a_bad_setting_stops_the_service_naming_the_variable(environ, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_environ(environ)


def test_a_port_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="PORT"):
        ServeConfig.from_environ({"PORT": "70000"})
