"""Prometheus metrics: the metric objects, the request hooks and `GET /metrics`.

Under gunicorn the launcher sets PROMETHEUS_MULTIPROC_DIR, so every worker writes its values to
files there and a scrape of any worker sums them all (prometheus-client's multiprocess mode).
Without it (tests, one process) the default registry is served. Domain modules only increment
the counters below; figures about stored data are read from the database at scrape time.
"""

import functools
import hmac
import logging
import os
import time

import psycopg2
from flask import Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from . import db, queries, request_log
from .errors import ServiceError, problem_response
from .openapi import operation

MULTIPROCESS_DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Requests that match no route share one label, so a scan of random paths adds no series; so do
# requests with a method no route takes (any token is a method in HTTP).
UNMATCHED_ROUTE = "unmatched"
OTHER_METHOD = "other"
_ROUTED_METHODS = "segsvc.metrics.routed_methods"

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "segsvc_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "segsvc_http_request_duration_seconds",
    "Time to the response headers (a streamed body is not included), by route and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DB_POOL_CONNECTIONS_IN_USE = Gauge(
    "segsvc_db_pool_connections_in_use",
    "Database connections borrowed from the pools of live workers.",
    multiprocess_mode="livesum",
)
EXPIRY_RUNS = Counter(
    "segsvc_expiry_job_runs_total",
    "Runs of the scheduled expiry job, by outcome (ok or error).",
    ["outcome"],
)
EXPIRY_RUN_DURATION = Histogram(
    "segsvc_expiry_job_duration_seconds",
    "Duration of the scheduled expiry job's runs.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MEMBERSHIPS_EXPIRED = Counter(
    "segsvc_memberships_expired_total",
    "Memberships ended because they expired (by the job or before a report).",
)
REPORT_ROWS_STREAMED = Counter(
    "segsvc_report_rows_streamed_total",
    "Rows written to CSV downloads (history reports and member exports).",
)
AUTO_ENROLLMENTS = Counter(
    "segsvc_auto_enrollments_total",
    "Automatic memberships added by percentage rollouts, by trigger (registration, or rollout: "
    "a chunk of a convergence). Its rate is the rollouts' users enrolled per second.",
    ["trigger"],
)

READ_CACHE_LOOKUPS = Counter(
    "segsvc_read_cache_lookups_total",
    "Users looked up in the workers' read caches, by result: hit, miss (read from the database) "
    "or bypass (the cache is off while its change notifications are lost).",
    ["result"],
)
READ_CACHE_INVALIDATIONS = Counter(
    "segsvc_read_cache_invalidations_total",
    "Changes that invalidated cached reads, by scope (users: those users' slots; all: every "
    "entry, after a change of segments or a lost notification channel) and origin (commit: set "
    "by the changing worker after its commit; notification: set by a worker's listener).",
    ["scope", "origin"],
)
READ_CACHE_ENTRIES = Gauge(
    "segsvc_read_cache_entries",
    "Users cached by the live workers' read caches.",
    multiprocess_mode="livesum",
)
READ_CACHE_BYPASSED = Gauge(
    "segsvc_read_cache_bypassed_workers",
    "Live workers whose read cache is bypassed because their change notifications are lost.",
    multiprocess_mode="livesum",
)


def _method_label(app: Flask, method: str) -> str:
    """Read from the URL map at the first request: Flask allows no new routes after it."""
    routed = app.extensions.get(_ROUTED_METHODS)
    if routed is None:
        routed = frozenset(
            method for rule in app.url_map.iter_rules() for method in rule.methods or ()
        )
        app.extensions[_ROUTED_METHODS] = routed
    return method if method in routed else OTHER_METHOD


@functools.cache
def _request_series(method: str, route: str, status: int) -> tuple[Counter, Histogram]:
    """The request counter and histogram of one label set, looked up once: `labels()` converts
    every value and takes a lock on each call. Bounded, since no label takes a client's value."""
    labels = (method, route, str(status))
    return HTTP_REQUESTS.labels(*labels), HTTP_REQUEST_DURATION.labels(*labels)


def _count_request(app: Flask, response: Response) -> Response:
    flask_request = request._get_current_object()  # type: ignore[attr-defined]
    rule = flask_request.url_rule
    count_request(
        _method_label(app, flask_request.method),
        rule.rule if rule is not None else UNMATCHED_ROUTE,
        response.status_code,
        request_log.request_started(),
    )
    return response


def count_request(method: str, route: str, status: int, started: float | None) -> None:
    """One answered request, timed from `started` (`time.perf_counter()`) when known."""
    requests, durations = _request_series(method, route, status)
    requests.inc()
    if started is not None:
        durations.observe(time.perf_counter() - started)


def _database_figures() -> str:
    """Active segments and converging rollouts (exact: small tables) and memberships (the
    planner's estimate, free at
    any size), in the text format. Left out when the database does not answer, so the rest of
    the metrics still reach Prometheus."""
    try:
        connection = db.get_connection()
        segments = queries.fetch_one(connection, "count_active_segments")["segments"]
        memberships = queries.fetch_one(connection, "estimate_memberships")["memberships"]
        rollouts = queries.fetch_one(connection, "count_converging_rollouts")["rollouts"]
    except (psycopg2.Error, ServiceError) as error:
        log.warning("metrics without database figures: %s", str(error).strip())
        return ""
    return (
        "# HELP segsvc_segments Active (not deleted) segments.\n"
        "# TYPE segsvc_segments gauge\n"
        f"segsvc_segments {segments}\n"
        "# HELP segsvc_memberships Memberships, estimated from PostgreSQL's statistics.\n"
        "# TYPE segsvc_memberships gauge\n"
        f"segsvc_memberships {memberships}\n"
        "# HELP segsvc_rollouts_converging Percentage rollouts still converging.\n"
        "# TYPE segsvc_rollouts_converging gauge\n"
        f"segsvc_rollouts_converging {rollouts}\n"
    )


def _authorized(token: str | None) -> bool:
    if token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@operation(
    "Metrics in the Prometheus text format",
    tag="operations",
    responses={200: None, 401: None},
    content_type="text/plain",
    uses_database=False,
    description=(
        "Summed over every worker of this instance. When SEGSVC_METRICS_TOKEN is set, it "
        "requires `Authorization: Bearer <token>`. Segment and membership figures are left "
        "out while the database does not answer."
    ),
)
def serve_metrics() -> Response:
    if not _authorized(current_app.config["SEGSVC"].metrics_token):
        response = problem_response(
            401, "unauthorized", "Unauthorized", "This endpoint requires a bearer token."
        )
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    if MULTIPROCESS_DIRECTORY_VARIABLE in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry).decode() + _database_figures()
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def mark_worker_dead(pid: int) -> None:
    """Drops a gone worker's live gauges (its counters keep counting in the sum)."""
    if MULTIPROCESS_DIRECTORY_VARIABLE in os.environ:
        mark_process_dead(pid)


def init_app(app: Flask) -> None:
    # Timed from request_log's first hook: one hook less on every request.
    app.after_request(functools.partial(_count_request, app))
    app.add_url_rule("/metrics", "metrics", serve_metrics, methods=["GET"])
