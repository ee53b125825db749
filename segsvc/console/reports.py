"""/ui/reports: pick a period (months or days), optionally a user or a segment, and download the
history report, the API's own CSV."""

import datetime as dt
from typing import Any

from flask import Blueprint, render_template, request

from .. import schemas
from ..api import load_data
from ..api.reports import history_csv
from ..errors import InputInvalid
from ..openapi import hidden
from .pages import REFUSALS, FailedForm, refused, with_values

bp = Blueprint("reports", __name__, url_prefix="/reports")

# The form's fields for each kind of period; the API takes either in `from` and `to`.
PERIOD_FIELDS = {"month": ("month_from", "month_to"), "days": ("day_from", "day_to")}


def _form_page(failed: FailedForm | None = None) -> str:
    today = dt.datetime.now(dt.UTC).date()
    return render_template(
        "console/reports.html",
        this_month=today.strftime("%Y-%m"),
        today=today.isoformat(),
        values=request.args,
        failed=failed,
    )


@bp.get("")
@hidden
def report_form() -> str:
    return _form_page()


def _report_query() -> dict[str, Any]:
    """The form as the API's report query: the same parameters, the same rules."""
    form = request.args
    fields = PERIOD_FIELDS.get(form.get("period", ""))
    if fields is None:
        raise InputInvalid({"period": ["Choose months or days."]})
    first, last = (form.get(name, "").strip() or None for name in fields)
    return load_data(
        schemas.HistoryReportQuerySchema,
        with_values(
            **{"from": first or "", "to": last},
            user_id=form.get("user_id", "").strip() or None,
            segment=form.get("segment", "").strip() or None,
            delimiter=form.get("delimiter") or None,
        ),
    )


@bp.get("/history.csv")
@hidden
def download_history() -> Any:
    """The CSV, or the form again with what is wrong in it."""
    try:
        return history_csv(_report_query())
    except REFUSALS as error:
        failed, status = refused("report", error, request.args)
        return _form_page(failed), status
