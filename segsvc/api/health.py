"""/healthz (the process is up) and /readyz (the database answers)."""

from flask import Blueprint, Response

from .. import queries, schemas
from ..db import get_connection
from ..openapi import operation
from . import dump

bp = Blueprint("health", __name__)

TAG = "operations"


@bp.get("/healthz")
@operation(
    "Liveness: the process is up",
    tag=TAG,
    responses={200: schemas.HealthSchema},
    uses_database=False,
)
def healthz() -> Response:
    return dump(schemas.HealthSchema, {"status": "ok"})


@bp.get("/readyz")
@operation(
    "Readiness: the database answers",
    tag=TAG,
    responses={200: schemas.HealthSchema},
)
def readyz() -> Response:
    queries.fetch_one(get_connection(), "ping")
    return dump(schemas.HealthSchema, {"status": "ok"})
