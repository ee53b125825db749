"""The "ceiling" for `make bench`: a bare Flask app under segsvc's gunicorn settings that answers
the benchmarked routes with a constant body the size of a typical segments answer, touching no
database. segsvc can at best match it; the ratio of the two is the figure that matters."""

import json

from flask import Flask, Response

from segsvc.config import Config

# A user in ten segments, as the benchmark's dataset gives on average.
BODY = json.dumps(
    {
        "user_id": 12345,
        "segments": [
            {
                "slug": f"SEGMENT_{index:02d}",
                "added_at": "2026-11-27T17:11:26.261268Z",
                "expires_at": None,
            }
            for index in range(10)
        ],
    },
    separators=(",", ":"),
).encode()

app = Flask(__name__)
# Read by segsvc's gunicorn hooks: this app has no expiry job to run.
app.config["SEGSVC"] = Config(database_url="unused", expiry_enabled=False)


@app.route("/api/v1/users/<user_id>/segments", methods=["GET", "PATCH"])
def constant_segments(user_id: str) -> Response:
    return Response(BODY, mimetype="application/json")
