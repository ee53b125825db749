"""/openapi.json and Swagger UI at /docs, served from bundled assets (no internet needed)."""

from flask import Blueprint, Response, current_app, jsonify, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

from ..openapi import hidden, operation

bp = Blueprint("docs", __name__)

TAG = "operations"

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>segsvc API</title>
  <link rel="stylesheet" href="{css}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{bundle}"></script>
  <script>
    window.ui = SwaggerUIBundle({{url: "{spec}", dom_id: "#swagger-ui", deepLinking: true}});
  </script>
</body>
</html>
"""


@bp.get("/openapi.json")
@operation("This OpenAPI description", tag=TAG, responses={200: None}, uses_database=False)
def openapi_json() -> Response:
    return jsonify(current_app.extensions["segsvc.openapi"])


@bp.get("/docs")
@operation(
    "Swagger UI for this API",
    tag=TAG,
    responses={200: None},
    content_type="text/html",
    uses_database=False,
)
def swagger_ui() -> Response:
    page = _PAGE.format(
        css=url_for("docs.swagger_asset", filename="swagger-ui.css"),
        bundle=url_for("docs.swagger_asset", filename="swagger-ui-bundle.js"),
        spec=url_for("docs.openapi_json"),
    )
    return Response(page, mimetype="text/html")


@bp.get("/docs/assets/<path:filename>")
@hidden
def swagger_asset(filename: str) -> Response:
    return send_from_directory(swagger_ui_path, filename, max_age=86400)
