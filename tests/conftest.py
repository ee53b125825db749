"""Fixtures: a real PostgreSQL, a template database migrated once, a fresh clone per test.

TEST_DATABASE_URL (an admin connection to a server) is used when set; otherwise an embedded
PostgreSQL is started for the session in a temporary directory and deleted afterwards.
"""

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from serving import WORKERS, Launcher, free_port

from segsvc import change_listener, create_app, db
from segsvc.config import Config
from segsvc.embedded import throwaway_server
from segsvc.migrate import apply_migrations


def database_url(server_url: str, name: str) -> str:
    """The URL of database `name` on the server of `server_url` (TCP or socket URLs alike)."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class DatabaseServer:
    """Creates and drops databases on one server through an autocommit admin connection."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._admin = psycopg2.connect(admin_url)
        self._admin.autocommit = True
        self.version = self._admin.server_version
        self._names = itertools.count()
        self.prefix = f"segsvc_test_{os.getpid()}"

    def execute(self, statement: str) -> None:
        with self._admin.cursor() as cursor:
            cursor.execute(statement)

    def create(self, template: str | None = None) -> str:
        name = f"{self.prefix}_{next(self._names)}"
        if template is None:
            self.execute(f'CREATE DATABASE "{name}"')
        else:
            # FILE_COPY is several times faster than WAL_LOG for a small template (15+).
            strategy = " STRATEGY FILE_COPY" if self.version >= 150000 else ""
            self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"{strategy}')
        return name

    def drop(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url(self, name: str) -> str:
        return database_url(self.admin_url, name)

    def close(self) -> None:
        self._admin.close()


@pytest.fixture(scope="session")
def database_server() -> Iterator[DatabaseServer]:
    admin_url = os.environ.get("TEST_DATABASE_URL", "").strip()
    with contextlib.ExitStack() as stack:
        if not admin_url:
            admin_url = stack.enter_context(throwaway_server("test"))
        server = DatabaseServer(admin_url)
        stack.callback(server.close)
        yield server


@pytest.fixture(scope="session")
def template_database(database_server: DatabaseServer) -> Iterator[str]:
    """A database with every migration applied, cloned by each test."""
    name = database_server.create()
    try:
        apply_migrations(database_server.url(name))
        yield name
    finally:
        database_server.drop(name)


@pytest.fixture
def database_url_for_test(database_server: DatabaseServer, template_database: str) -> Iterator[str]:
    name = database_server.create(template=template_database)
    try:
        yield database_server.url(name)
    finally:
        database_server.drop(name)


@pytest.fixture
def config(database_url_for_test: str) -> Config:
    return Config(database_url=database_url_for_test, db_pool_max=8)


@pytest.fixture
def make_app(config: Config) -> Iterator[Callable[..., Flask]]:
    """Builds apps on the test database, with settings changed from `config`; closes their pools."""
    apps: list[Flask] = []

    def build(**settings: Any) -> Flask:
        app = create_app(dataclasses.replace(config, **settings))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    try:
        yield build
    finally:
        for app in apps:
            change_listener.stop_listening(app)
            db.close_pools(app)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def sql(database_url_for_test: str) -> Iterator["SqlRunner"]:
    """Direct SQL on the test database, to check stored state behind the API."""
    runner = SqlRunner(database_url_for_test)
    try:
        yield runner
    finally:
        runner.close()


class SqlRunner:
    def __init__(self, url: str) -> None:
        self._connection = psycopg2.connect(url)
        self._connection.autocommit = True

    def rows(self, statement: str, params: tuple | dict | None = None) -> list[tuple]:
        with self._connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall()

    def execute(self, statement: str, params: tuple | dict | None = None) -> None:
        with self._connection.cursor() as cursor:
            cursor.execute(statement, params)

    def value(self, statement: str, params: tuple | dict | None = None) -> object:
        rows = self.rows(statement, params)
        assert len(rows) == 1, rows
        assert len(rows[0]) == 1, rows
        return rows[0][0]

    def close(self) -> None:
        self._connection.close()


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
