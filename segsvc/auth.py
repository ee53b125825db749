"""Bearer tokens for /api/v1 (`SEGSVC_API_TOKENS`): a `read` or a `write` scope per token.

Without tokens the API is open. Tokens are compared as SHA-256 digests with
`hmac.compare_digest` against every configured token, so neither a token's length nor which
token matched shows in the timing, and no token is ever logged or answered.
"""

import functools
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from flask import Flask, current_app, g, request

from .config import ApiToken
from .errors import Forbidden, Unauthorized

View = TypeVar("View", bound=Callable[..., Any])

API_PREFIX = "/api/v1"
READ = "read"
WRITE = "write"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CHECKER_KEY = "segsvc.token_checker"

log = logging.getLogger(__name__)


def allowed_for_read(view: View) -> View:
    """Marks a non-GET view that a read token may call (it changes nothing)."""
    view.allowed_for_read = True  # type: ignore[attr-defined]
    return view


def required_scope(method: str, view: Callable[..., Any] | None) -> str:
    """The scope a call needs: reads and views marked `allowed_for_read` need `read`."""
    if method in _READ_METHODS or getattr(view, "allowed_for_read", False):
        return READ
    return WRITE


def is_protected(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def digest_of(presented: str) -> bytes:
    """What a token is matched by."""
    return _digest(presented.encode("utf-8", "replace"))


def keyed_digest(key: bytes, token_digest: bytes) -> bytes:
    """A token's digest keyed with a secret (HMAC-SHA-256): what the web console's session keeps
    of its token. Unlike the plain digest, it tells nothing to whoever reads a copied cookie, not
    even which short token it was made from."""
    return hmac.new(key, token_digest, hashlib.sha256).digest()


class TokenChecker:
    """Answers the configured token a presented one is, or None."""

    def __init__(self, tokens: Iterable[ApiToken]) -> None:
        self._digests = [(_digest(token.token.encode("ascii")), token) for token in tokens]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def match(self, presented: str) -> ApiToken | None:
        return self._match(digest_of(presented), lambda digest: digest)

    def match_keyed(self, key: bytes, presented: bytes) -> ApiToken | None:
        """The configured token with this `keyed_digest` under `key`, or None."""
        return self._match(presented, lambda digest: keyed_digest(key, digest))

    def _match(self, presented: bytes, form: Callable[[bytes], bytes]) -> ApiToken | None:
        """Compares with every token, in constant time, whichever matches."""
        matched = None
        for digest, token in self._digests:
            if hmac.compare_digest(form(digest), presented):
                matched = token
        return matched


def _bearer_token(header: str) -> str:
    if not header:
        raise Unauthorized("This API needs an `Authorization: Bearer <token>` header.")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("The Authorization header must be `Bearer <token>`.")
    return token


def _authorize(checker: TokenChecker) -> None:
    flask_request = request._get_current_object()  # type: ignore[attr-defined]
    if not is_protected(flask_request.path):
        return
    # What `request.headers.get("Authorization", "")` reads, without building the headers.
    token = checker.match(_bearer_token(flask_request.environ.get("HTTP_AUTHORIZATION", "")))
    if token is None:
        raise Unauthorized("The bearer token is not valid.")
    endpoint = flask_request.endpoint
    view = current_app.view_functions.get(endpoint) if endpoint else None
    if token.scope == READ and required_scope(flask_request.method, view) == WRITE:
        raise Forbidden("This token has the read scope; this call needs a write token.")
    g.actor = token.name


def may_read(app: Flask, environ: dict[str, Any]) -> bool:
    """Whether a request with this environ may call a read route: the API is open, or it
    presents a valid token (either scope). For a caller outside Flask's hooks (the cached read,
    segsvc/fast_reads.py); anything else goes through `_authorize`, which words the refusal."""
    checker = token_checker(app)
    if not checker:
        return True
    try:
        presented = _bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
    except Unauthorized:
        return False
    return checker.match(presented) is not None


def token_checker(app: Flask) -> TokenChecker:
    return app.extensions[CHECKER_KEY]


def init_app(app: Flask) -> None:
    checker = TokenChecker(app.config["SEGSVC"].api_tokens)
    app.extensions[CHECKER_KEY] = checker
    if not checker:
        # No hook at all: an open API pays nothing per request for its checks.
        log.warning(
            "SEGSVC_API_TOKENS is not set: the API is open to anyone who can reach it; "
            "set it to require bearer tokens"
        )
        return
    scopes = [token.scope for token in app.config["SEGSVC"].api_tokens]
    log.info(
        "API tokens required on %s: %d read, %d write",
        API_PREFIX,
        scopes.count(READ),
        scopes.count(WRITE),
    )
    app.before_request(functools.partial(_authorize, checker))
