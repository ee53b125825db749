"""Who made a change, and in which request: the actor and the request id every history row and
audit event records (migrations/0007).

The actor is the name of the request's token (segsvc.auth), or, when the API is open, the
optional `X-Actor` header: 1 to 64 printable characters, anything else a `422`. A request that
changes anything tags its transaction with both, as the settings `segsvc.actor` and
`segsvc.request_id`, which the rows it writes take as defaults. Background jobs tag nothing.
"""

from typing import Any

from flask import Flask, g, request

from . import queries
from .errors import InputInvalid

ACTOR_HEADER = "X-Actor"
_ACTOR_ENVIRON_KEY = "HTTP_X_ACTOR"
ACTOR_MAX_CHARACTERS = 64
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_BAD_ACTOR = f"Must be 1 to {ACTOR_MAX_CHARACTERS} printable characters."


def request_tags() -> tuple[str | None, str | None]:
    """The current request's actor and id."""
    state = g._get_current_object()  # type: ignore[attr-defined]
    return state.get("actor"), state.get("request_id")


def tag_transaction(connection: Any) -> None:
    """Tags the connection's transaction with the tags it was borrowed with (`audit_tags`, set
    by segsvc.db), so that the rows it writes record them."""
    actor, request_id = getattr(connection, "audit_tags", (None, None))
    queries.execute(connection, "tag_transaction", actor=actor, request_id=request_id)


def _actor_from_header() -> None:
    """An open API's actor: the `X-Actor` header of a request that may change something."""
    flask_request = request._get_current_object()  # type: ignore[attr-defined]
    if flask_request.method in _READ_METHODS:
        return
    value = flask_request.environ.get(_ACTOR_ENVIRON_KEY)
    if value is None:
        return
    try:  # WSGI gives header bytes as latin-1 text; clients send UTF-8
        actor = value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        actor = ""
    if not 0 < len(actor) <= ACTOR_MAX_CHARACTERS or not actor.isprintable():
        raise InputInvalid({ACTOR_HEADER: [_BAD_ACTOR]})
    g.actor = actor


def init_app(app: Flask) -> None:
    """With tokens, the actor is the token's name (segsvc.auth) and `X-Actor` is ignored: a
    caller cannot claim to be someone else."""
    if not app.config["SEGSVC"].api_tokens:
        app.before_request(_actor_from_header)
