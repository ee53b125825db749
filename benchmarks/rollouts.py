"""Benchmark of percentage rollouts over 1,000,000 registered users, through the HTTP API.

Run with `make bench-rollouts`. Prints figures (and writes them to bench-results-rollouts.json);
it asserts nothing about time: read the figures, do not time-test them.
"""

import json
import time
import urllib.request

import psycopg2

from .support import PROJECT, Served, bench_database, write_results

REGISTERED = 1_000_000
NEW_USERS = 100_000
BATCH = 10_000
RESULTS_FILE = PROJECT / "bench-results-rollouts.json"

http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(served: Served, method: str, path: str, body: object) -> tuple[dict, float]:
    request = urllib.request.Request(
        f"{served.base_url}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    started = time.perf_counter()
    with http.open(request, timeout=300) as response:
        answer = json.loads(response.read())
    return answer, time.perf_counter() - started


def register_directly(database_url: str, count: int) -> None:
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO users (user_id, registered_at)"
            " SELECT id, now() FROM generate_series(1, %s) AS id",
            (count,),
        )
        cursor.execute("ANALYZE users")


def main() -> None:
    results: dict[str, object] = {"registered_users": REGISTERED}
    with bench_database() as database_url:
        print(f"registering {REGISTERED:,} users directly in the database ...", flush=True)
        register_directly(database_url, REGISTERED)
        with Served(database_url, SEGSVC_WORKERS="2", SEGSVC_EXPIRY_ENABLED="false") as served:
            segment, seconds = call(
                served, "POST", "/api/v1/segments", {"slug": "ROLLOUT", "auto_percent": 10}
            )
            results["create_10_percent"] = {"seconds": round(seconds, 3), **_counts(segment)}
            print(
                f"create a 10% segment: {seconds:.2f} s, {segment['member_count']:,} members",
                flush=True,
            )
            segment, seconds = call(
                served, "PATCH", "/api/v1/segments/ROLLOUT", {"auto_percent": 50}
            )
            results["ramp_to_50_percent"] = {"seconds": round(seconds, 3), **_counts(segment)}
            print(
                f"ramp it to 50%: {seconds:.2f} s, {segment['member_count']:,} members",
                flush=True,
            )
            total = 0.0
            first_id = REGISTERED + 1
            for start in range(first_id, first_id + NEW_USERS, BATCH):
                answer, seconds = call(
                    served, "POST", "/api/v1/users", {"user_ids": list(range(start, start + BATCH))}
                )
                assert answer["registered"] == BATCH, answer
                total += seconds
            segment, _ = call(served, "PATCH", "/api/v1/segments/ROLLOUT", {"description": "50%"})
            results["register_100000_in_batches"] = {
                "seconds": round(total, 3),
                "batches": NEW_USERS // BATCH,
                **_counts(segment),
            }
            print(
                f"register {NEW_USERS:,} new users in batches of {BATCH:,}: {total:.2f} s;"
                f" the 50% segment now has {segment['member_count']:,} members",
                flush=True,
            )
    write_results(RESULTS_FILE, results)


def _counts(segment: dict) -> dict[str, int]:
    return {"member_count": segment["member_count"]}


if __name__ == "__main__":
    main()
