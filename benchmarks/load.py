"""`make bench`: segsvc's read and write paths against the stack's own ceiling, with wrk.

Builds a dataset (100,000 users, 50 segments, about 1,000,000 memberships and 1,000,000 history
rows), serves segsvc exactly as `make run` does and the ceiling app (benchmarks/ceiling.py) under
the same gunicorn settings, and drives both alternately with wrk, several rounds each. Prints a
table and writes bench-results-load.json. Figures, not a timed test.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg2

from .support import PROJECT, Served, bench_database, free_port, wait_until_ready, write_results

USERS = 100_000
SEGMENTS = 50
ROUNDS = 3
DURATION_SECONDS = 10
CONNECTIONS = 32
THREADS = 2
RESULTS_FILE = PROJECT / "bench-results-load.json"
LOOKUP_IDS = 100

READ_SCRIPT = f"""
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/api/v1/users/" .. math.random(1, {USERS}) .. "/segments")
end
"""

WRITE_SCRIPT = f"""
math.randomseed(os.time())
request = function()
  local add = math.random(1, {SEGMENTS})
  local remove = (add % {SEGMENTS}) + 1
  local body = '{{"add": ["SEGMENT_' .. string.format("%02d", add) ..
               '"], "remove": ["SEGMENT_' .. string.format("%02d", remove) .. '"]}}'
  return wrk.format("PATCH", "/api/v1/users/" .. math.random(1, {USERS}) .. "/segments",
                    {{["Content-Type"] = "application/json"}}, body)
end
"""


# 100 distinct ids a request: a random start, then a random odd step (distinct modulo USERS).
LOOKUP_SCRIPT = f"""
math.randomseed(os.time())
request = function()
  local start = math.random(0, {USERS} - 1)
  local step = 2 * math.random(1, 500) + 1
  local ids = {{}}
  for i = 0, {LOOKUP_IDS} - 1 do
    ids[#ids + 1] = tostring((start + i * step) % {USERS} + 1)
  end
  local body = '{{"user_ids": [' .. table.concat(ids, ",") .. ']}}'
  return wrk.format("POST", "/api/v1/users/segments/lookup",
                    {{["Content-Type"] = "application/json"}}, body)
end
"""


def fill(database_url: str) -> None:
    """Each user is in about ten of the 50 segments (some memberships expire in the future,
    some have expired already), each membership with its `added` history row."""
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO segments (slug, created_at)"
            " SELECT 'SEGMENT_' || to_char(i, 'FM00'), now() - interval '30 days'"
            " FROM generate_series(1, %s) AS i",
            (SEGMENTS,),
        )
        cursor.execute(
            "INSERT INTO users (user_id, registered_at)"
            " SELECT id, now() - interval '30 days' FROM generate_series(1, %s) AS id",
            (USERS,),
        )
        cursor.execute(
            "INSERT INTO memberships (user_id, segment_id, added_at, expires_at)"
            " SELECT u, s, now() - interval '20 days',"
            "        CASE WHEN (u + s) %% 10 = 0 THEN now() + interval '10 days'"
            "             WHEN (u + s) %% 10 = 1 THEN now() - interval '1 day' END"
            "   FROM generate_series(1, %s) AS u, generate_series(1, %s) AS s"
            "  WHERE (u * 7 + s * 13) %% 5 = 0",
            (USERS, SEGMENTS),
        )
        cursor.execute(
            "INSERT INTO membership_history (user_id, segment_id, operation, reason, at)"
            " SELECT user_id, segment_id, 'added', 'manual', added_at FROM memberships"
        )
        cursor.execute("ANALYZE")
        cursor.execute("SELECT count(*) FROM memberships")
        print(
            f"dataset: {USERS:,} users, {SEGMENTS} segments, {cursor.fetchone()[0]:,} memberships"
        )


def run_wrk(port: int, script: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        output = subprocess.run(
            [
                "wrk",
                f"-t{THREADS}",
                f"-c{CONNECTIONS}",
                f"-d{DURATION_SECONDS}s",
                "--latency",
                "-s",
                lua.name,
                f"http://127.0.0.1:{port}",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]),
        "p50_ms": _milliseconds(re.search(r"\s50%\s+([\d.]+\w+)", output)[1]),
        "p99_ms": _milliseconds(re.search(r"\s99%\s+([\d.]+\w+)", output)[1]),
        "non_2xx": int(non_2xx[1]) if non_2xx else 0,
    }


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


class Ceiling:
    """The ceiling app under gunicorn with segsvc's settings file."""

    def __init__(self) -> None:
        self.port = free_port()
        environment = {**os.environ, "PORT": str(self.port), "SEGSVC_LOG_LEVEL": "WARNING"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:segsvc.gunicorn_conf",
                "benchmarks.ceiling:app",
            ],
            cwd=PROJECT,
            env=environment,
        )
        wait_until_ready(f"http://127.0.0.1:{self.port}/api/v1/users/1/segments")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def compare(label: str, served: Served, ceiling: Ceiling, script: str) -> dict[str, object]:
    rounds = []
    for number in range(1, ROUNDS + 1):
        segsvc = run_wrk(served.port, script)
        top = run_wrk(ceiling.port, script)
        rounds.append({"segsvc": segsvc, "ceiling": top})
        print(
            f"{label} round {number}: segsvc {segsvc['requests_per_second']:,.0f} req/s"
            f" (p50 {segsvc['p50_ms']:.2f} ms, p99 {segsvc['p99_ms']:.2f} ms,"
            f" non-2xx {segsvc['non_2xx']}) | ceiling {top['requests_per_second']:,.0f} req/s"
            f" (p50 {top['p50_ms']:.2f} ms, p99 {top['p99_ms']:.2f} ms)",
            flush=True,
        )
    total = {
        side: sum(r[side]["requests_per_second"] for r in rounds) / ROUNDS
        for side in ("segsvc", "ceiling")
    }
    # The median round's p99: one round's stall on a shared machine should not decide it.
    p99 = {
        side: statistics.median(r[side]["p99_ms"] for r in rounds) for side in ("segsvc", "ceiling")
    }
    summary = {
        "rounds": rounds,
        "segsvc_requests_per_second": round(total["segsvc"]),
        "ceiling_requests_per_second": round(total["ceiling"]),
        "throughput_ratio": round(total["segsvc"] / total["ceiling"], 3),
        "segsvc_median_p99_ms": p99["segsvc"],
        "ceiling_median_p99_ms": p99["ceiling"],
        "p99_ratio": round(p99["segsvc"] / p99["ceiling"], 2),
    }
    print(
        f"{label}: segsvc/ceiling throughput {summary['throughput_ratio']:.2f}x,"
        f" p99 {summary['p99_ratio']:.2f}x",
        flush=True,
    )
    return summary


def measure_lookup(served: Served, single_read: dict[str, object]) -> dict[str, object]:
    """The batch lookup in users/s, against the single GET's users/s (its requests/s)."""
    rounds = [run_wrk(served.port, LOOKUP_SCRIPT) for _ in range(ROUNDS)]
    users_per_second = LOOKUP_IDS * sum(r["requests_per_second"] for r in rounds) / ROUNDS
    ratio = users_per_second / single_read["segsvc_requests_per_second"]
    for number, result in enumerate(rounds, start=1):
        print(
            f"lookup round {number}: {result['requests_per_second']:,.0f} req/s of"
            f" {LOOKUP_IDS} ids (p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms,"
            f" non-2xx {result['non_2xx']})",
            flush=True,
        )
    print(
        f"lookup: {users_per_second:,.0f} users/s, {ratio:.1f}x the single GET's users/s",
        flush=True,
    )
    return {
        "rounds": rounds,
        "ids_per_request": LOOKUP_IDS,
        "users_per_second": round(users_per_second),
        "ratio_to_single_get": round(ratio, 2),
    }


def main() -> None:
    results: dict[str, object] = {
        "connections": CONNECTIONS,
        "wrk_threads": THREADS,
        "seconds_per_round": DURATION_SECONDS,
    }
    with bench_database() as database_url:
        fill(database_url)
        served = Served(database_url)
        ceiling = Ceiling()
        try:
            results["workers"] = len(served.workers())
            time.sleep(1)
            results["read"] = compare("GET segments", served, ceiling, READ_SCRIPT)
            results["write"] = compare("PATCH segments", served, ceiling, WRITE_SCRIPT)
            results["lookup"] = measure_lookup(served, results["read"])
        finally:
            ceiling.stop()
            served.stop()
    write_results(RESULTS_FILE, results)


if __name__ == "__main__":
    main()
