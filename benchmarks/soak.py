"""Soak test: two segsvc instances on one database under random load for a fixed time, while one
gunicorn worker is killed with SIGKILL and PostgreSQL is stopped and started again.

Run with `make soak` (60 s; `python -m benchmarks.soak --seconds N` for another length);
tests/test_soak.py runs a shorter one. Afterwards it waits for every percentage rollout to
converge, then checks the answers (no 500s, 503s only during the outage), the history
(alternating per user and segment, ending in the current state, no row twice), the percentage
segments (their `auto` members are exactly what the bucket rule selects), the read cache
(read-your-writes within an instance, and the staleness across them), the server
connections (back within the pools' bounds) and the server's log (no deadlock), prints a
summary and exits non-zero when a check fails. It always runs its own embedded PostgreSQL, which
it restarts; the instances' logs go to var/soak-instances.log, the server's to
var/soak-postgres.log.
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2

from segsvc.db import APPLICATION_NAME
from segsvc.embedded import embedded_server
from segsvc.launcher import ensure_database
from segsvc.migrate import apply_migrations

from .cache_probe import CacheProbe, ProbeResult
from .consistency import duplicated_history_rows, history_violations
from .support import PROJECT, Served, bucket_rule_violations, call_api

SOAK_DATABASE = "soak"
INSTANCES = 2
WORKERS = 2
POOL_MAX = 5
INSTANCE_ENVIRONMENT = {
    "SEGSVC_WORKERS": str(WORKERS),
    "SEGSVC_THREADS": "4",
    "SEGSVC_DB_POOL_MAX": str(POOL_MAX),
    "SEGSVC_DB_CONNECT_TIMEOUT_SECONDS": "1",
    "SEGSVC_EXPIRY_INTERVAL_SECONDS": "1",
    # A rollout over the soak's 200 users then takes several chunks, so that ramps, deletions and
    # changes of users land between them.
    "SEGSVC_ROLLOUT_CHUNK_USERS": "50",
    # Warnings name what a 503 stood for (an outage, a deadlock, a timeout); no access lines.
    "SEGSVC_LOG_LEVEL": "WARNING",
}
CONNECTION_BOUND = INSTANCES * WORKERS * POOL_MAX
# After PostgreSQL answers again, a worker's first requests may still meet connections pooled
# before the outage; the first one found broken drops the idle rest, so these 503s come within
# a worker's first few requests. Every worker gets requests every few milliseconds here; 5 s
# leaves room for a busy 2-core machine and is still short against the load that follows.
RECOVERY_GRACE_SECONDS = 5.0
# The load goes on at least this long after the grace, so that the service is seen recovered.
LOAD_AFTER_GRACE_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 30.0
# Killed workers' server connections end when their backends next read; statements are
# cancelled after SEGSVC_STATEMENT_TIMEOUT_SECONDS (5 s), so this is ample.
CONNECTIONS_SETTLE_SECONDS = 30.0
RESPAWN_TIMEOUT_SECONDS = 30.0
RESTART_TIMEOUT_SECONDS = 60.0
# Once the load stops, rollouts started by its last ramps need a few runs of the rollout job
# (every second in every worker, a chunk of 50 users at a time).
ROLLOUTS_DONE_TIMEOUT_SECONDS = 60.0
SHOWN_VIOLATIONS = 10
LOG_FILE = PROJECT / "var" / "soak-instances.log"
# The embedded server's own log (deadlock reports name their statements only there).
POSTGRES_LOG_FILE = PROJECT / "var" / "soak-postgres.log"


@dataclass(frozen=True)
class SoakPlan:
    """How long the load runs and when, in seconds from its start, the faults happen."""

    seconds: float
    kill_worker_at: float
    outage_at: float
    outage_seconds: float
    clients: int = 12
    users: int = 200
    slugs: int = 10
    seed: int = field(default_factory=lambda: random.randrange(1 << 32))

    @classmethod
    def lasting(cls, seconds: float, **overrides: int) -> "SoakPlan":
        return cls(
            seconds=seconds,
            kill_worker_at=0.2 * seconds,
            outage_at=0.35 * seconds,
            outage_seconds=min(5.0, 0.1 * seconds),
            **overrides,
        )


@dataclass(frozen=True)
class Sent:
    """One request: times from the load's start, its status or the transport error's name, and
    the problem's code of a 5xx answer."""

    operation: str
    started: float
    ended: float
    outcome: int | str
    problem: str | None = None

    def overlaps(self, start: float, end: float) -> bool:
        return self.started <= end and self.ended >= start


@dataclass
class Timeline:
    """When the faults happened, in seconds from the load's start."""

    killed_pid: int = 0
    kill_started: float = 0.0
    kill_done: float = 0.0
    respawned: float | None = None
    outage_started: float = 0.0
    answered_again: float = 0.0
    load_ended: float = 0.0


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str
    violations: list[str] = field(default_factory=list)


@dataclass
class SoakResult:
    plan: SoakPlan
    timeline: Timeline
    sent: list[Sent]
    checks: list[Check]
    log_path: Path

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def random_request(rng: random.Random, plan: SoakPlan) -> tuple[str, str, str, object]:
    """(operation, method, path, body) over a small universe, so that requests collide."""
    user_id = rng.randint(1, plan.users)
    slugs = [f"SOAK_{index}" for index in rng.sample(range(plan.slugs), rng.randint(1, 3))]
    choice = rng.random()
    if choice < 0.5:
        added = slugs[: rng.randint(0, len(slugs))]
        add = [
            {"slug": slug, "ttl_seconds": rng.randint(1, 3)} if rng.random() < 0.3 else slug
            for slug in added
        ]
        body = {"add": add, "remove": slugs[len(added) :]}
        return "change segments", "PATCH", f"/api/v1/users/{user_id}/segments", body
    if choice < 0.63:
        return "read segments", "GET", f"/api/v1/users/{user_id}/segments", None
    if choice < 0.65:
        percent = rng.choice((0, rng.randint(1, 100), round(rng.uniform(0, 100), 2)))
        body = {"auto_percent": percent}
        return "ramp segment", "PATCH", f"/api/v1/segments/{slugs[0]}", body
    if choice < 0.75:
        body = {"slug": slugs[0]}
        if rng.random() < 0.25:
            body["auto_percent"] = rng.randint(1, 50)
        return "create segment", "POST", "/api/v1/segments", body
    if choice < 0.8:
        return "delete segment", "DELETE", f"/api/v1/segments/{slugs[0]}", None
    if choice < 0.92:
        ids = rng.sample(range(1, plan.users + 1), rng.randint(1, 5))
        return "register users", "POST", "/api/v1/users", {"user_ids": ids}
    return "delete user", "DELETE", f"/api/v1/users/{user_id}", None


def send(port: int, method: str, path: str, body: object) -> tuple[int | str, str | None]:
    """One request on a connection of its own: its status, or the transport error's name, and
    the problem's code of a 5xx answer."""
    outcome, answer = call_api(port, method, path, body, REQUEST_TIMEOUT_SECONDS)
    if isinstance(outcome, str) or outcome < 500:
        return outcome, None
    try:
        return outcome, json.loads(answer)["code"]
    except (ValueError, KeyError, TypeError):
        return outcome, answer[:100].decode(errors="replace")


class Load:
    """Client threads sending random requests to random instances until stopped."""

    def __init__(self, plan: SoakPlan, ports: list[int]) -> None:
        self.started = time.monotonic()
        self._plan = plan
        self._ports = ports
        self._stop = threading.Event()
        self._sent: list[list[Sent]] = [[] for _ in range(plan.clients)]
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._run, args=(index,), name=f"soak-client-{index}")
            for index in range(plan.clients)
        ]
        for thread in self._threads:
            thread.start()

    def now(self) -> float:
        return time.monotonic() - self.started

    def _run(self, index: int) -> None:
        rng = random.Random(self._plan.seed + index)
        try:
            while not self._stop.is_set():
                operation, method, path, body = random_request(rng, self._plan)
                started = self.now()
                outcome, problem = send(rng.choice(self._ports), method, path, body)
                self._sent[index].append(Sent(operation, started, self.now(), outcome, problem))
        except BaseException as error:  # re-raised by stop(), in the caller's thread
            self._errors.append(error)

    def stop(self) -> list[Sent]:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise self._errors[0]
        return sorted(
            (sent for per_client in self._sent for sent in per_client),
            key=lambda sent: sent.started,
        )


class RestartablePostgres:
    """An embedded PostgreSQL on a data directory of its own, stopped and started at will."""

    def __init__(self, pgdata: Path) -> None:
        self._pgdata = pgdata
        self._running = contextlib.ExitStack()
        self.admin_url = self.start()

    def start(self) -> str:
        self._running = contextlib.ExitStack()
        return self._running.enter_context(embedded_server(self._pgdata))

    def stop(self) -> None:
        self._running.close()

    def server_log(self) -> str:
        """What the server logged so far, across its restarts."""
        log = self._pgdata / "log"
        return log.read_text(errors="replace") if log.exists() else ""

    def wait_until_answering(self) -> None:
        deadline = time.monotonic() + RESTART_TIMEOUT_SECONDS
        while True:
            try:
                psycopg2.connect(self.admin_url, connect_timeout=1).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def query(self, statement: str, database: str = "postgres") -> list[tuple]:
        """Rows of one read-only statement, in a snapshot of its own."""
        url = urlunsplit(urlsplit(self.admin_url)._replace(path=f"/{database}"))
        with contextlib.closing(psycopg2.connect(url)) as connection, connection:
            connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
            with connection.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall()


def say(message: str) -> None:
    print(message, flush=True)


def sleep_until(load: Load, moment: float) -> None:
    time.sleep(max(0.0, moment - load.now()))


def kill_a_worker(load: Load, served: Served, rng: random.Random, timeline: Timeline) -> None:
    """SIGKILLs one gunicorn worker, then waits (bounded) for gunicorn to fork its successor."""
    victim = rng.choice(served.workers())
    timeline.killed_pid = victim.pid
    timeline.kill_started = load.now()
    os.kill(victim.pid, signal.SIGKILL)
    timeline.kill_done = load.now()
    say(f"{timeline.kill_done:6.1f} s  killed gunicorn worker {victim.pid} with SIGKILL")
    deadline = time.monotonic() + RESPAWN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        pids = {worker.pid for worker in served.workers()}
        if len(pids) == WORKERS and victim.pid not in pids:
            timeline.respawned = load.now()
            say(f"{timeline.respawned:6.1f} s  gunicorn runs a new worker in its place")
            return
        time.sleep(0.1)


def restart_postgres(
    load: Load, postgres: RestartablePostgres, plan: SoakPlan, timeline: Timeline
) -> None:
    timeline.outage_started = load.now()
    say(f"{timeline.outage_started:6.1f} s  stopping PostgreSQL")
    postgres.stop()
    time.sleep(plan.outage_seconds)
    say(f"{load.now():6.1f} s  starting PostgreSQL again")
    postgres.start()
    postgres.wait_until_answering()
    timeline.answered_again = load.now()
    say(f"{timeline.answered_again:6.1f} s  PostgreSQL answers again")


def drive(
    plan: SoakPlan, instances: list[Served], postgres: RestartablePostgres
) -> tuple[Timeline, list[Sent], ProbeResult]:
    """Runs the load, and the read cache's probe beside it, with the faults; it ends no earlier
    than the plan says, nor before the service has been under load a while past the recovery
    grace."""
    rng = random.Random(plan.seed)
    timeline = Timeline()
    ports = [served.port for served in instances]
    probe = CacheProbe(ports)
    load = Load(plan, ports)
    try:
        sleep_until(load, plan.kill_worker_at)
        kill_a_worker(load, rng.choice(instances), rng, timeline)
        sleep_until(load, plan.outage_at)
        restart_postgres(load, postgres, plan, timeline)
        after_grace = timeline.answered_again + RECOVERY_GRACE_SECONDS + LOAD_AFTER_GRACE_SECONDS
        sleep_until(load, max(plan.seconds, after_grace))
    finally:
        timeline.load_ended = load.now()
        sent = load.stop()
        probed = probe.stop()
    say(f"{timeline.load_ended:6.1f} s  load stopped after {len(sent):,} requests")
    return timeline, sent, probed


def settled_connections(postgres: RestartablePostgres) -> int:
    """segsvc's server connections, polled until within the pools' bounds or a deadline."""
    statement = (
        f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{APPLICATION_NAME}'"
    )
    deadline = time.monotonic() + CONNECTIONS_SETTLE_SECONDS
    while True:
        ((count,),) = postgres.query(statement)
        if count <= CONNECTION_BOUND or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


def check_answers(sent: list[Sent], timeline: Timeline) -> list[Check]:
    outage = (timeline.outage_started, timeline.answered_again + RECOVERY_GRACE_SECONDS)
    errors = [
        r for r in sent if isinstance(r.outcome, int) and r.outcome >= 500 and r.outcome != 503
    ]
    unavailable = [request for request in sent if request.outcome == 503]
    outside = [request for request in unavailable if not request.overlaps(*outage)]
    problems = Counter(request.problem for request in unavailable)
    last = max((request.started for request in unavailable), default=timeline.outage_started)
    broken = [request for request in sent if isinstance(request.outcome, str)]
    away = [r for r in broken if not r.overlaps(timeline.kill_started, timeline.kill_done)]
    recovered = [r for r in sent if r.started > outage[1] and r.outcome in (200, 201, 204)]
    return [
        Check("no 500s (no 5xx but 503)", not errors, f"{len(errors)}", _described(errors)),
        Check(
            "503 only during the outage (and some then)",
            bool(unavailable) and not outside,
            f"{len(unavailable) - len(outside):,} inside [{outage[0]:.1f} s, {outage[1]:.1f} s],"
            f" {len(outside)} outside; {_counted(problems)}; the last began"
            f" {last - timeline.answered_again:+.1f} s after PostgreSQL answered again",
            _described(outside) or ([] if unavailable else ["the load never met the outage"]),
        ),
        Check(
            "transport errors only for requests in flight at the worker kill",
            not away,
            f"{len(broken) - len(away)} at the kill, {len(away)} elsewhere",
            _described(away),
        ),
        Check(
            "gunicorn replaced the killed worker",
            timeline.respawned is not None,
            f"worker {timeline.killed_pid}, in {_moment(timeline.respawned, timeline.kill_done)}",
            [] if timeline.respawned else [f"no new worker in {RESPAWN_TIMEOUT_SECONDS:.0f} s"],
        ),
        Check(
            "the service answers again after the grace",
            bool(recovered),
            f"{len(recovered):,} successes after {outage[1]:.1f} s",
            [] if recovered else ["no success after the outage"],
        ),
    ]


def converging_rollouts(port: int) -> list[str]:
    """The slugs whose rollout still converges, as the segment listing shows them."""
    status, answer = call_api(port, "GET", "/api/v1/segments", timeout=REQUEST_TIMEOUT_SECONDS)
    if status != 200:
        return [f"(the listing answered {status})"]
    return sorted(
        segment["slug"]
        for segment in json.loads(answer)["segments"]
        if segment["rollout"] and segment["rollout"]["state"] == "converging"
    )


def check_rollouts_done(port: int) -> Check:
    """Polls until no rollout converges (bounded): the bucket rule holds only once they are done."""
    started = time.monotonic()
    while (converging := converging_rollouts(port)) and (
        time.monotonic() - started < ROLLOUTS_DONE_TIMEOUT_SECONDS
    ):
        time.sleep(0.2)
    waited = time.monotonic() - started
    return Check(
        "every rollout converged after the load",
        not converging,
        f"in {waited:.1f} s",
        [f"{slug} still converging after {waited:.0f} s" for slug in converging],
    )


def check_connections(count: int) -> Check:
    return Check(
        "server connections back within the pools' bounds",
        count <= CONNECTION_BOUND,
        f"{count} <= {CONNECTION_BOUND} ({INSTANCES} instances x {WORKERS} workers x {POOL_MAX})",
        [] if count <= CONNECTION_BOUND else [f"{count} after {CONNECTIONS_SETTLE_SECONDS} s"],
    )


def check_read_cache(probed: ProbeResult) -> list[Check]:
    return [
        Check(
            "reads reflect every change their instance answered before they began",
            probed.reads_checked > 0 and not probed.stale_reads,
            f"{probed.reads_checked:,} reads after {probed.rounds:,} changes,"
            f" {len(probed.stale_reads)} stale",
            probed.stale_reads or ([] if probed.reads_checked else ["no read was checked"]),
        ),
        Check(
            "the other instance reads a change within 1 s",
            bool(probed.staleness_ms) and not probed.late,
            probed.staleness_summary(),
            probed.late or ([] if probed.staleness_ms else ["no change was measured"]),
        ),
    ]


def check_no_deadlocks(server_log: str) -> Check:
    """A deadlock is a 503 for a request that did nothing wrong; one inside the outage's grace
    would pass the answers' check, so the server's own log is read."""
    reports = [line for line in server_log.splitlines() if "ERROR:  deadlock detected" in line]
    details = [
        line.strip()
        for line in server_log.splitlines()
        if line.lstrip().startswith("Process ") and " waits for " in line
    ]
    return Check("PostgreSQL detected no deadlock", not reports, f"{len(reports)}", details)


def check_history(postgres: RestartablePostgres, database: str) -> list[Check]:
    def rows(statement: str) -> list[tuple]:
        return postgres.query(statement, database)

    ((history, pairs),) = rows(
        "SELECT count(*), count(DISTINCT (user_id, segment_id)) FROM membership_history"
    )
    alternation = history_violations(rows)
    duplicates = duplicated_history_rows(rows)
    return [
        Check(
            "history alternates added/removed per (user, segment), ends in the current state",
            not alternation,
            f"{history:,} rows over {pairs:,} pairs",
            alternation,
        ),
        Check("no history row duplicated", not duplicates, f"{len(duplicates)}", duplicates),
    ]


def check_bucket_rule(postgres: RestartablePostgres, database: str) -> Check:
    def rows(statement: str) -> list[tuple]:
        return postgres.query(statement, database)

    violations = bucket_rule_violations(rows)
    ((segments, automatic, manual, excluded, users),) = rows(
        "SELECT (SELECT count(*) FROM segments WHERE deleted_at IS NULL AND auto_percent > 0),"
        " count(*) FILTER (WHERE m.source = 'auto'), count(*) FILTER (WHERE m.source = 'manual'),"
        " (SELECT count(*) FROM auto_exclusions e JOIN segments s USING (segment_id)"
        "   WHERE s.deleted_at IS NULL AND s.auto_percent > 0),"
        " (SELECT count(*) FROM users)"
        " FROM memberships m JOIN segments s USING (segment_id)"
        " WHERE s.deleted_at IS NULL AND s.auto_percent > 0"
    )
    return Check(
        "auto members of every percentage segment are what its buckets select",
        not violations,
        f"{automatic:,} auto members in {segments} segments over {users} users, besides"
        f" {manual:,} manual members and {excluded:,} exclusions",
        violations,
    )


def _described(requests: list[Sent]) -> list[str]:
    return [
        f"{request.operation} from {request.started:.2f} s to {request.ended:.2f} s:"
        f" {request.outcome}{f' {request.problem}' if request.problem else ''}"
        for request in requests
    ]


def _counted(counts: Counter) -> str:
    return ", ".join(f"{key} {count:,}" for key, count in counts.most_common())


def _moment(seconds: float | None, since: float = 0.0) -> str:
    return "never" if seconds is None else f"{seconds - since:.1f} s"


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Processes started meanwhile write their output to `path` (it holds the instances' logs,
    which an outage fills with tracebacks of the expiry job)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with path.open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        yield
    finally:
        for descriptor, copy in enumerate(saved, start=1):
            os.dup2(copy, descriptor)
            os.close(copy)


@contextlib.contextmanager
def soak_database() -> Iterator[tuple[RestartablePostgres, str]]:
    """A migrated database on an embedded PostgreSQL of its own (outside pytest's temporary
    tree: as root the server runs as another user); stopped and deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="segsvc-soak-pg-", ignore_cleanup_errors=True) as top:
        postgres = RestartablePostgres(Path(top).resolve() / "pgdata")
        try:
            ensure_database(postgres.admin_url, SOAK_DATABASE)
            database_url = urlunsplit(
                urlsplit(postgres.admin_url)._replace(path=f"/{SOAK_DATABASE}")
            )
            apply_migrations(database_url)
            yield postgres, database_url
        finally:
            postgres.stop()
            server_log = Path(top) / "pgdata" / "log"
            if server_log.exists():
                POSTGRES_LOG_FILE.parent.mkdir(exist_ok=True)
                shutil.copyfile(server_log, POSTGRES_LOG_FILE)


def run_soak(plan: SoakPlan, log_path: Path) -> SoakResult:
    say(
        f"soak: {plan.seconds:.0f} s, {INSTANCES} instances x {WORKERS} workers,"
        f" {plan.clients} client threads, {plan.users} users, {plan.slugs} slugs, seed {plan.seed};"
        f" instance logs in {log_path}"
    )
    with soak_database() as (postgres, database_url), contextlib.ExitStack() as instances:
        with output_to(log_path):
            served = [
                instances.enter_context(Served(database_url, **INSTANCE_ENVIRONMENT))
                for _ in range(INSTANCES)
            ]
        timeline, sent, probed = drive(plan, served, postgres)
        checks = [
            *check_answers(sent, timeline),
            *check_read_cache(probed),
            check_rollouts_done(served[0].port),
            check_connections(settled_connections(postgres)),
            check_no_deadlocks(postgres.server_log()),
        ]
        instances.close()
        checks += [
            *check_history(postgres, SOAK_DATABASE),
            check_bucket_rule(postgres, SOAK_DATABASE),
        ]
    return SoakResult(plan, timeline, sent, checks, log_path)


def status_table(sent: list[Sent]) -> list[str]:
    """Requests by operation (rows) and status or transport error (columns)."""
    counts = Counter((request.operation, request.outcome) for request in sent)
    outcomes = sorted({outcome for _, outcome in counts}, key=lambda o: (isinstance(o, str), o))
    operations = sorted({operation for operation, _ in counts})
    header = ["operation", *map(str, outcomes), "total"]
    body = [
        [
            operation,
            *(f"{counts[operation, outcome]:,}" for outcome in outcomes),
            f"{sum(counts[operation, outcome] for outcome in outcomes):,}",
        ]
        for operation in operations
    ]
    totals = Counter(request.outcome for request in sent)
    body.append(["all", *(f"{totals[outcome]:,}" for outcome in outcomes), f"{len(sent):,}"])
    widths = [max(len(row[column]) for row in [header, *body]) for column in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *body]
    ]


def summary(result: SoakResult) -> str:
    timeline = result.timeline
    lines = [
        "",
        f"requests: {len(result.sent):,} in {timeline.load_ended:.1f} s, by operation and status"
        " (or transport error):",
        *status_table(result.sent),
        "",
        "events, in seconds from the start of the load:",
        f"  {timeline.kill_done:6.1f}  gunicorn worker {timeline.killed_pid} killed (SIGKILL),"
        f" replaced at {_moment(timeline.respawned)}",
        f"  {timeline.outage_started:6.1f}  PostgreSQL stopped; it answered again at"
        f" {timeline.answered_again:.1f} s (503s allowed until"
        f" {timeline.answered_again + RECOVERY_GRACE_SECONDS:.1f} s)",
        "",
        "checks:",
    ]
    for check in result.checks:
        lines.append(f"  {'ok  ' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
        lines += [f"          {violation}" for violation in check.violations[:SHOWN_VIOLATIONS]]
        if len(check.violations) > SHOWN_VIOLATIONS:
            lines.append(f"          ... and {len(check.violations) - SHOWN_VIOLATIONS:,} more")
    verdict = "passed" if result.passed else "FAILED"
    lines.append(f"soak {verdict} (seed {result.plan.seed}; instance logs: {result.log_path})")
    return "\n".join(lines)


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load")
    parser.add_argument("--seed", type=int, help="seed of the random requests")
    options = parser.parse_args(arguments)
    if options.seconds < 10:
        parser.error("--seconds must be at least 10")
    seeded = {} if options.seed is None else {"seed": options.seed}
    LOG_FILE.parent.mkdir(exist_ok=True)
    LOG_FILE.unlink(missing_ok=True)
    result = run_soak(SoakPlan.lasting(options.seconds, **seeded), LOG_FILE)
    say(summary(result))
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
