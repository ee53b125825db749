"""/ui/segments: the table of segments and the form that creates one; a segment's page, where
its description, percentage and members change, its rollout's progress shows, its members and
audit events are listed, and it is deleted."""

import re
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from marshmallow import ValidationError
from psycopg2.extensions import connection as Connection

from .. import members, rollout, schemas, segments, users
from ..api import json_response, load_data, load_path
from ..api.segments import members_csv
from ..db import get_connection
from ..errors import InputInvalid
from ..openapi import hidden
from .pages import (
    FailedForm,
    form_action,
    format_percent,
    notify,
    number_or_text,
    utc_instant,
    with_values,
)

bp = Blueprint("segments", __name__, url_prefix="/segments")

MEMBERS_PER_PAGE = 50
EVENTS_PER_PAGE = 50
# Pasted or uploaded ids: one a line, or separated by spaces, commas or semicolons.
_ID_SEPARATORS = re.compile(r"[\s,;]+")
_USER_ID = schemas.UserIdInPath()


def _slug(slug: str) -> str:
    return load_path(schemas.SegmentPathSchema, slug=slug)["slug"]


def _page_url(slug: str) -> str:
    return url_for("console.segments.show_segment", slug=slug)


def _list_page(failed: FailedForm | None = None) -> str:
    query = request.args.get("q", "").strip()
    found = segments.list_segments(get_connection(), include_deleted=False)
    if query:
        wanted = query.casefold()
        found = [
            segment
            for segment in found
            if wanted in f"{segment['slug']} {segment['description'] or ''}".casefold()
        ]
    return render_template("console/segments.html", segments=found, query=query, failed=failed)


@bp.get("")
@hidden
def list_segments() -> str:
    return _list_page()


@bp.post("")
@hidden
@form_action("create", _list_page)
def create_segment() -> Response:
    form = request.form
    created = load_data(
        schemas.SegmentCreateSchema,
        with_values(
            slug=form.get("slug", "").strip(),
            description=form.get("description", "").strip() or None,
            auto_percent=number_or_text(form.get("auto_percent")),
        ),
    )
    segment = segments.create_segment(
        get_connection(), created["slug"], created["description"], created["auto_percent"]
    )
    notify(f"Created {segment['slug']}.")
    return redirect(_page_url(segment["slug"]), 303)


def _position(name: str) -> int:
    """Where a page of a list starts: after this id (0: from the first)."""
    value = request.args.get(name)
    if value is None:
        return 0
    try:
        return _USER_ID.parse(value)
    except ValidationError as error:
        raise ValidationError({name: error.messages}) from None


def _progress(connection: Connection, segment: dict[str, Any]) -> dict[str, Any] | None:
    """The rollout's progress: the share of registered users it has reached."""
    progress = segment["rollout"]
    if progress is None:
        return None
    shown = {
        "state": progress["state"],
        "target_percent": format_percent(progress["target_percent"]),
        "users_left": progress["users_left"],
        "done_percent": 100,
        "member_count": segment["member_count"],
    }
    if progress["state"] == "converging":
        registered = users.count_registered(connection)
        reached = max(registered - progress["users_left"], 0)
        shown["done_percent"] = reached * 100 // registered if registered else 100
    return shown


def _segment_page(
    slug: str, failed: FailedForm | None = None, preview: dict[str, Any] | None = None
) -> str:
    slug = _slug(slug)
    connection = get_connection()
    segment = segments.get_segment(connection, slug)
    members_after, events_after = _position("members_after"), _position("events_after")
    member_page, next_members = segments.segment_members(
        connection, slug, members_after, MEMBERS_PER_PAGE
    )
    events, next_events = segments.segment_events(connection, slug, events_after, EVENTS_PER_PAGE)
    return render_template(
        "console/segment.html",
        segment=segment,
        progress=_progress(connection, segment),
        members=member_page,
        members_after=members_after,
        next_members=next_members,
        events=events,
        events_after=events_after,
        next_events=next_events,
        failed=failed,
        preview=preview,
    )


@bp.get("/<slug>")
@hidden
def show_segment(slug: str) -> str:
    return _segment_page(slug)


@bp.get("/<slug>/rollout.json")
@hidden
def rollout_progress(slug: str) -> Response:
    """For the page's script, which shows the progress while the rollout converges."""
    connection = get_connection()
    return json_response(_progress(connection, segments.get_segment(connection, _slug(slug))))


@bp.get("/<slug>/members.csv")
@hidden
def download_members(slug: str) -> Response:
    return members_csv(_slug(slug))


@bp.post("/<slug>/description")
@hidden
@form_action("description", _segment_page)
def change_description(slug: str) -> Response:
    slug = _slug(slug)
    description = request.form.get("description", "").strip() or None
    change = load_data(schemas.SegmentUpdateSchema, {"description": description})
    segments.update_segment(get_connection(), slug, change)
    notify("Description saved." if description else "Description cleared.")
    return redirect(_page_url(slug), 303)


@bp.post("/<slug>/percentage")
@hidden
@form_action("percentage", _segment_page)
def change_percentage(slug: str) -> Any:
    """First shows what the change would do; applies it when that is confirmed."""
    slug = _slug(slug)
    percent = number_or_text(request.form.get("auto_percent"))
    change = load_data(
        schemas.SegmentUpdateSchema, {"auto_percent": "" if percent is None else percent}
    )
    connection = get_connection()
    if request.form.get("confirmed") != "yes":
        segment = segments.get_segment(connection, slug)
        registered = users.count_registered(connection)
        preview = {
            "from": segment["auto_percent"],
            "to": change["auto_percent"],
            "registered": registered,
            "users": rollout.expected_users_between(
                registered, segment["auto_percent"], change["auto_percent"]
            ),
        }
        return _segment_page(slug, preview=preview)
    previous = segments.get_segment(connection, slug)["auto_percent"]
    segment = segments.update_segment(connection, slug, change)
    shown = format_percent(segment["auto_percent"])
    if segment["auto_percent"] == previous:
        notify(f"{slug} is already at {shown}: nothing changed.")
    else:
        notify(f"{slug} is now at {shown}; its rollout has started.")
    return redirect(_page_url(slug), 303)


def _pasted_user_ids() -> list[int]:
    """The ids pasted and uploaded, each counted once, in the order given. A token that is not
    a user id is refused by the API's rule for ids, named as it was written."""
    text = request.form.get("user_ids", "")
    upload = request.files.get("user_ids_file")
    if upload is not None and upload.filename:
        try:
            text += "\n" + upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputInvalid(
                {"user_ids_file": ["Must be a text file in UTF-8 with one user id a line."]}
            ) from None
    found: dict[int, None] = {}
    refused: dict[str, list[str]] = {}
    for token in _ID_SEPARATORS.split(text.strip()):
        if not token:
            continue
        try:
            found[_USER_ID.parse(token)] = None
        except ValidationError as error:
            refused.setdefault(f"“{token[:40]}”", error.messages)
    if refused:
        raise InputInvalid({"user_ids": refused})
    return list(found)


@bp.post("/<slug>/members")
@hidden
@form_action("members", _segment_page)
def change_members(slug: str) -> Response:
    slug = _slug(slug)
    operation = request.form.get("operation")
    if operation not in ("add", "remove"):
        raise InputInvalid({"operation": ["Choose to add or to remove the users."]})
    user_ids = _pasted_user_ids()
    expires_at = utc_instant(request.form.get("expires_at"))
    if operation == "remove":
        body = {"remove": user_ids}
    elif expires_at is None:
        body = {"add": user_ids}
    else:
        body = {"add": [{"user_id": user_id, "expires_at": expires_at} for user_id in user_ids]}
    change = load_data(schemas.SegmentMembersChangeSchema, body)
    try:
        counts = members.change_segment_members(
            get_connection(), slug, change["add"], change["remove"]
        )
    except InputInvalid as refusal:
        raise _one_expiry_refused(refusal) from None
    notify(
        f"{counts['added']:,} added, {counts['renewed']:,} renewed, {counts['removed']:,} "
        f"removed; {slug} has {counts['member_count']:,} members."
    )
    return redirect(_page_url(slug), 303)


def _one_expiry_refused(refusal: InputInvalid) -> InputInvalid:
    """The form has one expiry for every added id: when the API refuses it for each (it is not
    in the future), say so once, of the field, not of each of up to 10,000 items."""
    errors = refusal.extra.get("errors", {})
    items = list(errors.get("add", {}).values()) if errors.keys() == {"add"} else []
    if not items or any(item.keys() != {"expires_at"} for item in items):
        return refusal
    return InputInvalid(
        {"expires_at": sorted({text for item in items for text in item["expires_at"]})}
    )


@bp.post("/<slug>/delete")
@hidden
@form_action("delete", _segment_page)
def delete_segment(slug: str) -> Response:
    slug = _slug(slug)
    if request.form.get("confirm_slug", "").strip() != slug:
        raise InputInvalid({"confirm_slug": [f"Type the segment's slug, {slug}, to delete it."]})
    segments.delete_segment(get_connection(), slug)
    notify(f"Deleted {slug}. Its members leave it in the background, each recorded in history.")
    return redirect(url_for("console.segments.list_segments"), 303)
