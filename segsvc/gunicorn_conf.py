"""Gunicorn settings, shared by `make run`, the Docker image and the benchmarks."""

import os
import secrets

from segsvc.config import ServeConfig
from segsvc.read_cache import VersionTable

_serve = ServeConfig.from_environ(os.environ)
# Made here, in the master, before any worker forks: every worker of this instance shares it.
_read_versions = VersionTable()
# The web console's session key when SEGSVC_SECRET_KEY is unset: one per instance, made here so
# that a session one worker signed is good on the others.
_console_secret_key = secrets.token_urlsafe(32)

bind = f"0.0.0.0:{_serve.port}"
workers = _serve.workers
threads = _serve.threads
# gthread, with requests read whole by the event loop before a thread serves them.
worker_class = "segsvc.gunicorn_worker.BufferingThreadWorker"
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


def on_starting(server) -> None:
    """Metrics files left by an earlier run would be summed into this one's."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))


def post_worker_init(worker) -> None:
    """Each worker runs the background jobs on its own schedule (safe to run concurrently), and
    its read cache listens for other instances' changes."""
    from segsvc.change_listener import start_listening
    from segsvc.console import share_secret_key
    from segsvc.scheduler import start_scheduler

    share_secret_key(worker.wsgi, _console_secret_key)
    start_scheduler(worker.wsgi)
    start_listening(worker.wsgi, _read_versions)


def worker_exit(server, worker) -> None:
    from segsvc.change_listener import stop_listening
    from segsvc.scheduler import stop_scheduler

    stop_listening(worker.wsgi)
    stop_scheduler(worker.wsgi)


def child_exit(server, worker) -> None:
    """In the master, for every worker gone (even killed): its live gauges leave the sums."""
    from segsvc.metrics import mark_worker_dead

    mark_worker_dead(worker.pid)
