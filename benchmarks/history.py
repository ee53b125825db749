"""Benchmark of the time features: a 1,000,000-row CSV report and 100,000 expiries.

Run with `make bench-history`. Prints figures (and writes them to bench-results-history.json);
it asserts nothing: the machines are shared, so read the figures, do not time-test them.
"""

import http.client
import threading
import time

import psycopg2

from segsvc import expiry
from segsvc.config import Config
from segsvc.db import ConnectionPool

from .support import PROJECT, Served, bench_database, write_results

REPORT_ROWS = 1_000_000
EXPIRIES = 100_000
ROUNDS = 3
RESULTS_FILE = PROJECT / "bench-results-history.json"


def fill_history(database_url: str, rows: int) -> None:
    """`rows` history rows in August 2023 over 50 segments and 100,000 users."""
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO segments (slug, created_at)"
            " SELECT 'SEGMENT_' || i, timestamptz '2023-07-01' FROM generate_series(1, 50) AS i"
        )
        cursor.execute(
            "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
            " SELECT 1 + i %% 100000, 1 + i %% 50,"
            "        CASE WHEN (i / 100000) %% 2 = 0 THEN 'added' ELSE 'removed' END, 'manual',"
            "        timestamptz '2023-08-01 00:00Z' + i * (interval '31 days' / %(rows)s)"
            "   FROM generate_series(0, %(rows)s - 1) AS i",
            {"rows": rows},
        )
        cursor.execute("ANALYZE")


def measure_report(served: Served) -> dict[str, float]:
    """Downloads the month's report while sampling the worker's resident memory."""
    (worker,) = served.workers()
    baseline = worker.memory_info().rss
    peak = baseline
    sampling = True

    def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, worker.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=120)
    connection.request("GET", "/api/v1/reports/history.csv?from=2023-08")
    response = connection.getresponse()
    assert response.status == 200, response.status
    lines = 0
    size = 0
    while chunk := response.read(1 << 16):
        lines += chunk.count(b"\n")
        size += len(chunk)
    elapsed = time.perf_counter() - started
    connection.close()
    sampling = False
    sampler.join()
    rows = lines - 1
    assert rows == REPORT_ROWS, rows
    return {
        "rows": rows,
        "megabytes": round(size / 2**20, 1),
        "seconds": round(elapsed, 3),
        "rows_per_second": round(rows / elapsed),
        "worker_rss_baseline_mib": round(baseline / 2**20, 1),
        "worker_rss_growth_mib": round((peak - baseline) / 2**20, 1),
    }


def insert_due_memberships(database_url: str, count: int) -> None:
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO users (user_id, registered_at)"
            " SELECT id, now() - interval '2 days' FROM generate_series(1, %(count)s) AS id"
            " ON CONFLICT DO NOTHING",
            {"count": count},
        )
        cursor.execute(
            "INSERT INTO memberships (user_id, segment_id, added_at, expires_at)"
            " SELECT id, 1 + id %% 50, now() - interval '2 days',"
            "        now() - interval '1 day' + id * interval '1 millisecond'"
            "   FROM generate_series(1, %(count)s) AS id",
            {"count": count},
        )
        cursor.execute("ANALYZE memberships")


def measure_expiry(database_url: str) -> dict[str, float]:
    insert_due_memberships(database_url, EXPIRIES)
    pool = ConnectionPool(Config(database_url=database_url, db_pool_max=1))
    try:
        started = time.perf_counter()
        expired = expiry.expire_due_memberships(pool, batch_size=10_000)
        elapsed = time.perf_counter() - started
    finally:
        pool.close()
    assert expired == EXPIRIES, expired
    return {"expired": expired, "seconds": round(elapsed, 3)}


def main() -> None:
    results: dict[str, object] = {}
    with bench_database() as database_url:
        print(f"filling {REPORT_ROWS:,} history rows ...", flush=True)
        fill_history(database_url, REPORT_ROWS)
        reports = []
        with Served(database_url, SEGSVC_WORKERS="1", SEGSVC_EXPIRY_ENABLED="false") as served:
            for round_number in range(1, ROUNDS + 1):
                figures = measure_report(served)
                reports.append(figures)
                print(
                    f"report round {round_number}: {figures['rows']:,} rows"
                    f" ({figures['megabytes']} MiB) in {figures['seconds']} s ="
                    f" {figures['rows_per_second']:,} rows/s; worker RSS"
                    f" {figures['worker_rss_baseline_mib']} MiB, grew by"
                    f" {figures['worker_rss_growth_mib']} MiB",
                    flush=True,
                )
        results["report"] = reports
        results["expiry"] = expiries = [measure_expiry(database_url) for _ in range(ROUNDS)]
        for round_number, figures in enumerate(expiries, start=1):
            print(
                f"expiry round {round_number}: {figures['expired']:,} memberships"
                f" in {figures['seconds']} s",
                flush=True,
            )
    write_results(RESULTS_FILE, results)


if __name__ == "__main__":
    main()
