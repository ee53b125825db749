"""GET /metrics: Prometheus figures for requests, the pool, expiry, reports and rollouts.

Metric objects live for the whole test process, so the tests compare before and after.
"""

import dataclasses
import signal
import urllib.request
from collections.abc import Callable

from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from serving import Launcher, http
from support import change_segments, converge, create_segment, expire_membership

from segsvc import create_app, db, scheduler
from segsvc.config import Config, parse_api_tokens

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
USER_SEGMENTS = "/api/v1/users/<user_id>/segments"


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return parse(response.get_data(as_text=True))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    return sum(
        found
        for (sample_name, sample_labels), found in samples.items()
        if sample_name == name and set(labels.items()) <= set(sample_labels)
    )


def test_requests_are_counted_by_route_template_and_status(client):
    before = scrape(client)

    for user_id in (1000, 1001, 1002):
        assert client.get(f"/api/v1/users/{user_id}/segments").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client)

    ok = {"method": "GET", "route": USER_SEGMENTS, "status": "200"}
    requests = "segsvc_http_requests_total"
    durations = "segsvc_http_request_duration_seconds_count"
    assert value(after, requests, **ok) - value(before, requests, **ok) == 3
    assert value(after, durations, **ok) - value(before, durations, **ok) == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, requests, **unmatched) - value(before, requests, **unmatched) == 1
    routes = {dict(labels).get("route") for name, labels in after if name == requests}
    assert not any("1000" in route for route in routes if route)


def request_series(samples: Samples) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """The series of the request metrics, but for the scrapes' own."""
    return {
        (name, labels)
        for name, labels in samples
        if name.startswith("segsvc_http_request") and ("route", "/metrics") not in labels
    }


ROUTED_METHODS = {"GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"}


def test_made_up_methods_share_the_label_other_and_add_no_series(make_app, subtests):
    """Answered 401 with tokens set, 404 or 405 without: made-up methods reach no view."""
    for tokens in ("", "reader:r3ad-T0ken.for_tests~1"):
        with subtests.test(tokens=bool(tokens)):
            client = make_app(api_tokens=parse_api_tokens(tokens)).test_client()
            for method in ("M00001XYZ", "PROPFIND", "TRACE"):
                client.open("/api/v1/users/1/segments", method=method)
                client.open("/no/such/path", method=method)
            before = scrape(client)
            for number in range(2, 30):
                client.open("/api/v1/users/1/segments", method=f"M{number:05d}XYZ")
                client.open("/no/such/path", method=f"M{number:05d}XYZ")
            after = scrape(client)

            assert request_series(after) == request_series(before)
            methods = {dict(labels)["method"] for _, labels in request_series(after)}
            assert methods <= ROUTED_METHODS | {"other"}
            requests = "segsvc_http_requests_total"
            other = total(after, requests, method="other") - total(before, requests, method="other")
            assert other == 56


def test_an_expiry_run_counts_the_run_its_duration_and_the_rows_it_ended(app, client, sql):
    create_segment(client, "AVITO_DISCOUNT_30")
    for user_id in (1000, 1002):
        change_segments(client, user_id, add=[{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 60}])
        expire_membership(sql, user_id, "AVITO_DISCOUNT_30")
    before = scrape(client)

    assert scheduler.run_expiry_job(app) == 2
    after = scrape(client)

    def grown(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grown("segsvc_expiry_job_runs_total", outcome="ok") == 1
    assert grown("segsvc_expiry_job_duration_seconds_count") == 1
    assert grown("segsvc_memberships_expired_total") == 2


def test_a_report_download_counts_the_rows_it_streamed(client):
    create_segment(client, "AVITO_VOICE_MESSAGES")
    for user_id in (1000, 1001, 1002):
        change_segments(client, user_id, add=["AVITO_VOICE_MESSAGES"])
    month = client.get("/api/v1/users/1000/segments").get_json()["segments"][0]["added_at"][:7]
    before = scrape(client)

    response = client.get(f"/api/v1/reports/history.csv?from={month}")
    assert response.status_code == 200
    rows = response.get_data(as_text=True).splitlines()[1:]
    after = scrape(client)

    name = "segsvc_report_rows_streamed_total"
    assert len(rows) == 3
    assert value(after, name) - value(before, name) == 3


def test_automatic_enrolments_are_counted_by_trigger(client, sql):
    assert client.post("/api/v1/users", json={"user_ids": list(range(1, 11))}).status_code == 200
    before = scrape(client)

    create_segment(client, "AVITO_DISCOUNT_50", auto_percent=100)
    assert value(scrape(client), "segsvc_rollouts_converging") == 1
    converge(client.application)
    assert client.post("/api/v1/users", json={"user_ids": [11, 12]}).status_code == 200
    after = scrape(client)

    name = "segsvc_auto_enrollments_total"
    assert value(after, "segsvc_rollouts_converging") == 0
    assert value(after, name, trigger="rollout") - value(before, name, trigger="rollout") == 10
    registration = value(after, name, trigger="registration")
    assert registration - value(before, name, trigger="registration") == 2
    assert sql.value("SELECT count(*) FROM memberships") == 12


def test_pool_segments_and_memberships_are_reported(client, sql):
    create_segment(client, "AVITO_VOICE_MESSAGES")
    create_segment(client, "AVITO_DISCOUNT_30")
    assert client.delete("/api/v1/segments/AVITO_DISCOUNT_30").status_code == 204
    for user_id in (1000, 1001, 1002):
        change_segments(client, user_id, add=["AVITO_VOICE_MESSAGES"])
    sql.execute("ANALYZE memberships")

    samples = scrape(client)

    # The scrape itself holds one connection while it reads the figures below.
    assert ("segsvc_db_pool_connections_in_use", ()) in samples
    assert value(samples, "segsvc_segments") == 1
    assert value(samples, "segsvc_memberships") == 3


def test_a_metrics_token_is_required_when_one_is_set(config: Config):
    app: Flask = create_app(dataclasses.replace(config, metrics_token="s3cret-token"))
    try:
        client = app.test_client()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            response = client.get("/metrics", headers=headers)
            assert response.status_code == 401
            assert response.mimetype == "application/problem+json"
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.get_json()["code"] == "unauthorized"

        response = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert response.status_code == 200
        assert "segsvc_http_requests_total" in response.get_data(as_text=True)
    finally:
        db.close_pools(app)


def test_served_metrics_add_up_over_every_worker(
    start_launcher: Callable[..., Launcher],
    database_url_for_test: str,
):
    launcher = start_launcher(
        DATABASE_URL=database_url_for_test,
        PROMETHEUS_MULTIPROC_DIR=None,
        SEGSVC_EXPIRY_INTERVAL_SECONDS="1",
    )
    launcher.wait_until_healthy()

    def get(path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{launcher.port}{path}"
        with http.open(urllib.request.Request(url), timeout=5) as response:
            return response.status, response.read().decode()

    requests_made = 40
    for user_id in range(1, requests_made + 1):
        assert get(f"/api/v1/users/{user_id}/segments")[0] == 200

    counts = []
    for _ in range(10):
        status, text = get("/metrics")
        assert status == 200
        samples = parse(text)
        counts.append(total(samples, "segsvc_http_requests_total", route=USER_SEGMENTS))
        assert ("segsvc_db_pool_connections_in_use", ()) in samples
    # Any worker answers a scrape, and each answer is the sum over all of them.
    assert counts == [requests_made] * len(counts)
    assert launcher.stop(signal.SIGTERM) == 0
