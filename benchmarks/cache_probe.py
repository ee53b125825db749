"""The read cache's promises under the soak's load: a thread that changes a user of its own on one
instance, then reads it there (every read must reflect the change: read-your-writes within an
instance) and on the other instance until it does (the cross-instance staleness).

The user (an id above the soak's) and its segment (`SOAK_PROBE`) are the probe's alone, so no
other request changes what it expects; the soak's ramps never touch that segment either.
"""

import json
import statistics
import threading
import time
from dataclasses import dataclass, field

from .support import call_api

PROBE_SLUG = "SOAK_PROBE"
PROBE_USER = 1_000_001
PATH = f"/api/v1/users/{PROBE_USER}/segments"
# Reads per instance before a change: each on a new connection, so every worker likely caches
# the user and the reads after the change meet warm entries, not misses.
WARM_READS = 6
READS_AFTER = 4
# Past this a change is late even for another instance (the README's bound is 0.5 s).
STALENESS_BOUND_SECONDS = 1.0
GIVE_UP_SECONDS = 3.0
TIMEOUT_SECONDS = 10.0


@dataclass
class ProbeResult:
    rounds: int = 0
    reads_checked: int = 0
    stale_reads: list[str] = field(default_factory=list)
    staleness_ms: list[float] = field(default_factory=list)
    late: list[str] = field(default_factory=list)

    def staleness_summary(self) -> str:
        if not self.staleness_ms:
            return "no sample"
        ordered = sorted(self.staleness_ms)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        return (
            f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms,"
            f" max {ordered[-1]:.1f} ms over {len(ordered):,} changes"
        )


class CacheProbe:
    def __init__(self, ports: list[int]) -> None:
        self._ports = ports
        self._started = time.monotonic()
        self._stop = threading.Event()
        self.result = ProbeResult()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="soak-cache-probe")
        self._thread.start()

    def stop(self) -> ProbeResult:
        self._stop.set()
        self._thread.join()
        if self._errors:
            raise self._errors[0]
        return self.result

    def _read(self, port: int) -> bool | None:
        """Whether one read has the probe's segment (the soak's ramps may add others), or None
        when the read failed."""
        status, body = call_api(port, "GET", PATH, timeout=TIMEOUT_SECONDS)
        if status != 200:
            return None
        return any(segment["slug"] == PROBE_SLUG for segment in json.loads(body)["segments"])

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                status, _ = call_api(
                    self._ports[0], "POST", "/api/v1/segments", {"slug": PROBE_SLUG}
                )
                if status in (201, 409):
                    break
                time.sleep(0.1)
            while not self._stop.is_set():
                self._round(self.result.rounds % 2 == 0)
                self.result.rounds += 1
        except BaseException as error:  # re-raised by stop(), in the caller's thread
            self._errors.append(error)

    def _round(self, add: bool) -> None:
        here = self._ports[self.result.rounds % len(self._ports)]
        there = self._ports[(self.result.rounds + 1) % len(self._ports)]
        for port in (here, there):
            for _ in range(WARM_READS):
                self._read(port)
        change = {"add": [PROBE_SLUG]} if add else {"remove": [PROBE_SLUG]}
        status, _ = call_api(here, "PATCH", PATH, change, timeout=TIMEOUT_SECONDS)
        if status != 200:
            return  # an outage or the worker kill: nothing to expect
        answered = time.monotonic()
        expected = add
        for _ in range(READS_AFTER):
            read = self._read(here)
            if read is not None:
                self.result.reads_checked += 1
                if read != expected:
                    self.result.stale_reads.append(
                        f"at {answered - self._started:.2f} s: a read"
                        f" {'without' if add else 'with'} {PROBE_SLUG} after the same instance"
                        f" answered its {'addition' if add else 'removal'}"
                    )
        while True:
            # From the answer to the start of the first read that reflects it: a bound of the
            # staleness, precise to one read's latency.
            waited = time.monotonic() - answered
            read = self._read(there)
            if read is None:
                return  # the other instance failed a read: no sample
            if read == expected:
                self.result.staleness_ms.append(waited * 1000)
                if waited > STALENESS_BOUND_SECONDS:
                    self.result.late.append(f"at {answered - self._started:.2f} s: {waited:.2f} s")
                return
            if waited > GIVE_UP_SECONDS:
                self.result.late.append(
                    f"at {answered - self._started:.2f} s: not seen after {waited:.1f} s"
                )
                return
