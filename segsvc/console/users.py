"""/ui/users: look a user up; a user's page shows the segments it is in (for an unregistered id,
the percentage segments that select it) and its latest history, and adds and removes segments."""

from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from marshmallow import ValidationError

from .. import memberships, schemas, segments, users
from ..api import load_data, load_path
from ..db import get_connection
from ..errors import InputInvalid, UserNotFound
from ..openapi import hidden
from .pages import FailedForm, form_action, notify, refused, utc_instant, with_values

bp = Blueprint("users", __name__, url_prefix="/users")

HISTORY_ROWS = 50


def _user_id(user_id: str) -> int:
    return load_path(schemas.UserPathSchema, user_id=user_id)["user_id"]


@bp.get("")
@hidden
def find_user() -> Any:
    """The look-up form; a valid id goes to the user's page."""
    typed = request.args.get("user_id")
    if typed is None:
        return render_template("console/users.html", failed=None)
    try:
        user_id = _user_id(typed.strip())
    except ValidationError as error:
        failed, status = refused("find", error, request.args)
        return render_template("console/users.html", failed=failed, typed=typed), status
    return redirect(url_for("console.users.show_user", user_id=user_id))


def _user_page(user_id: str, failed: FailedForm | None = None) -> str:
    user_id_number = _user_id(user_id)
    connection = get_connection()
    try:
        user = users.get_user(connection, user_id_number)
    except UserNotFound:
        user = None
    return render_template(
        "console/user.html",
        user_id=user_id_number,
        user=user,
        memberships=memberships.user_segments(connection, user_id_number),
        history=memberships.user_history(connection, user_id_number, HISTORY_ROWS),
        history_rows=HISTORY_ROWS,
        active_slugs=[
            segment["slug"] for segment in segments.list_segments(connection, include_deleted=False)
        ],
        failed=failed,
    )


@bp.get("/<user_id>")
@hidden
def show_user(user_id: str) -> str:
    return _user_page(user_id)


def _changing_form() -> str:
    """Which of the page's forms sent the change: the add form, or a segment's remove button."""
    return "remove" if request.form.get("operation") == "remove" else "add"


@bp.post("/<user_id>/segments")
@hidden
@form_action(_changing_form, _user_page)
def change_segments(user_id: str) -> Response:
    """Adds one segment (with an optional expiry) or removes one, as the API's change does,
    registering the user if needed."""
    user_id_number = _user_id(user_id)
    form = request.form
    slug = form.get("slug", "").strip()
    if form.get("operation") == "add":
        body = {"add": [with_values(slug=slug, expires_at=utc_instant(form.get("expires_at")))]}
        done = "Added"
    elif form.get("operation") == "remove":
        body = {"remove": [slug]}
        done = "Removed"
    else:
        raise InputInvalid({"operation": ["Choose to add or to remove the segment."]})
    change = load_data(schemas.MembershipChangeSchema, body)
    memberships.change_user_segments(
        get_connection(), user_id_number, change["add"], change["remove"]
    )
    notify(f"{done} {slug}.")
    return redirect(url_for("console.users.show_user", user_id=user_id_number), 303)
