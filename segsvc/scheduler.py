"""The expiry job, run by APScheduler inside each gunicorn worker (started by its hooks).

Every worker of every replica runs it; that is safe (see `segsvc.expiry`) and means expiry
keeps working as long as any worker is alive.
"""

import logging
import time

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

from . import expiry, metrics
from .db import get_pool

SCHEDULER_KEY = "segsvc.scheduler"

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


def start_scheduler(app: Flask) -> BackgroundScheduler | None:
    """Starts the expiry job in this process, unless it is switched off."""
    config = app.config["SEGSVC"]
    if not config.expiry_enabled:
        log.info("expiry job is switched off (SEGSVC_EXPIRY_ENABLED=false)")
        return None
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        run_expiry_job,
        "interval",
        args=[app],
        seconds=config.expiry_interval_seconds,
        id="expire_due_memberships",
        max_instances=1,
        coalesce=True,
    )
    scheduler.start()
    app.extensions[SCHEDULER_KEY] = scheduler
    return scheduler


def stop_scheduler(app: Flask) -> None:
    scheduler = app.extensions.pop(SCHEDULER_KEY, None)
    if scheduler is not None:
        scheduler.shutdown(wait=True)
