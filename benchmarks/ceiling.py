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

# Read by segsvc's gunicorn hooks, which start the background jobs in every worker. A reference
# app has none to run: the expiry job is off, and the rollout job (it has no switch, and without
# segsvc's pool it failed every second with a traceback) first runs decades from now.
NO_JOBS = Config(database_url="unused", expiry_enabled=False, rollout_interval_seconds=10**9)

app = Flask(__name__)
app.config["SEGSVC"] = NO_JOBS


@app.route("/api/v1/users/<user_id>/segments", methods=["GET", "PATCH"])
def constant_segments(user_id: str) -> Response:
    return Response(BODY, mimetype="application/json")
