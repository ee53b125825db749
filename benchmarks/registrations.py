"""Benchmark of concurrent registrations with percentage segments, through the HTTP API.

Run with `make bench-registrations` (`python -m benchmarks.registrations --help` for other sizes).
Registers 700,000 users directly in a database of its own, creates two 100 % segments through
the API (so every user is an `auto` member of both, with history rows), serves segsvc through the
launcher as `make run` does, then has 8 clients send 3 batches of 10,000 ids each at once, in
three scenarios: ids new and disjoint between clients, new ids that overlap between clients, and
ids already registered. Prints every scenario's statuses and latencies, and from samples of the
database's activity meanwhile, the longest-running statements and what connections waited for;
writes them to bench-results-registrations.json. Figures, not a timed test.
"""

import argparse
import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import psycopg2

from segsvc.queries import load_queries

from .rollouts import register_directly
from .support import PROJECT, Served, bench_database, write_results

SEGMENTS = ("ROLLOUT_A", "ROLLOUT_B")
RESULTS_FILE = PROJECT / "bench-results-registrations.json"
SAMPLE_SECONDS = 0.02

http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(served: Served, path: str, body: object) -> tuple[int, dict, float]:
    """Status, answer and seconds of one POST; an error status is an answer, not an exception,
    and no answer at all (a reset, a timeout) is status 0."""
    request = urllib.request.Request(
        f"{served.base_url}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    started = time.perf_counter()
    try:
        with http.open(request, timeout=600) as response:
            status, answer = response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        status, answer = error.code, json.loads(error.read() or b"{}")
    except OSError as error:
        status, answer = 0, {"type": f"no answer: {error}"}
    return status, answer, time.perf_counter() - started


class ActivitySampler:
    """Samples segsvc's busy connections in pg_stat_activity every 20 ms: what they wait for
    (`CPU` when nothing) and, per named query, the longest it was seen running."""

    def __init__(self, database_url: str) -> None:
        self.waits: Counter = Counter()
        self.longest: dict[str, float] = {}
        self._prefixes = {name: body.split("%(")[0] for name, body in load_queries().items()}
        self._connection = psycopg2.connect(database_url)
        self._connection.autocommit = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        with self._connection.cursor() as cursor:
            while not self._stop.wait(SAMPLE_SECONDS):
                cursor.execute(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'),"
                    "       extract(epoch FROM clock_timestamp() - query_start)::float, query"
                    "  FROM pg_stat_activity"
                    " WHERE application_name = 'segsvc' AND state = 'active'"
                    "   AND datname = current_database()"
                )
                for wait, seconds, query in cursor.fetchall():
                    self.waits[wait] += 1
                    name = self._query_name(query)
                    self.longest[name] = max(self.longest.get(name, 0.0), seconds)

    def _query_name(self, text: str) -> str:
        """The named query (sql/*.sql) whose text, up to its first parameter, starts `text`."""
        names = [name for name, prefix in self._prefixes.items() if text.startswith(prefix)]
        return max(names, key=lambda name: len(self._prefixes[name]), default=text[:40])

    def __enter__(self) -> "ActivitySampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._connection.close()

    def wait_shares(self) -> dict[str, float]:
        """Each wait's share of the samples, largest first, the top ten."""
        total = sum(self.waits.values()) or 1
        return {event: round(count / total, 3) for event, count in self.waits.most_common(10)}

    def longest_statements(self) -> dict[str, float]:
        """The five named queries seen running longest, in seconds (to the nearest 20 ms)."""
        ranked = sorted(self.longest.items(), key=lambda item: -item[1])[:5]
        return {name: round(seconds, 2) for name, seconds in ranked}


def send_at_once(served: Served, starts: list[list[int]], batch: int) -> list[dict]:
    """Client c sends batches of `batch` consecutive ids from each of `starts[c]`, one after
    another; all clients at the same time."""
    barrier = threading.Barrier(len(starts))
    requests: list[dict] = []

    def run(client: int) -> None:
        barrier.wait()
        for number, start in enumerate(starts[client]):
            user_ids = list(range(start, start + batch))
            status, answer, seconds = post(served, "/api/v1/users", {"user_ids": user_ids})
            requests.append(
                {
                    "client": client,
                    "batch": number,
                    "status": status,
                    "seconds": round(seconds, 3),
                    "registered": answer.get("registered"),
                    "error": None if status == 200 else answer.get("type", answer),
                }
            )

    threads = [threading.Thread(target=run, args=(client,)) for client in range(len(starts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return requests


def summary(requests: list[dict]) -> dict[str, object]:
    seconds = sorted(request["seconds"] for request in requests)
    return {
        "requests": len(requests),
        "statuses": dict(Counter(str(request["status"]) for request in requests)),
        "median_seconds": round(statistics.median(seconds), 3),
        "p99_seconds": round(statistics.quantiles(seconds, n=100, method="inclusive")[98], 3),
        "max_seconds": seconds[-1],
        "registered": sum(request["registered"] or 0 for request in requests),
    }


def stored_counts(database_url: str) -> dict[str, int]:
    """Users, and members of each segment: at 100 % they must be equal."""
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM users),"
            "       (SELECT count(*) FROM memberships m JOIN segments s USING (segment_id)"
            "         WHERE s.slug = %s),"
            "       (SELECT count(*) FROM memberships m JOIN segments s USING (segment_id)"
            "         WHERE s.slug = %s)",
            SEGMENTS,
        )
        users, *members = cursor.fetchone()
    connection.close()
    return {"users": users, **dict(zip(SEGMENTS, members, strict=True))}


def vacuum(database_url: str) -> None:
    """Settles the bulk load (hint bits, statistics) as autovacuum would, before measuring."""
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    connection.close()


def scenarios(registered: int, clients: int, batches: int, batch: int) -> dict[str, list]:
    """Each scenario's first ids of every client's batches."""
    first_new = registered + 1
    overlapping_from = first_new + clients * batches * batch
    disjoint = [
        [first_new + (client * batches + number) * batch for number in range(batches)]
        for client in range(clients)
    ]
    # Client c's batch b shares half its ids with client c + 1's batch b.
    overlapping = [
        [overlapping_from + (number * clients + client) * (batch // 2) for number in range(batches)]
        for client in range(clients)
    ]
    return {
        "new ids, disjoint between clients": disjoint,
        "new ids, half shared with another client": overlapping,
        "ids already registered": disjoint,
    }


def populate(served: Served, database_url: str, registered: int) -> None:
    """Registered users, then the percentage segments over them, created through the API."""
    print(f"registering {registered:,} users directly ...", flush=True)
    register_directly(database_url, registered)
    for slug in SEGMENTS:
        status, segment, seconds = post(
            served, "/api/v1/segments", {"slug": slug, "auto_percent": 100}
        )
        assert status == 201, segment
        members = segment["member_count"]
        print(f"created {slug} at 100 %: {members:,} members, {seconds:.1f} s", flush=True)
    vacuum(database_url)


def measure(
    served: Served, database_url: str, starts_by_scenario: dict[str, list], batch: int
) -> dict[str, object]:
    results: dict[str, object] = {}
    for name, starts in starts_by_scenario.items():
        with ActivitySampler(database_url) as activity:
            requests = send_at_once(served, starts, batch)
        figures = {
            **summary(requests),
            "longest_statements_seconds": activity.longest_statements(),
            "waits": activity.wait_shares(),
            "all": requests,
        }
        results[name] = figures
        print(
            f"{name}: {figures['statuses']}, median {figures['median_seconds']:.2f} s,"
            f" p99 {figures['p99_seconds']:.2f} s, max {figures['max_seconds']:.2f} s,"
            f" {figures['registered']:,} registered\n"
            f"  longest statements (s): {figures['longest_statements_seconds']}\n"
            f"  waits: {figures['waits']}",
            flush=True,
        )
    results["stored"] = stored_counts(database_url)
    print(f"stored: {results['stored']}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registered", type=int, default=700_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch", type=int, default=10_000)
    arguments = parser.parse_args()
    results: dict[str, object] = {
        "registered_users": arguments.registered,
        "percentage_segments": len(SEGMENTS),
        "clients": arguments.clients,
        "batches_per_client": arguments.batches,
        "batch": arguments.batch,
    }
    starts = scenarios(arguments.registered, arguments.clients, arguments.batches, arguments.batch)
    with bench_database() as database_url, Served(database_url) as served:
        populate(served, database_url, arguments.registered)
        results.update(measure(served, database_url, starts, arguments.batch))
    write_results(RESULTS_FILE, results)


if __name__ == "__main__":
    main()
