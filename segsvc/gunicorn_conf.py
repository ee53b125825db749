"""Gunicorn settings, shared by `make run`, the Docker image and the benchmarks."""

import os

from segsvc.config import ServeConfig

_serve = ServeConfig.from_environ(os.environ)

bind = f"0.0.0.0:{_serve.port}"
workers = _serve.workers
threads = _serve.threads
worker_class = "gthread"
timeout = _serve.worker_timeout_seconds
graceful_timeout = 10
keepalive = 5
# The app writes its own access line per request; gunicorn's would repeat it.
accesslog = None
errorlog = "-"
wsgi_app = "wsgi:app"
# The control socket lives at one path per user, so several instances on a host would remove
# each other's; segsvc is managed by signals alone.
control_socket_disable = True


def post_worker_init(worker) -> None:
    """Each worker runs the expiry job on its own schedule (safe to run concurrently)."""
    from segsvc.scheduler import start_scheduler

    start_scheduler(worker.wsgi)


def worker_exit(server, worker) -> None:
    from segsvc.scheduler import stop_scheduler

    stop_scheduler(worker.wsgi)
