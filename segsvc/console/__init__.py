"""The web console under /ui: server-rendered pages for analysts over the domain functions the
API calls, so every rule has one copy. One blueprint per resource, nested in `bp`, which holds
the templates, the assets, access control (segsvc/console/access.py) and the error pages."""

import datetime as dt
import hashlib
import logging
import secrets
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    make_response,
    redirect,
    request,
    send_from_directory,
    url_for,
)
from werkzeug.exceptions import HTTPException

from ..errors import HANDLED_ERRORS, handle_http_exception
from ..openapi import hidden
from . import access, pages
from . import reports as reports_pages
from . import segments as segments_pages
from . import users as users_pages

PREFIX = "/ui"
STATIC_DIRECTORY = Path(__file__).parent / "static"
# A signed-in session ends this long after the last page it loaded.
SESSION_LIFETIME = dt.timedelta(hours=12)
SESSION_COOKIE = "segsvc_console"
# Pages and their answers stay out of other sites' frames, scripts and caches.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

log = logging.getLogger(__name__)

bp = Blueprint("console", __name__, url_prefix=PREFIX, template_folder="templates")
for child in (access.bp, segments_pages.bp, users_pages.bp, reports_pages.bp):
    bp.register_blueprint(child)
bp.before_request(access.guard)
for error_class in HANDLED_ERRORS:
    bp.register_error_handler(error_class, pages.render_problem)
for filter_name, template_filter in pages.TEMPLATE_FILTERS.items():
    bp.add_app_template_filter(template_filter, filter_name)


@bp.app_context_processor  # app-wide: a routing error's page has no blueprint
def _page_context() -> dict[str, Any]:
    return {"form_token": access.form_token, **pages.page_context()}


@bp.get("/")
@hidden
def home() -> Response:
    return redirect(url_for("console.segments.list_segments"))


@bp.get("/static/<path:filename>")
@hidden
def asset(filename: str) -> Response:
    """Served by segsvc itself: the console needs no CDN. Links carry the file's digest, so
    a browser may keep a file for a year and still never runs an old one."""
    return send_from_directory(STATIC_DIRECTORY, filename, max_age=365 * 24 * 3600)


@bp.after_request
def _protect(response: Response) -> Response:
    return _protected(response)


def _protected(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"  # pages show who is in what
    return response


def _routing_error(error: HTTPException) -> Response:
    """A console address that no route has (404), or a wrong method on one (405), raised before
    any blueprint is known: a page under /ui, the API's problem anywhere else."""
    if request.path == PREFIX or request.path.startswith(PREFIX + "/"):
        return _protected(make_response(pages.render_problem(error)))
    return handle_http_exception(error)


def _asset_digests() -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in STATIC_DIRECTORY.iterdir()
        if path.is_file()
    }


def init_app(app: Flask) -> None:
    """Without SEGSVC_SECRET_KEY, a key is made at start: sessions end with a restart, and the
    instance's workers share the key the master made (segsvc/gunicorn_conf.py)."""
    config = app.config["SEGSVC"]
    if config.secret_key is None:
        log.warning(
            "SEGSVC_SECRET_KEY is not set: web console sessions last until the service restarts; "
            "set it to keep them across restarts and replicas"
        )
    app.secret_key = config.secret_key or secrets.token_urlsafe(32)
    app.session_interface = access.ConsoleSessionInterface(PREFIX)
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_PATH=PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=(config.public_url or "").lower().startswith("https://"),
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.extensions["segsvc.console_assets"] = _asset_digests()
    app.register_blueprint(bp)
    for status in (404, 405):
        app.register_error_handler(status, _routing_error)


def share_secret_key(app: Flask, key: str) -> None:
    """Gives a worker the key of its instance, when none was configured: a session a page of
    one worker signed must be good on every other."""
    if app.config["SEGSVC"].secret_key is None:
        app.secret_key = key
