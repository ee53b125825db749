"""The single read's cost in process: segsvc's WSGI app called directly, no server, no network.

Each case calls an app with one prepared environ and prints microseconds per request, wall and
CPU, each the fastest of ROUNDS rounds (other processes only ever add time):

- `ceiling`: benchmarks/ceiling.py, a bare Flask app answering a constant body;
- `hit`: segsvc's GET /api/v1/users/<id>/segments from a warm read cache (its listener runs);
- `stubbed`: the same GET with the cache off and the query stubbed to a constant (the pool, the
  hooks, validation, encoding and dispatch, without the database round trip);
- `off`: the same GET with the cache off (SEGSVC_READ_CACHE=false), the query included;
- `healthz`: GET /healthz, the cheapest route;
- `naive`: benchmarks/naive.py, the naive peer (Flask, psycopg2, `jsonify`) on the same query.

`--profile CASE` runs one case under pyinstrument instead (`pip install pyinstrument`).

    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python -m benchmarks.profile_read [--multiprocess] [--log-level INFO]

`--multiprocess` sets PROMETHEUS_MULTIPROC_DIR as the launcher does, before prometheus-client is
imported (it picks its value class at import), so metrics go to mmap files as under gunicorn.
Log lines go to /dev/null: at INFO the access line's cost is in the figures.
"""

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REQUESTS = 1_000
ROUNDS = 15
USER_ID = 12345
SEGMENTS = 10
READ_PATH = f"/api/v1/users/{USER_ID}/segments"
LISTENER_WAIT_SECONDS = 10

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def call(app: WsgiApp, environ: dict[str, Any]) -> bytes:
    """One request as a WSGI server makes it: a fresh environ, the body read, then closed."""
    answer = app(dict(environ), _start_response)
    try:
        return b"".join(answer)
    finally:
        close = getattr(answer, "close", None)
        if close is not None:
            close()


def microseconds_per_request(
    app: WsgiApp, environ: dict[str, Any], requests: int
) -> tuple[float, float]:
    """Wall and CPU time (this thread's) per request. CPU time leaves out the time the process
    waited, for PostgreSQL or while others ran: on a busy machine it is the steadier figure."""
    for _ in range(min(requests, 1000)):
        call(app, environ)
    wall, cpu = [], []
    for _ in range(ROUNDS):
        started, started_cpu = time.perf_counter(), time.thread_time()
        for _ in range(requests):
            call(app, environ)
        cpu.append((time.thread_time() - started_cpu) / requests * 1e6)
        wall.append((time.perf_counter() - started) / requests * 1e6)
    return min(wall), min(cpu)


def fill(client: Any) -> None:
    """USER_ID in SEGMENTS segments, as the ceiling's constant body has it."""
    for index in range(SEGMENTS):
        client.post("/api/v1/segments", json={"slug": f"SEGMENT_{index:02d}"})
    response = client.patch(
        READ_PATH, json={"add": [f"SEGMENT_{index:02d}" for index in range(SEGMENTS)]}
    )
    assert response.status_code == 200, response.get_data(as_text=True)


@contextlib.contextmanager
def profile_database(admin_url: str) -> Iterator[str]:
    """A fresh, migrated database on the server of `admin_url`, dropped afterwards."""
    import psycopg2

    from segsvc.migrate import apply_migrations

    name = f"segsvc_profile_{os.getpid()}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    try:
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        try:
            url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
            apply_migrations(url)
            yield url
        finally:
            admin.cursor().execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        admin.close()


@contextlib.contextmanager
def _patched(module: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def _profile(
    app: WsgiApp, environ: dict[str, Any], patch: Callable[[], Any], requests: int
) -> None:
    from pyinstrument import Profiler

    with patch():
        for _ in range(1000):
            call(app, environ)
        profiler = Profiler(interval=0.0001)
        with profiler:
            for _ in range(requests):
                call(app, environ)
    print(profiler.output_text(unicode=True, color=False, show_all=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=REQUESTS, help="per round")
    parser.add_argument("--multiprocess", action="store_true")
    parser.add_argument("--log-level", default="WARNING", help="INFO writes access lines")
    parser.add_argument("--log-format", default="text", choices=("text", "json"))
    parser.add_argument(
        "--profile", choices=("ceiling", "hit", "stubbed", "off", "healthz", "naive")
    )
    options = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if options.multiprocess:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="segsvc-prom-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        else:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        # Imported here: prometheus-client reads PROMETHEUS_MULTIPROC_DIR once, at import.
        from werkzeug.test import EnvironBuilder

        import segsvc
        from segsvc import change_listener, db, memberships, read_cache
        from segsvc.config import Config

        from . import ceiling, naive

        admin_url = os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        )
        url = stack.enter_context(profile_database(admin_url))
        os.environ["DATABASE_URL"] = url  # the naive peer's connection
        stack.enter_context(
            # Line-buffered, as sys.stderr is.
            contextlib.redirect_stderr(stack.enter_context(open(os.devnull, "w", buffering=1)))
        )

        def build(cached: bool) -> Any:
            config = Config(
                database_url=url,
                log_level=options.log_level.upper(),
                log_format=options.log_format,
                expiry_enabled=False,
                read_cache=cached,
            )
            app = segsvc.create_app(config)
            stack.callback(db.close_pools, app)
            return app

        cached, uncached = build(cached=True), build(cached=False)
        fill(uncached.test_client())
        change_listener.start_listening(cached)
        stack.callback(change_listener.stop_listening, cached)
        deadline = time.monotonic() + LISTENER_WAIT_SECONDS
        while not read_cache.cache_of(cached).usable():
            assert time.monotonic() < deadline, "the read cache's listener is not listening"
            time.sleep(0.01)

        headers = {"User-Agent": "profile/1.0"}
        read = EnvironBuilder(path=READ_PATH, headers=headers).get_environ()
        healthz = EnvironBuilder(path="/healthz", headers=headers).get_environ()
        body = call(uncached, read)
        with db.single_statement(db.get_pool(uncached)) as connection:
            rows = memberships.user_segments(connection, USER_ID)

        def stubbed() -> contextlib.AbstractContextManager[None]:
            return _patched(memberships, "user_segments", lambda *_: rows)

        cases: dict[str, tuple[WsgiApp, dict[str, Any], Callable[[], Any]]] = {
            "ceiling": (ceiling.app, read, contextlib.nullcontext),
            "hit": (cached, read, contextlib.nullcontext),
            "stubbed": (uncached, read, stubbed),
            "off": (uncached, read, contextlib.nullcontext),
            "healthz": (cached, healthz, contextlib.nullcontext),
            "naive": (naive.app, read, contextlib.nullcontext),
        }
        if options.profile:
            _profile(*cases[options.profile], options.requests)
            return
        mode = "multiprocess" if options.multiprocess else "single process"
        print(
            f"prometheus: {mode}; log level {options.log_level.upper()} ({options.log_format});"
            f" best of {ROUNDS} rounds of {options.requests:,} requests"
        )
        for name, (app, environ, patch) in cases.items():
            with patch():
                if app not in (ceiling.app, naive.app) and environ is read:
                    assert call(app, environ) == body, f"{name} answers differently"
                wall, cpu = microseconds_per_request(app, environ, options.requests)
            print(f"  {name:<8} {wall:8.1f} µs/request, {cpu:6.1f} µs CPU")
        hits = metrics_sample("segsvc_read_cache_lookups_total", result="hit")
        assert hits >= ROUNDS * options.requests, "the cached reads were not hits"


def metrics_sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    return registry.get_sample_value(name, labels) or 0.0


if __name__ == "__main__":
    main()
