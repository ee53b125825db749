"""POST /api/v1/users/segments/lookup: many users' segments in one request."""

import dataclasses

import pytest
from marshmallow import ValidationError, fields
from support import change_segments, create_segment, register

from segsvc import create_app, db, schemas
from segsvc.config import parse_api_tokens

LOOKUP = "/api/v1/users/segments/lookup"


def lookup(client, user_ids, **headers):
    return client.post(LOOKUP, json={"user_ids": user_ids}, headers=headers)


def test_a_lookup_answers_each_user_as_the_single_read_does_in_the_order_asked(client, sql):
    create_segment(client, "AVITO_VOICE_MESSAGES")
    create_segment(client, "AVITO_DISCOUNT_30")
    create_segment(client, "HALF", auto_percent=50)
    change_segments(client, 1000, add=["AVITO_VOICE_MESSAGES", "AVITO_DISCOUNT_30"])
    change_segments(client, 1002, add=[{"slug": "AVITO_DISCOUNT_30", "ttl_seconds": 3600}])
    register(client, [1004])
    asked = [1004, 1002, 5, 1000, *range(2000, 2050)]  # 5 and 2000.. are not registered

    response = lookup(client, asked)

    assert response.status_code == 200
    users = response.get_json()["users"]
    assert [user["user_id"] for user in users] == asked
    for user in users:
        single = client.get(f"/api/v1/users/{user['user_id']}/segments").get_json()
        # An unregistered id's added_at is the time of each read; everything else is equal.
        strip = [{**s, "added_at": None} for s in single["segments"]]
        assert [{**s, "added_at": None} for s in user["segments"]] == strip
    assert any(user["segments"] for user in users if user["user_id"] >= 2000)
    assert sql.value("SELECT count(*) FROM users") == 3


def test_a_lookup_of_1000_ids_is_allowed_and_of_1001_refused(client):
    assert lookup(client, list(range(1, 1001))).status_code == 200
    response = lookup(client, list(range(1, 1002)))
    assert response.status_code == 422
    assert response.get_json()["errors"] == {"user_ids": ["Give 1 to 1000 user ids."]}


@pytest.mark.parametrize(
    ("user_ids", "errors"),
    [
        (
            [1, 2, 1, 3, 2],
            {
                "user_ids": {
                    "2": ["Repeats the id at index 0."],
                    "4": ["Repeats the id at index 1."],
                }
            },
        ),
        ([], {"user_ids": ["Give 1 to 1000 user ids."]}),
        ([0], {"user_ids": {"0": ["Must be an integer from 1 to 9223372036854775807."]}}),
        (["1"], {"user_ids": {"0": ["Must be an integer from 1 to 9223372036854775807."]}}),
    ],
    ids=["repeated", "empty", "out_of_range", "string"],
)
def test_a_bad_lookup_is_422_naming_each_offending_index(client, user_ids, errors):
    response = lookup(client, user_ids)
    assert response.status_code == 422
    assert response.get_json()["errors"] == errors


def test_a_read_token_may_look_up(config):
    tokens = parse_api_tokens("read:r3ad-token,write:wr1te-token")
    app = create_app(dataclasses.replace(config, api_tokens=tokens))
    try:
        client = app.test_client()
        assert lookup(client, [1]).status_code == 401
        assert lookup(client, [1], Authorization="Bearer r3ad-token").status_code == 200
    finally:
        db.close_pools(app)


@pytest.mark.parametrize(
    "user_ids", [[1, 2, 3], [True, 2], [1.0], [0], [2**63], ["5"], [1, None], [[1]]]
)
def test_a_list_of_ids_loads_as_marshmallows_item_by_item_load_does(user_ids):
    """UserIdList takes a list of ids in range in one pass; the result, or the errors, must be
    what loading each item through the `UserId` field gives."""

    def load(field):
        try:
            return field.deserialize(user_ids)
        except ValidationError as error:
            return error.messages

    item_by_item = fields.List(schemas.UserId())
    assert load(schemas.UserIds(1000)) == load(item_by_item)
