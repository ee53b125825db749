"""Benchmark of percentage rollouts over 1,000,000 registered users, through the HTTP API.

Run with `make bench-rollouts` (`python -m benchmarks.rollouts --help` for other sizes). Registers
the users directly in a database of its own, serves segsvc through the launcher as `make run`
does, creates a segment at 10 % and, once converged, ramps it to 50 %. For each it prints how long
the request took to answer and how long until `GET /api/v1/segments/<slug>` showed the rollout
`done`. Client threads send registrations, first changes of new users, changes of existing users
and reads at a steady rate, first for a while with no rollout running, then through the ramp's
convergence; it prints each kind's count, errors and latencies in both phases. At the end of each
rollout it checks the segment's members against the bucket rule. Figures go to stdout and to
bench-results-rollouts.json; it asserts nothing about time.
"""

import argparse
import contextlib
import itertools
import json
import os
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg2

from .support import (
    PROJECT,
    Served,
    bench_database,
    bucket_rule_violations,
    call_api,
    write_results,
)

SLUG = "ROLLOUT"
MANUAL_SLUGS = ("MANUAL_A", "MANUAL_B")
RESULTS_FILE = PROJECT / "bench-results-rollouts.json"
POLL_SECONDS = 0.25
CONVERGENCE_TIMEOUT_SECONDS = 600.0
REGISTRATION_BATCH = 100
THREADS_PER_KIND = 2
# Requests per second of each kind, all its threads together: a steady load well below what the
# machine serves (see "Read and write paths" in docs/performance.md), so latencies are not queueing.
RATES = {
    f"register {REGISTRATION_BATCH} new ids": 5.0,
    "first change of a new user": 20.0,
    "change of an existing user": 40.0,
    "read of a user's segments": 100.0,
}
GOALS = {
    "answer_seconds": 1.0,
    "ramp_convergence_seconds": 20.0,
    "load_p99_ms": 250.0,
}
SHOWN_VIOLATIONS = 10


def register_directly(database_url: str, count: int) -> None:
    """Users 1..count in one statement, then vacuumed (hint bits, visibility map, statistics) as
    autovacuum would, so that autovacuum does not do it in the middle of a measurement."""
    connection = psycopg2.connect(database_url)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO users (user_id, registered_at)"
            " SELECT id, now() FROM generate_series(1, %s) AS id",
            (count,),
        )
        cursor.execute("VACUUM ANALYZE users")
    connection.close()


def api(served: Served, method: str, path: str, body: object = None) -> tuple[dict, float]:
    """The JSON answer of a request that must succeed, and the seconds it took."""
    started = time.perf_counter()
    status, answer = call_api(served.port, method, path, body, timeout=300)
    seconds = time.perf_counter() - started
    if not isinstance(status, int) or status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {answer[:300]!r}")
    return json.loads(answer), seconds


def converge(served: Served, change: Callable[[], tuple[dict, float]]) -> dict[str, object]:
    """Makes a percentage change and polls the segment until its rollout is done: the answer's
    time, the time until a poll saw it done, and the rollout's own start to finish."""
    started = time.perf_counter()
    answered, answer_seconds = change()
    deadline = started + CONVERGENCE_TIMEOUT_SECONDS
    segment = answered
    while segment["rollout"]["state"] != "done":
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{SLUG} did not converge in {CONVERGENCE_TIMEOUT_SECONDS} s")
        time.sleep(POLL_SECONDS)
        segment, _ = api(served, "GET", f"/api/v1/segments/{SLUG}")
    seen_done = time.perf_counter() - started
    rollout = segment["rollout"]
    return {
        "target_percent": rollout["target_percent"],
        "answer_seconds": round(answer_seconds, 3),
        "answered_state": answered["rollout"]["state"],
        "answered_users_left": answered["rollout"]["users_left"],
        "converged_seconds": round(seen_done, 2),
        "rollout_started_to_finished_seconds": round(
            _seconds_between(rollout["started_at"], rollout["finished_at"]), 2
        ),
        "member_count": segment["member_count"],
    }


def _seconds_between(started_at: str, finished_at: str) -> float:
    return (
        datetime.fromisoformat(finished_at) - datetime.fromisoformat(started_at)
    ).total_seconds()


def check_bucket_rule(database_url: str) -> dict[str, object]:
    """The segment's members against the bucket rule over every registered user."""
    with contextlib.closing(psycopg2.connect(database_url)) as connection:
        cursor = connection.cursor()

        def rows(statement: str) -> list[tuple]:
            cursor.execute(statement)
            return cursor.fetchall()

        violations = bucket_rule_violations(rows)
        ((users, automatic),) = rows(
            "SELECT (SELECT count(*) FROM users),"
            " (SELECT count(*) FROM memberships WHERE source = 'auto')"
        )
    return {
        "ok": not violations,
        "users": users,
        "auto_members": automatic,
        "violations": len(violations),
        "shown": violations[:SHOWN_VIOLATIONS],
    }


@dataclass(frozen=True)
class Sent:
    kind: str
    started: float
    seconds: float
    ok: bool


class NewIds:
    """Ids never registered, handed out once each across threads."""

    def __init__(self, first: int) -> None:
        self._next = itertools.count(first)
        self._lock = threading.Lock()

    def take(self, count: int) -> list[int]:
        with self._lock:
            return [next(self._next) for _ in range(count)]


class Load:
    """THREADS_PER_KIND threads per kind, each sending its kind's requests at an even pace
    (a late request is not made up for by a burst), until stopped."""

    def __init__(self, served: Served, registered: int, factor: float) -> None:
        self._served = served
        self._registered = registered
        self._new_ids = NewIds(registered + 1)
        self._stop = threading.Event()
        self._sent: list[Sent] = []
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._run, args=(kind, rate * factor, number))
            for kind, rate in RATES.items()
            for number in range(THREADS_PER_KIND)
        ]
        for thread in self._threads:
            thread.start()

    def _request(self, kind: str, rng: random.Random) -> tuple[str, str, object]:
        if kind.startswith("register"):
            return "POST", "/api/v1/users", {"user_ids": self._new_ids.take(REGISTRATION_BATCH)}
        if kind.startswith("first change"):
            user_id = self._new_ids.take(1)[0]
            return "PATCH", f"/api/v1/users/{user_id}/segments", {"add": [MANUAL_SLUGS[0]]}
        user_id = rng.randint(1, self._registered)
        if kind.startswith("change"):
            add, remove = rng.sample(MANUAL_SLUGS, 2)
            return "PATCH", f"/api/v1/users/{user_id}/segments", {"add": [add], "remove": [remove]}
        return "GET", f"/api/v1/users/{user_id}/segments", None

    def _run(self, kind: str, rate: float, number: int) -> None:
        rng = random.Random(f"{kind}:{number}")
        interval = THREADS_PER_KIND / rate
        next_at = time.perf_counter() + rng.random() * interval
        try:
            while not self._stop.wait(max(0.0, next_at - time.perf_counter())):
                method, path, body = self._request(kind, rng)
                started = time.perf_counter()
                status, _ = call_api(self._served.port, method, path, body)
                seconds = time.perf_counter() - started
                ok = isinstance(status, int) and status < 300
                self._sent.append(Sent(kind, started, seconds, ok))
                next_at = max(next_at + interval, time.perf_counter())
        except BaseException as error:  # re-raised by stop(), in the caller's thread
            self._errors.append(error)

    def between(self, start: float, end: float) -> list[Sent]:
        return [sent for sent in self._sent if start <= sent.started < end]

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise self._errors[0]


@contextlib.contextmanager
def load_running(served: Served, registered: int, factor: float) -> Iterator[Load]:
    load = Load(served, registered, factor)
    try:
        yield load
    finally:
        load.stop()


def load_figures(sent: list[Sent], seconds: float) -> dict[str, dict[str, object]]:
    figures = {}
    for kind in RATES:
        latencies = sorted(1000 * s.seconds for s in sent if s.kind == kind)
        figures[kind] = {
            "count": len(latencies),
            "per_second": round(len(latencies) / seconds, 1),
            "errors": sum(1 for s in sent if s.kind == kind and not s.ok),
            "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
            "p99_ms": round(_percentile(latencies, 99), 1) if latencies else None,
            "max_ms": round(latencies[-1], 1) if latencies else None,
        }
    return figures


def _phase(load: Load, start: float, end: float) -> dict[str, object]:
    return {
        "seconds": round(end - start, 2),
        "kinds": load_figures(load.between(start, end), end - start),
    }


def _percentile(ordered: list[float], percent: int) -> float:
    if len(ordered) < 2:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[percent - 1]


def say(message: str) -> None:
    print(message, flush=True)


def describe_rollout(name: str, figures: dict[str, object]) -> None:
    say(
        f"{name}: answered in {figures['answer_seconds']:.3f} s ({figures['answered_state']},"
        f" {figures['answered_users_left']:,} users left); a poll saw it done"
        f" {figures['converged_seconds']:.1f} s after the request (the rollout's started_at to"
        f" finished_at: {figures['rollout_started_to_finished_seconds']:.1f} s);"
        f" {figures['member_count']:,} members"
    )


def describe_check(check: dict[str, object]) -> None:
    verdict = "ok" if check["ok"] else f"VIOLATION ({check['violations']:,})"
    say(
        f"  bucket rule: {verdict}: {check['auto_members']:,} auto members over"
        f" {check['users']:,} registered users"
    )
    for violation in check["shown"]:
        say(f"    {violation}")


def describe_load(phases: dict[str, dict]) -> None:
    columns = ("count", "per s", "errors", "p50 ms", "p99 ms", "max ms")
    for phase, figures in phases.items():
        say(f"load {phase} ({figures['seconds']:.1f} s):")
        say(f"  {'kind':<28}" + "".join(f"{column:>8}" for column in columns))
        for kind, by_kind in figures["kinds"].items():
            values = [by_kind[key] for key in ("count", "per_second", "errors")]
            values += [by_kind[key] for key in ("p50_ms", "p99_ms", "max_ms")]
            say(f"  {kind:<28}" + "".join(f"{'-' if v is None else v:>8,}" for v in values))


def goals(create: dict, ramp: dict, during_ramp: dict[str, dict]) -> dict[str, bool]:
    answers = max(create["answer_seconds"], ramp["answer_seconds"])
    errors = sum(figures["errors"] for figures in during_ramp.values())
    p99 = max(figures["p99_ms"] or 0.0 for figures in during_ramp.values())
    met = {
        f"changes answer in under {GOALS['answer_seconds']:.0f} s (slowest {answers:.3f} s)": (
            answers < GOALS["answer_seconds"]
        ),
        f"10 % -> 50 % converges in at most {GOALS['ramp_convergence_seconds']:.0f} s"
        f" ({ramp['converged_seconds']:.1f} s)": (
            ramp["converged_seconds"] <= GOALS["ramp_convergence_seconds"]
        ),
        f"no errors in the traffic during the ramp ({errors})": errors == 0,
        f"p99 under {GOALS['load_p99_ms']:.0f} ms for every kind during the ramp"
        f" (highest {p99:.1f} ms)": p99 < GOALS["load_p99_ms"],
    }
    say("goals:")
    for goal, passed in met.items():
        say(f"  {'met   ' if passed else 'MISSED'}  {goal}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registered", type=int, default=1_000_000)
    parser.add_argument(
        "--quiet-seconds", type=float, default=10.0, help="load before the ramp, no rollout"
    )
    parser.add_argument(
        "--load-factor", type=float, default=1.0, help="multiplies every kind's request rate"
    )
    arguments = parser.parse_args()
    settings = {
        name: os.environ[name]
        for name in (
            "SEGSVC_WORKERS",
            "SEGSVC_ROLLOUT_CHUNK_USERS",
            "SEGSVC_ROLLOUT_INTERVAL_SECONDS",
        )
        if name in os.environ
    }
    results: dict[str, object] = {
        "registered_users": arguments.registered,
        "settings_from_environment": settings,
        "load_rates_per_second": {
            kind: rate * arguments.load_factor for kind, rate in RATES.items()
        },
    }
    with bench_database() as database_url:
        say(f"registering {arguments.registered:,} users directly in the database ...")
        register_directly(database_url, arguments.registered)
        with Served(database_url) as served:
            for slug in MANUAL_SLUGS:
                api(served, "POST", "/api/v1/segments", {"slug": slug})
            body = {"slug": SLUG, "auto_percent": 10}
            create = converge(served, lambda: api(served, "POST", "/api/v1/segments", body))
            say(
                f"segsvc: {len(served.workers())} workers; settings from the environment:"
                f" {settings or None}"
            )
            describe_rollout(f"create {SLUG} at 10 %", create)
            create["bucket_rule"] = check_bucket_rule(database_url)
            describe_check(create["bucket_rule"])
            with load_running(served, arguments.registered, arguments.load_factor) as load:
                say(f"load alone for {arguments.quiet_seconds:.0f} s, then the ramp beside it ...")
                quiet_from = time.perf_counter()
                time.sleep(arguments.quiet_seconds)
                ramp_from = time.perf_counter()
                ramp = converge(
                    served,
                    lambda: api(served, "PATCH", f"/api/v1/segments/{SLUG}", {"auto_percent": 50}),
                )
                ramp_to = time.perf_counter()
            describe_rollout(f"ramp {SLUG} to 50 %", ramp)
            ramp["bucket_rule"] = check_bucket_rule(database_url)
            describe_check(ramp["bucket_rule"])
    phases = {
        "with no rollout": _phase(load, quiet_from, ramp_from),
        "during the ramp, until a poll saw it done": _phase(load, ramp_from, ramp_to),
    }
    describe_load(phases)
    during_ramp = phases["during the ramp, until a poll saw it done"]["kinds"]
    results.update(
        create_10_percent=create,
        ramp_to_50_percent=ramp,
        load=phases,
        goals=goals(create, ramp, during_ramp),
    )
    write_results(RESULTS_FILE, results)


if __name__ == "__main__":
    main()
