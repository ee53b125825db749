"""segsvc: dynamic user segmentation over HTTP."""

from collections.abc import Callable
from typing import Any

from flask import Flask

from . import audit, auth, console, db, errors, fast_reads, metrics, read_cache, request_log

# Aliased: plain names would shadow the domain modules segsvc.segments, .users and .reports.
from .api import docs as docs_api
from .api import downloads
from .api import events as events_api
from .api import health as health_api
from .api import reports as reports_api
from .api import segments as segments_api
from .api import users as users_api
from .config import Config
from .openapi import build_spec


class SyncFlask(Flask):
    """Flask for a service without async views or hooks: `ensure_sync` hands each function back
    as it is. Flask's own asks `inspect.iscoroutinefunction` of every hook and view on every
    request, 4 % of a cached read's time; a test checks that no function of segsvc is async."""

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return func


def create_app(config: Config | None = None) -> Flask:
    """Builds the WSGI app; without `config`, settings come from the environment."""
    config = config or Config.from_environ()
    app = SyncFlask(__name__, static_folder=None)
    app.config["SEGSVC"] = config
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False
    # A doubled slash is a path no route has (a 404 problem), not a redirect with an HTML body.
    app.url_map.merge_slashes = False
    request_log.configure_logging(config.log_level, config.log_format)
    request_log.init_app(app)
    metrics.init_app(app)
    read_cache.init_app(app)
    db.init_app(app)
    errors.register_error_handlers(app)
    auth.init_app(app)
    audit.init_app(app)
    downloads.init_app(app)
    for blueprint in (
        segments_api.bp,
        events_api.bp,
        users_api.bp,
        reports_api.bp,
        health_api.bp,
        docs_api.bp,
    ):
        app.register_blueprint(blueprint)
    console.init_app(app)
    app.extensions["segsvc.openapi"] = build_spec(app)
    fast_reads.init_app(app)
    return app
