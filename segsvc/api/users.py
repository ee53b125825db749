"""/api/v1/users: register and delete users, read and change their segments."""

import datetime as dt
import json
import time
from typing import Any

from flask import Blueprint, Response, current_app

from .. import memberships, read_cache, schemas, users
from ..auth import allowed_for_read
from ..db import get_connection
from ..openapi import operation
from . import dump, json_response, load_body, load_path, no_content

bp = Blueprint("users", __name__, url_prefix="/api/v1/users")

TAG = "users"


@bp.post("")
@operation(
    "Register users (idempotent)",
    tag=TAG,
    body=schemas.RegisterUsersSchema,
    responses={200: schemas.RegisteredUsersSchema, 400: None, 413: None, 415: None, 422: None},
)
def register_users() -> Response:
    request = load_body(schemas.RegisterUsersSchema)
    registered = users.register_users(get_connection(), request["user_ids"])
    return dump(schemas.RegisteredUsersSchema, {"registered": registered})


@bp.get("/<user_id>")
@operation(
    "Read a registered user",
    tag=TAG,
    responses={200: schemas.UserSchema, 404: None, 422: None},
)
def get_user(user_id: str) -> Response:
    path = load_path(schemas.UserPathSchema, user_id=user_id)
    return dump(schemas.UserSchema, users.get_user(get_connection(), path["user_id"]))


@bp.delete("/<user_id>")
@operation(
    "Delete a user; the user leaves every segment",
    tag=TAG,
    responses={204: None, 404: None, 422: None},
)
def delete_user(user_id: str) -> Response:
    path = load_path(schemas.UserPathSchema, user_id=user_id)
    users.delete_user(get_connection(), path["user_id"])
    return no_content()


@bp.post("/segments/lookup")
@operation(
    "The active segments of many users at once",
    tag=TAG,
    body=schemas.LookupUsersSchema,
    responses={200: schemas.UsersSegmentsSchema, 400: None, 413: None, 415: None, 422: None},
    description=(
        "1 to 1,000 distinct ids (a repeated id is a 422 naming its index); one entry per id in "
        "the order asked, each what `GET /api/v1/users/{user_id}/segments` answers for it "
        "(unregistered ids included), from the read cache as that one, with one query for all "
        "the misses. A read token may call it: it changes nothing."
    ),
)
@allowed_for_read
def lookup_users_segments() -> Response:
    bodies = _segments_bodies(load_body(schemas.LookupUsersSchema)["user_ids"])
    return Response(b'{"users":[' + b",".join(bodies) + b"]}", mimetype="application/json")


@bp.get("/<user_id>/segments")
@operation(
    "The user's active segments, ordered by slug",
    tag=TAG,
    responses={200: schemas.UserSegmentsSchema, 422: None},
    description=(
        "Expired memberships are never returned. An id that is not registered (never, or "
        "deleted) gets what registering it now would give it: every active segment whose "
        "`auto_percent` selects it (bucket below `auto_percent` x 100), with `added_at` the "
        "time of this read and no expiry. Nothing is stored; registering the id makes these "
        "memberships real. Answers may come from the worker's read cache: a read that starts "
        "after a change was answered by the same instance reflects it; another instance's "
        "change arrives within milliseconds, at worst 0.5 s (README: Read cache)."
    ),
)
def get_user_segments(user_id: str) -> Response:
    path = load_path(schemas.UserPathSchema, user_id=user_id)
    return Response(_segments_bodies([path["user_id"]])[0], mimetype="application/json")


def _segments_bodies(user_ids: list[int]) -> list[bytes]:
    """Each user's answer, encoded: from the worker's read cache, or read from the database
    for all misses at once and cached (segsvc/read_cache.py)."""
    cache = read_cache.cache_of(current_app)
    found = dict(zip(user_ids, cache.lookup(user_ids), strict=True))
    missing = [user_id for user_id, entry in found.items() if entry is None]
    if missing:
        stamps = [cache.stamp(user_id) for user_id in missing]
        connection = get_connection(single_statement=True)
        started = time.monotonic()
        if len(missing) == 1:
            rows = {missing[0]: memberships.user_segments(connection, missing[0])}
        else:
            rows = memberships.users_segments(connection, missing)
        read = time.monotonic()
        for user_id, stamp in zip(missing, stamps, strict=True):
            found[user_id] = entry = _cached_read(user_id, rows[user_id], stamp, started, read)
            cache.put(user_id, entry)
    return [render_entry(user_id, found[user_id]) for user_id in user_ids]


def _cached_read(
    user_id: int, rows: list[dict[str, Any]], stamp: tuple[int, int], started: float, read: float
) -> read_cache.CachedRead:
    """Stored memberships are cached encoded; an unregistered user's computed ones as slugs,
    since their `added_at` is the time of each read."""
    valid_until = read_cache.valid_until(rows, started)
    if rows and not rows[0]["stored"]:
        computed = ([row["slug"] for row in rows], rows[0]["read_at"], read)
        return read_cache.CachedRead(stamp, valid_until, computed=computed)
    body = _encode(user_segments_body(user_id, rows))
    return read_cache.CachedRead(stamp, valid_until, body=body)


def render_entry(user_id: int, entry: read_cache.CachedRead) -> bytes:
    if entry.body is not None:
        return entry.body
    slugs, read_at, read = entry.computed
    now = read_at + dt.timedelta(seconds=time.monotonic() - read)
    rows = [{"slug": slug, "added_at": now, "expires_at": None} for slug in slugs]
    return _encode(user_segments_body(user_id, rows))


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def user_segments_body(user_id: int, segments: list[dict[str, Any]]) -> dict[str, Any]:
    """UserSegmentsSchema's shape, built by hand for the hottest route: marshmallow's per-field
    dump cost as much as the query itself. A test checks both give the same body."""
    return {
        "user_id": user_id,
        "segments": [
            {
                "slug": segment["slug"],
                "added_at": schemas.format_timestamp(segment["added_at"]),
                "expires_at": (
                    None
                    if segment["expires_at"] is None
                    else schemas.format_timestamp(segment["expires_at"])
                ),
            }
            for segment in segments
        ],
    }


@bp.patch("/<user_id>/segments")
@operation(
    "Add and remove segments of a user, all or nothing",
    tag=TAG,
    body=schemas.MembershipChangeSchema,
    responses={
        200: schemas.UserSegmentsSchema,
        400: None,
        404: None,
        413: None,
        415: None,
        422: None,
    },
    description=(
        "Registers the user if needed. Adding a segment the user has keeps `added_at` and "
        "sets the expiry to what this request says; removing one the user lacks is a no-op. "
        "Any unknown slug fails the whole request with 404 and lists them in `slugs`."
    ),
)
def change_user_segments(user_id: str) -> Response:
    path = load_path(schemas.UserPathSchema, user_id=user_id)
    request = load_body(schemas.MembershipChangeSchema)
    found = memberships.change_user_segments(
        get_connection(single_statement=True), path["user_id"], request["add"], request["remove"]
    )
    # Built by hand as the read's answer is (UserSegmentsSchema's shape): marshmallow's dump
    # was a third of the change's Python time.
    return json_response(user_segments_body(path["user_id"], found))
