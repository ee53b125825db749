"""The background jobs, run by APScheduler inside each gunicorn worker (started by its hooks):
expiry of memberships, and convergence of percentage rollouts.

Every worker of every replica runs both; that is safe (see `segsvc.expiry` and `segsvc.rollout`)
and means they keep working as long as any worker is alive.
"""

import logging
import threading
import time

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from . import expiry, metrics, rollout, segments
from .db import get_pool

SCHEDULER_KEY = "segsvc.scheduler"
STOPPING_KEY = "segsvc.scheduler_stopping"
# A run of the rollout job hands its thread back this often, so stopping a worker never waits long.
JOB_RUN_SECONDS = 5.0

log = logging.getLogger(__name__)


def run_expiry_job(app: Flask) -> int:
    """One run: ends every membership due now; returns how many."""
    config = app.config["SEGSVC"]
    started = time.perf_counter()
    outcome = "error"
    try:
        expired = expiry.expire_due_memberships(get_pool(app), config.expiry_batch_size)
        outcome = "ok"
    finally:
        duration = time.perf_counter() - started
        metrics.EXPIRY_RUNS.labels(outcome).inc()
        metrics.EXPIRY_RUN_DURATION.observe(duration)
    if expired:
        log.info("expired %d memberships in %.3fs", expired, duration)
    return expired


def run_rollout_job(app: Flask) -> int:
    """One run: steps rollouts and empties deleted segments, turn by turn (each turn at most
    JOB_RUN_SECONDS for each), until a turn finds nothing to do or the scheduler stops; returns
    the users covered. An idle service pays two small queries a run; a busy one runs chunk after
    chunk without waiting for the next run."""
    config = app.config["SEGSVC"]
    pool = get_pool(app)
    stopping: threading.Event = app.extensions.setdefault(STOPPING_KEY, threading.Event())
    total = 0
    while not stopping.is_set():
        covered = rollout.converge_rollouts(pool, config.rollout_chunk_users, JOB_RUN_SECONDS)
        removed = segments.remove_members_of_deleted(
            pool, config.rollout_chunk_users, JOB_RUN_SECONDS
        )
        if not covered and not removed:
            break
        log.info(
            "rollouts: %d users converged; deleted segments: %d members left", covered, removed
        )
        total += covered + removed
    return total


def start_scheduler(app: Flask) -> BackgroundScheduler:
    """Starts the rollout job, and the expiry job unless it is switched off, in this process."""
    config = app.config["SEGSVC"]
    jobs = {"converge_rollouts": (run_rollout_job, config.rollout_interval_seconds)}
    if config.expiry_enabled:
        jobs["expire_due_memberships"] = (run_expiry_job, config.expiry_interval_seconds)
    else:
        log.info("expiry job is switched off (SEGSVC_EXPIRY_ENABLED=false)")
    app.extensions[STOPPING_KEY] = threading.Event()
    scheduler = BackgroundScheduler(timezone="UTC")
    for job_id, (job, seconds) in jobs.items():
        scheduler.add_job(
            job,
            "interval",
            args=[app],
            seconds=seconds,
            id=job_id,
            max_instances=1,
            coalesce=True,
        )
    scheduler.start()
    app.extensions[SCHEDULER_KEY] = scheduler
    return scheduler


def stop_scheduler(app: Flask) -> None:
    """Waits for running jobs: a rollout run ends its current turn (at most JOB_RUN_SECONDS)."""
    app.extensions.setdefault(STOPPING_KEY, threading.Event()).set()
    scheduler = app.extensions.pop(SCHEDULER_KEY, None)
    if scheduler is not None:
        scheduler.shutdown(wait=True)
