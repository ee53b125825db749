"""What every console page shares: failed forms shown again with the API's problem details,
error pages, the values a form sends turned into what the API's schemas load, and the
formatting of times, numbers and percentages."""

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from flask import Response, current_app, flash, g, render_template, request, url_for
from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from .. import db, errors

View = TypeVar("View", bound=Callable[..., Any])

# What the page's script reads (JSON, its problems too); every other console address is a page.
JSON_ENDPOINTS = frozenset({"console.segments.rollout_progress"})
# A number as JSON writes it, in ASCII digits (Python's int() would take "1_0" and "٣" too).
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", re.ASCII)
# Headers of a problem a page keeps (WWW-Authenticate would make a browser ask for a password).
_KEPT_HEADERS = ("Allow", "Retry-After")
# How a problem names a field, as a person reads it.
FIELD_LABELS = {
    "slug": "Slug",
    "description": "Description",
    "auto_percent": "Percentage",
    "user_ids": "User ids",
    "user_id": "User id",
    "expires_at": "Expires at",
    "confirm_slug": "Confirmation",
    "from": "From",
    "to": "To",
    "segment": "Segment",
    "delimiter": "Separator",
    "add": "Add",
    "remove": "Remove",
    "token": "Token",
    "period": "Period",
    "_schema": "Form",
}


def problem_details(error: Exception) -> tuple[dict[str, Any], Response]:
    """The problem the API would answer `error` with: its body, and the response itself."""
    response = errors.problem_for(error)
    return json.loads(response.get_data()), response


@dataclass(frozen=True)
class FailedForm:
    """A form whose action was refused: which one, why, and what it sent (to show it again)."""

    name: str
    problem: dict[str, Any]
    values: MultiDict = field(default_factory=MultiDict)


# What a form's action may be refused with: the API's 4xx problems.
REFUSALS = (errors.ServiceError, ValidationError)


def refused(form: str, error: Exception, values: MultiDict) -> tuple[FailedForm, int]:
    """The failed form of a refusal and its status; a server error (5xx) is raised again, for
    the error page."""
    problem, response = problem_details(error)
    if response.status_code >= 500:
        raise error
    return FailedForm(form, problem, values.copy()), response.status_code


def notify(message: str) -> None:
    """Tells the person on the next page what their action did, once it has committed."""
    g.setdefault("console_notices", []).append(message)


def form_action(form: str | Callable[[], str], page: Callable[..., Any]) -> Callable[[View], View]:
    """A POST view that changes something and redirects when it is done.

    It commits before it answers, and only then shows the view's notices: a change lost with
    the database at its commit is an error page, never "saved". When the change is refused (a
    4xx problem) it is rolled back, and `page` is rendered again, given the path's values and
    the `failed` form (`form`, or what it answers for this request), with the problem's status:
    the person sees why, next to the form, with what they typed still in it."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def run(**path: Any) -> Any:
            try:
                answer = view(**path)
            except REFUSALS as error:
                failed, status = refused(
                    form if isinstance(form, str) else form(), error, request.form
                )
                db.roll_back_request()
                return page(**path, failed=failed), status
            db.commit_request()
            for message in g.pop("console_notices", ()):
                flash(message)
            return answer

        return run  # type: ignore[return-value]

    return decorate


def render_problem(error: Exception) -> Any:
    """The console's error page: the API's problem details, in words on a page."""
    problem, response = problem_details(error)
    if request.endpoint in JSON_ENDPOINTS:
        return response  # for the page's script, which shows it
    page = render_template("console/problem.html", problem=problem)
    headers = {name: response.headers[name] for name in _KEPT_HEADERS if name in response.headers}
    return page, response.status_code, headers


def number_or_text(value: str | None) -> Any:
    """A number typed in a form as the JSON number the API's schema loads; anything else as
    typed, for the schema to refuse in its own words. None when the field was left empty."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not _NUMBER.fullmatch(text):
        return text
    try:
        return int(text)
    except ValueError:
        return float(text)


def utc_instant(value: str | None) -> str | None:
    """A `datetime-local` field, read as UTC (the console shows every time in UTC), as the
    RFC 3339 text the API's schema loads; None when empty."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    return text + "Z" if text[-1:].isdigit() else text


def with_values(**values: Any) -> dict[str, Any]:
    """The given fields, leaving out those not filled in (None)."""
    return {name: value for name, value in values.items() if value is not None}


def format_utc(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_count(value: int) -> str:
    return f"{value:,}"


def format_percent(value: Decimal | float | None) -> str:
    if value is None:
        return ""
    return f"{Decimal(str(value)).normalize():f}%"


def event_change(event: Mapping[str, Any]) -> str:
    """An audit event's values before and after, as `Percentage: 10% → 50%`."""
    before, after = event.get("before") or {}, event.get("after") or {}
    shown = []
    for name in sorted(before.keys() | after.keys()):
        values = [_event_value(name, side[name]) for side in (before, after) if name in side]
        if len(values) == 2 and values[0] == values[1]:
            continue
        shown.append(f"{field_label(name)}: {' → '.join(values)}")
    return "; ".join(shown)


def _event_value(name: str, value: Any) -> str:
    if value is None:
        return "none"
    return (
        format_percent(value) if name == "auto_percent" else json.dumps(value, ensure_ascii=False)
    )


def field_label(key: Any) -> str:
    text = str(key)
    if text.isdigit():
        return f"Item {int(text) + 1}"
    return FIELD_LABELS.get(text, text)


def asset_url(filename: str) -> str:
    digest = current_app.extensions["segsvc.console_assets"][filename]
    return url_for("console.asset", filename=filename, v=digest)


def page_context() -> Mapping[str, Any]:
    """Names every console template may use."""
    return {
        "identity": g.get("console_identity"),
        "can_write": g.get("console_can_write", False),
        "asset_url": asset_url,
        "field_label": field_label,
    }


TEMPLATE_FILTERS = {
    "utc": format_utc,
    "count": format_count,
    "percent": format_percent,
    "event_change": event_change,
}
