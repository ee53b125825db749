"""Cache hits of the hottest route served before Flask.

`GET /api/v1/users/<id>/segments` is asked on every page view. Once its answer is in the read
cache, Flask's request context, routing, hooks and response object cost more than everything
else a hit does (profile: benchmarks/profile_read.py). This WSGI middleware answers such a hit
itself, with what Flask's route would give: the same body and headers (`Content-Type`,
`Content-Length`, `X-Request-ID`), the same access line, the same request metrics, the same
token check. Anything it is not sure to answer the same way goes to Flask untouched: another
method or path, an id not in canonical form, a refused token (Flask words the 401), a miss or a
bypassed cache (Flask reads the database and counts the miss).
"""

import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from . import auth, metrics, read_cache, request_log
from .api.users import render_entry
from .schemas import MAX_USER_ID

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

ROUTE = "/api/v1/users/<user_id>/segments"
# The canonical form of an id only: Flask's route decides every other spelling.
_PATH = re.compile(r"/api/v1/users/([1-9][0-9]{0,18})/segments")

log = logging.getLogger(__name__)


class CachedReads:
    """Wraps the app's `wsgi_app`; see the module's docstring."""

    def __init__(self, app: Flask, wsgi_app: WsgiApp) -> None:
        self._app = app
        self._wsgi_app = wsgi_app
        self._cache = read_cache.cache_of(app)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        if environ.get("REQUEST_METHOD") == "GET":
            match = _PATH.fullmatch(environ.get("PATH_INFO", ""))
            if match is not None:
                answer = self._hit(environ, start_response, int(match[1]), started)
                if answer is not None:
                    return answer
        return self._wsgi_app(environ, start_response)

    def _hit(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        user_id: int,
        started: float,
    ) -> list[bytes] | None:
        if user_id > MAX_USER_ID or not auth.may_read(self._app, environ):
            return None
        entry = self._cache.hit(user_id)
        if entry is None:
            return None
        body = render_entry(user_id, entry)
        request_id = request_log.request_id_of(environ)
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                (request_log.REQUEST_ID_HEADER, request_id),
            ],
        )
        if request_log.access_log.isEnabledFor(logging.INFO):
            request_log.log_access(
                "GET",
                ROUTE,
                environ["PATH_INFO"],
                200,
                (time.perf_counter() - started) * 1000,
                environ.get("HTTP_USER_AGENT") or None,
                request_id,
            )
        metrics.count_request("GET", ROUTE, 200, started)
        return [body]


def init_app(app: Flask) -> None:
    """After every route is registered: the route it stands in for must be Flask's too."""
    if ROUTE not in {rule.rule for rule in app.url_map.iter_rules()}:
        raise RuntimeError(f"no route {ROUTE} for the cached reads to stand in for")
    app.wsgi_app = CachedReads(app, app.wsgi_app)  # type: ignore[method-assign]
