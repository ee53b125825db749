"""segsvc: dynamic user segmentation over HTTP."""

from flask import Flask

from . import db, errors, request_log
from .api import docs, health, segments, users
from .config import Config
from .openapi import build_spec


def create_app(config: Config | None = None) -> Flask:
    """Builds the WSGI app; without `config`, settings come from the environment."""
    config = config or Config.from_environ()
    app = Flask(__name__, static_folder=None)
    app.config["SEGSVC"] = config
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False
    request_log.configure_logging(config.log_level)
    request_log.init_app(app)
    db.init_app(app)
    errors.register_error_handlers(app)
    for blueprint in (segments.bp, users.bp, health.bp, docs.bp):
        app.register_blueprint(blueprint)
    app.extensions["segsvc.openapi"] = build_spec(app)
    return app
