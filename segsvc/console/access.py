"""Who may use the console, and how: a sign-in with an API token, kept in a signed `HttpOnly`,
`SameSite=Strict` session cookie that a sign-out ends on the server too; an anti-forgery token in
every form; the token's scope for every action (read tokens see, write tokens change) and its
name as the actor of changes."""

import hashlib
import hmac
import secrets
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface

from .. import auth, db, queries
from ..config import ApiToken
from ..errors import Forbidden, FormNotTrusted, Unauthorized
from ..openapi import hidden
from . import pages

bp = Blueprint("access", __name__)

SESSION_TOKEN = "token_mark"  # the token's digest keyed with the secret key (hex)
SESSION_ID = "session_id"  # random, given at sign-in: what a sign-out records
SESSION_FORM_TOKEN = "form_token"
FORM_TOKEN_FIELD = "form_token"
_SIGN_IN_ENDPOINTS = frozenset({"console.access.sign_in", "console.access.sign_out"})


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, opened under the console's path alone: an API request
    neither parses nor answers a session cookie."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def open_session(self, app: Flask, request: Request) -> Any:
        path = request.path
        if path != self._prefix and not path.startswith(self._prefix + "/"):
            return None  # Flask's null session: nothing read, nothing written
        if path.startswith(self._prefix + "/static/"):
            # Nor on assets, which caches keep for a year: they must never carry a session.
            return None
        return super().open_session(app, request)


def form_token() -> str:
    """The session's anti-forgery token, which every form of the console sends back."""
    token = session.get(SESSION_FORM_TOKEN)
    if token is None:
        token = session[SESSION_FORM_TOKEN] = secrets.token_urlsafe(32)
    return token


def _check_form_token() -> None:
    sent = request.form.get(FORM_TOKEN_FIELD, "").encode("utf-8", "replace")  # any text
    expected = session.get(SESSION_FORM_TOKEN, "")
    if not (
        sent
        and isinstance(expected, str)
        and expected
        and hmac.compare_digest(sent, expected.encode())
    ):
        raise FormNotTrusted(
            "This form did not come from this console's page, or the page is older than your "
            "session: load the page again and resend the form."
        )


def _secret_key() -> bytes:
    return str(current_app.secret_key).encode()


def _session_token(checker: auth.TokenChecker) -> ApiToken | None:
    """The token the session signed in with, while it is still one of the service's and the
    session has not signed out (a copy of its cookie is then worth nothing)."""
    mark, session_id = session.get(SESSION_TOKEN), session.get(SESSION_ID)
    if not (isinstance(mark, str) and isinstance(session_id, str)):
        return None
    try:
        token = checker.match_keyed(_secret_key(), bytes.fromhex(mark))
    except ValueError:
        return None
    if token is None or _signed_out(session_id):
        return None
    return token


def _session_digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def _signed_out(session_id: str) -> bool:
    """Read on a connection of its own, before the request's: that one records the identity this
    check establishes as the actor of the request's changes."""
    with db.single_statement(db.get_pool(current_app)) as connection:
        found = queries.fetch_one(
            connection, "console_session_signed_out", session_digest=_session_digest(session_id)
        )
    return bool(found and found["signed_out"])


def _arrived_from_another_site() -> bool:
    """A link on another site opened this page: the browser kept the `SameSite=Strict` cookie
    back, so the session is unknown here, not absent."""
    return (
        request.method == "GET"
        and request.headers.get("Sec-Fetch-Site") == "cross-site"
        and current_app.config["SESSION_COOKIE_NAME"] not in request.cookies
    )


def guard() -> Response | None:
    """Before every console request: the form token of a POST, then the session of a service
    with tokens (a page asks to sign in, an action is refused), then the scope of an action."""
    if request.endpoint == "console.asset":
        return None
    if _arrived_from_another_site():
        # Load the page again from itself, which sends the cookie. Answering without it would
        # ask a signed-in person to sign in, and give the browser a new cookie in place of theirs.
        return make_response(render_template("console/reload.html", here=_here()))
    if request.method == "POST":
        _check_form_token()
    checker = auth.token_checker(current_app)
    g.console_identity = None
    g.console_can_write = not checker  # an open console may change; a secured one, once signed in
    if not checker:
        return None
    token = _session_token(checker)
    if token is None:
        if request.endpoint in _SIGN_IN_ENDPOINTS:
            return None
        if request.method == "GET":
            return redirect(url_for("console.access.sign_in", next=_here()))
        raise Unauthorized("Your console session has ended: sign in again.")
    g.actor = token.name  # recorded with every change, as the API records a token's name
    g.console_identity = token
    g.console_can_write = token.scope == auth.WRITE
    view = current_app.view_functions.get(request.endpoint or "")
    if not g.console_can_write and auth.required_scope(request.method, view) == auth.WRITE:
        raise Forbidden(
            "You signed in with a read token: you can look, not change. Sign in with a write "
            "token to make changes."
        )
    return None


def _here() -> str:
    query = request.query_string.decode("latin-1")
    return request.path + ("?" + query if query else "")


def _page_to_return_to(value: str | None) -> str:
    """Only a page of this console: a sign-in link must not send anyone elsewhere, nor put
    anything but an address in the redirect's header (a line break would end the header)."""
    prefix = url_for("console.home")
    if (
        value
        and value.startswith(prefix)
        and "\\" not in value
        and value.isprintable()
        and " " not in value
    ):
        return value
    return url_for("console.segments.list_segments")


@bp.route("/sign-in", methods=["GET", "POST"])
@hidden
@auth.allowed_for_read
def sign_in() -> Any:
    """Asks for a token once; the session keeps the token's digest, never the token."""
    checker = auth.token_checker(current_app)
    next_page = _page_to_return_to(request.values.get("next"))
    if not checker:
        return redirect(next_page)
    if request.method == "GET":
        return render_template("console/sign_in.html", next_page=next_page, failed=None)
    token = checker.match(request.form.get("token", "").strip())
    if token is None:
        error = Unauthorized("That is not one of this service's API tokens.")
        failed, status = pages.refused("sign_in", error, request.form)
        return render_template("console/sign_in.html", next_page=next_page, failed=failed), status
    session.clear()  # a new session: a new id and a new form token
    session[SESSION_TOKEN] = auth.keyed_digest(_secret_key(), auth.digest_of(token.token)).hex()
    session[SESSION_ID] = secrets.token_urlsafe(32)
    session[SESSION_FORM_TOKEN] = secrets.token_urlsafe(32)
    session.permanent = True
    flash(f"Signed in as {token.name}, with a {token.scope} token.")
    return redirect(next_page, 303)


@bp.post("/sign-out")
@hidden
@auth.allowed_for_read
def sign_out() -> Response:
    """Ends the session in the browser, and on the server for every copy of its cookie."""
    session_id = session.get(SESSION_ID)
    if isinstance(session_id, str):
        queries.execute(
            db.get_connection(),
            "record_console_sign_out",
            session_digest=_session_digest(session_id),
            kept_seconds=current_app.permanent_session_lifetime.total_seconds(),
        )
    session.clear()
    return redirect(url_for("console.access.sign_in"), 303)
