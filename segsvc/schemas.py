"""Marshmallow schemas: they validate requests, shape responses and feed the OpenAPI spec."""

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from .errors import MAX_LISTED_ENTRIES

MAX_USER_ID = 2**63 - 1
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_TTL_SECONDS = 100 * 366 * 24 * 3600
# Far enough for any experiment, near enough that converting to UTC cannot overflow a year.
LATEST_EXPIRY = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)
# Items per request (README, Limits): a user never has 1000 segments to change at once.
MAX_CHANGE_ITEMS = 1000
MAX_REGISTERED_IDS = 10_000
MAX_LOOKUP_IDS = 1_000
MAX_MEMBER_IDS = 10_000
MAX_PAGE_SIZE = 10_000


# One wording per rule, wherever the value came from (a body, a path or a query string).
def integer_rule(low: int, high: int) -> str:
    return f"Must be an integer from {low} to {high}."


USER_ID_RULE = integer_rule(1, MAX_USER_ID)
SLUG_RULE = "Must be 1-64 characters of A-Z a-z 0-9 _ - ., starting with a letter or digit."
PERCENT_RULE = "Must be a number from 0 to 100."
YEARS_RULE = "Must be within years 1 to 9999 in UTC."
CHANGE_ITEMS_RULE = f"Give 1 to {MAX_CHANGE_ITEMS} slugs in `add` and `remove` together."
MEMBER_IDS_RULE = f"Give 1 to {MAX_MEMBER_IDS} user ids in `add` and `remove` together."


def user_ids_rule(max_ids: int) -> str:
    return f"Give 1 to {max_ids} user ids."


def repeated_id(first_index: int, first_list: str | None = None) -> list[str]:
    where = "" if first_list is None else f" of `{first_list}`"
    return [f"Repeats the id at index {first_index}{where}."]


_SLUG_REGEX = re.compile(SLUG_PATTERN)
_DIGITS = re.compile(r"[0-9]{1,20}")
# A report's `from` and `to`: a month, a day, or an RFC 3339 timestamp (`T` and `Z` in either case).
REPORT_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}(-[0-9]{2}([Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2}))?)?$"
)
_REPORT_TIME = re.compile(  # REPORT_TIME_PATTERN, its parts named
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})(-(?P<day>[0-9]{2})([Tt](?P<hour>[0-9]{2}):"
    r"(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(\.(?P<fraction>[0-9]+))?"
    r"([Zz]|(?P<offset_sign>[+-])(?P<offset_hours>[0-9]{2}):(?P<offset_minutes>[0-9]{2})))?)?"
)
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


class FullMatch(validate.Regexp):
    """`Regexp` over the whole value: in Python `$` also matches before a final newline,
    where PostgreSQL's `~` and the OpenAPI pattern end."""

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def storable_text(value: str) -> None:
    """PostgreSQL text cannot hold NUL, nor UTF-8 a lone surrogate; JSON strings can."""
    if _UNSTORABLE_CHARACTER.search(value):
        raise ValidationError("Must not contain NUL or unpaired surrogate characters.")


def _raw_length(data: Any, name: str) -> int:
    """The length of list `name` in a body not yet loaded; 0 when it is not a list.

    Counted in `@pre_load`, before marshmallow checks each item: a body at the size limit holds
    half a million items, and each would cost a check and perhaps a message.
    """
    items = data.get(name) if isinstance(data, dict) else None
    return len(items) if isinstance(items, list) else 0


def format_timestamp(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a `Z` suffix."""
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class Timestamp(fields.DateTime):
    """A timezone-aware RFC 3339 timestamp; always written in UTC with `Z`."""

    def _serialize(self, value: dt.datetime | None, attr: Any, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else format_timestamp(value)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dt.datetime:
        parsed = super()._deserialize(value, attr, data, **kwargs)
        if parsed.tzinfo is None:
            raise ValidationError("Must include a timezone offset, e.g. `Z`.")
        # In UTC: RFC 3339 allows offsets up to 23:59, PostgreSQL parses up to 15:59.
        try:
            return parsed.astimezone(dt.UTC)
        except OverflowError:
            raise ValidationError(YEARS_RULE) from None


def Slug(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=FullMatch(SLUG_PATTERN, error=SLUG_RULE),
        error_messages={"invalid": SLUG_RULE},
        metadata={"example": "AVITO_VOICE_MESSAGES"},
        **kwargs,
    )


def BoundedInteger(low: int, high: int, **kwargs: Any) -> fields.Integer:
    """An integer from `low` to `high`: a value of another type is told the same rule."""
    rule = integer_rule(low, high)
    return fields.Integer(
        validate=validate.Range(min=low, max=high, error=rule),
        error_messages={"invalid": rule},
        **kwargs,
    )


def UserId(**kwargs: Any) -> fields.Integer:
    return BoundedInteger(
        1, MAX_USER_ID, strict=True, metadata={"format": "int64", "example": 1000}, **kwargs
    )


class PathValue(fields.Field):
    """A value written in a URL, checked and converted by `parse` alone (no validators, never
    None), so that a `PathSchema` of them can be loaded without marshmallow's machinery."""

    def parse(self, value: Any) -> Any:
        raise NotImplementedError

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        return self.parse(value)


class UserIdInPath(PathValue):
    """A user id written in a URL path or query: decimal digits only, 1..2^63-1."""

    def parse(self, value: Any) -> int:
        if not isinstance(value, str) or not _DIGITS.fullmatch(value):
            raise ValidationError(USER_ID_RULE)
        number = int(value)
        if not 1 <= number <= MAX_USER_ID:
            raise ValidationError(USER_ID_RULE)
        return number


class AddItemSchema(Schema):
    slug = Slug(required=True)
    expires_at = Timestamp(
        validate=validate.Range(max=LATEST_EXPIRY, error="Must be before 9000-01-01."),
        metadata={"description": "When the membership ends; must be in the future."},
    )
    ttl_seconds = BoundedInteger(
        1,
        MAX_TTL_SECONDS,
        strict=True,
        metadata={"description": "Membership lifetime in seconds from the change."},
    )

    @validates_schema
    def at_most_one_expiry(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "expires_at" in data and "ttl_seconds" in data:
            raise ValidationError("Give at most one of `expires_at` and `ttl_seconds`.")


class AddItem(fields.Field):
    """A slug, or an object with the slug and its expiry."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[str, Any]:
        if isinstance(value, str):
            if not _SLUG_REGEX.fullmatch(value):
                raise ValidationError(SLUG_RULE)
            return {"slug": value}
        if isinstance(value, dict):
            return AddItemSchema().load(value)
        raise ValidationError("Must be a slug or an object with `slug`.")


class Percent(fields.Field):
    """A JSON number from 0 to 100 with at most two decimals; loads as an exact Decimal."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError(PERCENT_RULE)
        percent = Decimal(str(value))
        if not percent.is_finite() or not 0 <= percent <= 100:
            raise ValidationError(PERCENT_RULE)
        if percent != percent.quantize(Decimal("0.01")):
            raise ValidationError("Must have at most two decimals.")
        return percent.quantize(Decimal("0.01"))

    def _serialize(self, value: Decimal | None, attr: Any, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else float(value)


def AutoPercent(**kwargs: Any) -> Percent:
    return Percent(
        metadata={
            "type": "number",
            "minimum": 0,
            "maximum": 100,
            "multipleOf": 0.01,
            "example": 10,
            "description": "Share of all registered users who get the segment automatically.",
        },
        **kwargs,
    )


def Description(**kwargs: Any) -> fields.String:
    return fields.String(
        allow_none=True, validate=[validate.Length(max=1000), storable_text], **kwargs
    )


class SegmentCreateSchema(Schema):
    slug = Slug(required=True)
    description = Description(load_default=None)
    auto_percent = AutoPercent(load_default=Decimal(0))


class SegmentUpdateSchema(Schema):
    description = Description()
    auto_percent = AutoPercent()

    @validates_schema
    def changes_something(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give `description` and/or `auto_percent`.")


class RolloutSchema(Schema):
    target_percent = AutoPercent(required=True)
    state = fields.String(
        required=True,
        metadata={
            "enum": ["converging", "done"],
            "description": "`converging` while chunks still bring registered users to the target.",
        },
    )
    users_left = fields.Integer(
        required=True,
        metadata={
            "format": "int64",
            "description": "Registered users the rollout has still to reach (0 when done).",
        },
    )
    started_at = Timestamp(required=True)
    finished_at = Timestamp(allow_none=True, required=True)


class SegmentSchema(Schema):
    slug = fields.String(required=True, metadata={"example": "AVITO_VOICE_MESSAGES"})
    description = fields.String(allow_none=True, required=True)
    auto_percent = AutoPercent(required=True)
    created_at = Timestamp(required=True)
    deleted_at = Timestamp(allow_none=True, required=True)
    member_count = fields.Integer(required=True, metadata={"format": "int64"})
    rollout = fields.Nested(
        RolloutSchema,
        allow_none=True,
        required=True,
        metadata={"description": "The latest percentage change; null if there was none."},
    )


class SegmentListSchema(Schema):
    segments = fields.List(fields.Nested(SegmentSchema), required=True)


class SegmentListQuerySchema(Schema):
    include_deleted = fields.Boolean(load_default=False)


class SegmentPathSchema(Schema):
    slug = Slug(required=True)


class MembersQuerySchema(Schema):
    after = UserIdInPath(
        metadata={"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_USER_ID},
    )
    limit = BoundedInteger(1, MAX_PAGE_SIZE, load_default=1000)


class MemberSchema(Schema):
    user_id = fields.Integer(required=True, metadata={"format": "int64"})
    added_at = Timestamp(required=True)
    expires_at = Timestamp(allow_none=True, required=True)
    source = fields.String(required=True, metadata={"enum": ["manual", "auto"]})


class MembersSchema(Schema):
    members = fields.List(fields.Nested(MemberSchema), required=True)
    next_after = fields.Integer(
        allow_none=True,
        required=True,
        metadata={"format": "int64", "description": "Pass as `after` for the next page."},
    )


class EventsQuerySchema(Schema):
    after = fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=MAX_USER_ID),
        metadata={"format": "int64", "description": "The `next_after` of the previous page."},
    )
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class SegmentEventSchema(Schema):
    event_id = fields.Integer(required=True, metadata={"format": "int64"})
    segment_id = fields.Integer(
        required=True,
        metadata={"format": "int64", "description": "Tells apart segments that had the slug."},
    )
    slug = fields.String(required=True)
    kind = fields.String(
        required=True,
        metadata={
            "enum": ["created", "description_changed", "percentage_changed", "deleted"],
        },
    )
    before = fields.Dict(
        allow_none=True,
        required=True,
        metadata={"description": "The fields that changed, before; null for `created`."},
    )
    after = fields.Dict(
        allow_none=True,
        required=True,
        metadata={"description": "The fields that changed, after; null for `deleted`."},
    )
    actor = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "The token's name, or the X-Actor header of an open API."},
    )
    request_id = fields.String(allow_none=True, required=True)
    at = Timestamp(required=True)


class SegmentEventsSchema(Schema):
    events = fields.List(fields.Nested(SegmentEventSchema), required=True)
    next_after = fields.Integer(
        allow_none=True,
        required=True,
        metadata={"format": "int64", "description": "Pass as `after` for the next page."},
    )


class PathSchema(Schema):
    """The values of a route's path: `PathValue` fields only, no hooks. `api.load_path` calls
    their `parse` directly, which gives what `load` gives for a fraction of its cost."""


class UserPathSchema(PathSchema):
    user_id = UserIdInPath(required=True)


class UserIdsSchema(Schema):
    """A body `{"user_ids": [...]}` of 1 to `max_ids` ids, counted before any id is checked."""

    max_ids: ClassVar[int]

    @pre_load
    def refuse_too_many_ids(self, data: Any, **kwargs: Any) -> Any:
        if _raw_length(data, "user_ids") > self.max_ids:
            raise ValidationError(user_ids_rule(self.max_ids), field_name="user_ids")
        return data


class UserIdList(fields.List):
    """A list of user ids. One that holds only ids in range, as nearly every request's does, is
    taken in one pass: marshmallow's load of each item was half of a 100-id lookup's time.
    Anything else goes through that load, which words the errors."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[Any]:
        if type(value) is list and all(
            type(item) is int and 1 <= item <= MAX_USER_ID for item in value
        ):
            return list(value)
        return super()._deserialize(value, attr, data, **kwargs)


def UserIds(max_ids: int, **metadata: Any) -> fields.List:
    return UserIdList(
        UserId(),
        required=True,
        validate=validate.Length(min=1, error=user_ids_rule(max_ids)),
        metadata={"maxItems": max_ids, **metadata},
    )


class RegisterUsersSchema(UserIdsSchema):
    max_ids = MAX_REGISTERED_IDS
    user_ids = UserIds(MAX_REGISTERED_IDS)


class LookupUsersSchema(UserIdsSchema):
    max_ids = MAX_LOOKUP_IDS
    user_ids = UserIds(MAX_LOOKUP_IDS, uniqueItems=True)

    @validates_schema
    def ids_are_distinct(self, data: dict[str, Any], **kwargs: Any) -> None:
        first_index: dict[int, int] = {}
        repeated = {
            index: repeated_id(first_index[user_id])
            for index, user_id in enumerate(data["user_ids"])
            if first_index.setdefault(user_id, index) != index
        }
        if repeated:
            raise ValidationError({"user_ids": repeated})


class RegisteredUsersSchema(Schema):
    registered = fields.Integer(required=True)


class UserSchema(Schema):
    user_id = fields.Integer(required=True, metadata={"format": "int64"})
    registered_at = Timestamp(required=True)


_CHANGE_ITEMS = {
    "maxItems": MAX_CHANGE_ITEMS,
    "description": f"At most {MAX_CHANGE_ITEMS} items in `add` and `remove` together.",
}


class MembershipChangeSchema(Schema):
    add = fields.List(
        AddItem(
            metadata={
                "oneOf": [
                    {"type": "string", "pattern": SLUG_PATTERN},
                    {"$ref": "#/components/schemas/AddItem"},
                ]
            }
        ),
        load_default=list,
        metadata={"uniqueItems": True, **_CHANGE_ITEMS},
    )
    remove = fields.List(Slug(), load_default=list, metadata={"uniqueItems": True, **_CHANGE_ITEMS})

    @pre_load
    def refuse_too_many_items(self, data: Any, **kwargs: Any) -> Any:
        if _raw_length(data, "add") + _raw_length(data, "remove") > MAX_CHANGE_ITEMS:
            raise ValidationError(CHANGE_ITEMS_RULE)
        return data

    @validates_schema
    def lists_are_consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        added = [item["slug"] for item in data.get("add", [])]
        removed = data.get("remove", [])
        if not added and not removed:
            raise ValidationError(CHANGE_ITEMS_RULE)
        repeated = sorted(slug for slug, count in Counter(added + removed).items() if count > 1)
        if repeated:
            raise ValidationError(f"Each slug may appear once in `add` and `remove`: {repeated}.")


class MemberAddItemSchema(AddItemSchema):
    """An `add` item of a segment's bulk change: the user id in place of the slug, with the
    expiry fields and checks of a user's change."""

    class Meta:
        exclude = ("slug",)

    user_id = UserId(required=True)


# Shared, not built per item as AddItem does: building a schema cost more than loading an item,
# and a bulk change has 10,000 of them.
_MEMBER_ADD_ITEM = MemberAddItemSchema()
_USER_ID = UserId()


class MemberAddItem(fields.Field):
    """A user id, or an object with the user id and its expiry."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return _MEMBER_ADD_ITEM.load(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return {"user_id": _USER_ID.deserialize(value)}
        raise ValidationError("Must be a user id or an object with `user_id`.")


_MEMBER_IDS = {
    "maxItems": MAX_MEMBER_IDS,
    "description": f"At most {MAX_MEMBER_IDS} user ids in `add` and `remove` together.",
}


class SegmentMembersChangeSchema(Schema):
    add = fields.List(
        MemberAddItem(
            metadata={
                "oneOf": [
                    {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_USER_ID},
                    {"$ref": "#/components/schemas/MemberAddItem"},
                ]
            }
        ),
        load_default=list,
        metadata=_MEMBER_IDS,
    )
    remove = fields.List(UserId(), load_default=list, metadata=_MEMBER_IDS)

    @pre_load
    def refuse_too_many_ids(self, data: Any, **kwargs: Any) -> Any:
        if _raw_length(data, "add") + _raw_length(data, "remove") > MAX_MEMBER_IDS:
            raise ValidationError(MEMBER_IDS_RULE)
        return data

    @validates_schema
    def ids_are_distinct(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Names every repeated id at its index, and where it came first."""
        lists = {
            "add": [item["user_id"] for item in data.get("add", [])],
            "remove": data.get("remove", []),
        }
        if not lists["add"] and not lists["remove"]:
            raise ValidationError(MEMBER_IDS_RULE)
        first: dict[int, tuple[str, int]] = {}
        repeated: dict[str, dict[int, list[str]]] = {}
        for name, user_ids in lists.items():
            for index, user_id in enumerate(user_ids):
                first_name, first_index = first.setdefault(user_id, (name, index))
                if (first_name, first_index) != (name, index):
                    other_list = None if first_name == name else first_name
                    repeated.setdefault(name, {})[index] = repeated_id(first_index, other_list)
        if repeated:
            raise ValidationError(repeated)


class SegmentMembersChangedSchema(Schema):
    added = fields.Integer(
        required=True,
        metadata={"description": "Memberships that began, each with an `added` history row."},
    )
    renewed = fields.Integer(
        required=True,
        metadata={
            "description": (
                "Current memberships of ids in `add`: they keep `added_at`, take the expiry "
                "asked and become manual; no history row."
            )
        },
    )
    removed = fields.Integer(
        required=True,
        metadata={
            "description": (
                "Memberships that `remove` ended, each with a `removed` history row; ids that "
                "were no members count nowhere."
            )
        },
    )
    member_count = fields.Integer(
        required=True,
        metadata={"format": "int64", "description": "The segment's members after the change."},
    )


_ONE_EXPIRY = {"not": {"required": ["expires_at", "ttl_seconds"]}}
_ADD_OR_REMOVE = {
    "anyOf": [
        {"required": ["add"], "properties": {"add": {"minItems": 1}}},
        {"required": ["remove"], "properties": {"remove": {"minItems": 1}}},
    ]
}
# Rules of `@validates_schema` methods, for the OpenAPI description. JSON Schema cannot state
# the others: distinct slugs or user ids across `add` and `remove`, `to` not before `from`.
OBJECT_RULES: dict[type[Schema], dict[str, Any]] = {
    AddItemSchema: _ONE_EXPIRY,
    MemberAddItemSchema: _ONE_EXPIRY,
    SegmentUpdateSchema: {"minProperties": 1},
    MembershipChangeSchema: _ADD_OR_REMOVE,
    SegmentMembersChangeSchema: _ADD_OR_REMOVE,
}


class UserSegmentSchema(Schema):
    slug = fields.String(required=True, metadata={"example": "AVITO_VOICE_MESSAGES"})
    added_at = Timestamp(required=True)
    expires_at = Timestamp(allow_none=True, required=True)


class UserSegmentsSchema(Schema):
    user_id = fields.Integer(required=True, metadata={"format": "int64"})
    segments = fields.List(fields.Nested(UserSegmentSchema), required=True)


class UsersSegmentsSchema(Schema):
    users = fields.List(
        fields.Nested(UserSegmentsSchema),
        required=True,
        metadata={"description": "One entry per id asked, in the order asked."},
    )


class ProblemSchema(Schema):
    type = fields.String(
        required=True, metadata={"example": "urn:segsvc:problem:segment_not_found"}
    )
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    code = fields.String(required=True, metadata={"example": "segment_not_found"})
    errors = fields.Dict(
        metadata={
            "description": (
                "Field -> messages, for `validation_failed`; list items nest under their index. "
                f"At most {MAX_LISTED_ENTRIES} fields with messages, the first by field path."
            )
        }
    )
    errors_omitted = fields.Integer(
        metadata={
            "minimum": 1,
            "description": "Fields with messages left out of `errors`; absent when none are.",
        }
    )
    slugs = fields.List(
        fields.String(),
        metadata={
            "maxItems": MAX_LISTED_ENTRIES,
            "description": f"Unknown slugs, for PATCH: the first {MAX_LISTED_ENTRIES}, sorted.",
        },
    )
    slugs_omitted = fields.Integer(
        metadata={
            "minimum": 1,
            "description": "Unknown slugs left out of `slugs`; absent when none are.",
        }
    )
    slug = fields.String(
        metadata={"description": "The slug, for `segment_not_found` and `segment_exists`."}
    )
    user_id = fields.Integer(metadata={"format": "int64", "description": "For `user_not_found`."})
    request_id = fields.String(
        metadata={"description": "The request's id, as in its `X-Request-ID` response header."}
    )


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})


@dataclass(frozen=True)
class TimeSpan:
    """What a report's `from` or `to` names, in UTC: a month or a day from its first instant up to
    the first instant after it (`after`; None past year 9999), or an instant (`after` is `first`).
    `text` is how a link writes it: as given, an instant in UTC."""

    text: str
    first: dt.datetime
    after: dt.datetime | None
    is_instant: bool


def _report_instant(match: re.Match[str]) -> dt.datetime:
    """The UTC instant of an RFC 3339 timestamp, rounded up to the microsecond PostgreSQL keeps:
    exact for an inclusive `from` and an exclusive `to` alike."""
    hours, minutes = int(match["offset_hours"] or 0), int(match["offset_minutes"] or 0)
    offset = dt.timedelta(hours=hours, minutes=minutes)
    fraction = match["fraction"] or ""
    instant = dt.datetime(
        *(int(match[part]) for part in ("year", "month", "day", "hour", "minute", "second")),
        int(fraction[:6].ljust(6, "0")),
        dt.timezone(-offset if match["offset_sign"] == "-" else offset),
    )
    if fraction[6:].strip("0"):
        instant += dt.timedelta(microseconds=1)
    return instant.astimezone(dt.UTC)


class ReportTime(fields.Field):
    """A report's `from` or `to`: a UTC month `YYYY-MM`, a UTC day `YYYY-MM-DD` or an RFC 3339
    timestamp with an offset; loads as a `TimeSpan`. Computed here in UTC, so that no time zone,
    the server's or the database session's, can move a bound."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> TimeSpan:
        match = _REPORT_TIME.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise ValidationError(
                "Must be a month (YYYY-MM) or a day (YYYY-MM-DD) in UTC, or an RFC 3339 "
                "timestamp with an offset, e.g. 2023-08-14T09:30:00Z (in a URL, `+` is `%2B`)."
            )
        year, month = int(match["year"]), int(match["month"])
        try:
            if match["day"] is None:
                first = dt.datetime(year, month, 1, tzinfo=dt.UTC)
                following = year * 12 + month  # months since year 0, plus one
                after = None
                if following // 12 <= dt.MAXYEAR:
                    after = dt.datetime(following // 12, following % 12 + 1, 1, tzinfo=dt.UTC)
                return TimeSpan(value, first, after, is_instant=False)
            if match["hour"] is None:
                first = dt.datetime(year, month, int(match["day"]), tzinfo=dt.UTC)
                after = None if first.date() == dt.date.max else first + dt.timedelta(days=1)
                return TimeSpan(value, first, after, is_instant=False)
            instant = _report_instant(match)
        except OverflowError:
            raise ValidationError(YEARS_RULE) from None
        except ValueError:
            raise ValidationError(
                "Must be a date and time that exist (not 2023-02-30, nor 24:00)."
            ) from None
        return TimeSpan(format_timestamp(instant), instant, instant, is_instant=True)


class ReportPeriodSchema(Schema):
    """Which rows a history report holds: a period and optional filters.

    `from` counts from its first instant and `to` up to its end: a month or a day whole, an
    instant excluded. Without `to`, a month or a day `from` ends with itself and an instant runs
    up to the report's start. A period must hold some time."""

    start = ReportTime(
        data_key="from",
        required=True,
        metadata={
            "type": "string",
            "pattern": REPORT_TIME_PATTERN,
            "example": "2023-08",
            "description": (
                "The first month (`YYYY-MM`) or day (`YYYY-MM-DD`) in UTC, or the first instant "
                "(RFC 3339 with an offset, e.g. `2023-08-14T09:30:00Z`), included."
            ),
        },
    )
    end = ReportTime(
        data_key="to",
        metadata={
            "type": "string",
            "pattern": REPORT_TIME_PATTERN,
            "example": "2023-09",
            "description": (
                "The last month or day in UTC, included whole, or the instant the report ends "
                "before, excluded. Default: a month or a day `from` itself; after an instant "
                "`from`, the report's start."
            ),
        },
    )
    segment = Slug()
    delimiter = fields.String(
        load_default=";",
        validate=validate.OneOf([";", ","], error="Must be `;` or `,`."),
        metadata={"description": "The CSV's field separator."},
    )

    @validates_schema
    def period_holds_some_time(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "start" in data and "end" in data:
            end = data["end"].after
            if end is not None and end <= data["start"].first:
                raise ValidationError("Must end after `from` begins.", field_name="to")


class HistoryReportQuerySchema(ReportPeriodSchema):
    user_id = UserIdInPath(
        metadata={"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_USER_ID}
    )


class ReportRequestSchema(ReportPeriodSchema):
    user_id = UserId()


class ReportLinkSchema(Schema):
    url = fields.String(
        required=True,
        metadata={
            "example": "http://localhost:8080/api/v1/reports/history.csv?from=2023-08&to=2023-09"
        },
    )
