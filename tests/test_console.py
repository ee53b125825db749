"""The web console under /ui (segsvc/console): every page and action over a real database, the
problems it shows in place of the API's problem+json, and who may do what (form tokens,
sign-in with API tokens, read and write scopes, cookies and headers)."""

import datetime as dt
import hashlib
import hmac
import html
import io
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from support import change_segments, converge, create_segment, members, register, selected
from test_errors import BAD_PATH_VALUES

from segsvc.config import Config, ConfigError, parse_api_tokens
from segsvc.console import (
    PREFIX,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    STATIC_DIRECTORY,
    share_secret_key,
)

SLUG = "AVITO_VOICE_MESSAGES"
OTHER = "AVITO_DISCOUNT_30"
SEGMENT_PAGE = f"/ui/segments/{SLUG}"
TABLES = (
    "segments",
    "users",
    "memberships",
    "membership_history",
    "auto_exclusions",
    "segment_events",
    "rollouts",
)
FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')
PROBLEM_CODE = re.compile(r'<div class="problem".*?<code>([^<]+)</code>', re.DOTALL)
NOTICES = re.compile(r'<p class="notice" role="status">(.*?)</p>', re.DOTALL)
YEAR_IN_SECONDS = 365 * 24 * 3600

ALICE_TOKEN = "alice-console-T0ken~1"
BOB_TOKEN = "bob-console-T0ken~2"
TOKENS = f"alice:write:{ALICE_TOKEN},bob:read:{BOB_TOKEN}"
SECRET_KEY = "console-tests-secret-key-of-at-least-32-characters"
ALICE_API = {"Authorization": f"Bearer {ALICE_TOKEN}"}

# An action per POST route that succeeds when allowed (segment SLUG and user 1 exist), in an
# order that can run whole: the deletion comes last.
ACTIONS = {
    "console.segments.create_segment": ("/ui/segments", {"slug": "NEW", "auto_percent": "0"}),
    "console.segments.change_description": (f"{SEGMENT_PAGE}/description", {"description": "d"}),
    "console.segments.change_percentage": (
        f"{SEGMENT_PAGE}/percentage",
        {"auto_percent": "10", "confirmed": "yes"},
    ),
    "console.segments.change_members": (
        f"{SEGMENT_PAGE}/members",
        {"operation": "add", "user_ids": "2 3"},
    ),
    "console.users.change_segments": ("/ui/users/4/segments", {"operation": "add", "slug": SLUG}),
    "console.segments.delete_segment": (f"{SEGMENT_PAGE}/delete", {"confirm_slug": SLUG}),
}
SIGN_IN_ENDPOINTS = {"console.access.sign_in", "console.access.sign_out"}


# Helpers


def form_token(client: Any, url: str = "/ui/segments") -> str:
    """The session's anti-forgery token, as a page of the console puts it in its forms."""
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    return FORM_TOKEN.search(response.get_data(as_text=True))[1]


def submit(client: Any, url: str, **fields: Any) -> Any:
    """Posts a form as the console's pages do, with the session's form token."""
    return client.post(url, data={"form_token": form_token(client), **fields})


def page_text(response: Any) -> str:
    """What a person reads on the page: the text without tags, spaces collapsed."""
    text = re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))
    return " ".join(html.unescape(text).split())


def assert_page(response: Any, status: int = 200) -> str:
    body = response.get_data(as_text=True)
    assert response.status_code == status, body
    assert response.mimetype == "text/html"
    return body


def assert_problem_page(response: Any, status: int, code: str) -> str:
    """A page with the problem box of the API's problem `code`, and what the page says."""
    body = assert_page(response, status)
    shown = PROBLEM_CODE.search(body)
    assert shown is not None, body
    assert shown[1] == code
    assert "Nothing was changed." in page_text(response)
    assert "Traceback" not in body
    return page_text(response)


def done(client: Any, response: Any) -> str:
    """An action's success: a 303 to the next page, which shows the action's notices."""
    assert response.status_code == 303, response.get_data(as_text=True)
    page = client.get(response.headers["Location"])
    body = assert_page(page)
    return " | ".join(" ".join(html.unescape(notice).split()) for notice in NOTICES.findall(body))


def row_counts(sql: Any) -> dict[str, int]:
    return {table: sql.value(f"SELECT count(*) FROM {table}") for table in TABLES}


def history(sql: Any, slug: str = SLUG) -> list[tuple]:
    return sql.rows(
        "SELECT h.user_id, h.operation, h.reason, h.actor FROM membership_history h"
        " JOIN segments s USING (segment_id) WHERE s.slug = %s ORDER BY h.history_id",
        (slug,),
    )


def events(sql: Any, slug: str = SLUG) -> list[tuple]:
    return sql.rows(
        "SELECT kind, actor FROM segment_events WHERE slug = %s ORDER BY event_id", (slug,)
    )


def segment_row(sql: Any, slug: str = SLUG) -> tuple | None:
    rows = sql.rows(
        "SELECT description, auto_percent FROM segments WHERE slug = %s AND deleted_at IS NULL",
        (slug,),
    )
    return rows[0] if rows else None


def expiries(sql: Any, slug: str = SLUG) -> dict[int, dt.datetime | None]:
    rows = sql.rows(
        "SELECT m.user_id, m.expires_at FROM memberships m JOIN segments s USING (segment_id)"
        " WHERE s.slug = %s",
        (slug,),
    )
    return dict(rows)


def listed_users(response: Any) -> list[int]:
    """The user ids a page links to, in page order."""
    return [int(user_id) for user_id in re.findall(r'href="/ui/users/(\d+)"', response.text)]


def console_rules(app: Any) -> list[Any]:
    return sorted(
        (rule for rule in app.url_map.iter_rules() if rule.rule.startswith(PREFIX + "/")),
        key=lambda rule: (rule.rule, rule.endpoint),
    )


def post_endpoints(app: Any) -> set[str]:
    return {rule.endpoint for rule in console_rules(app) if "POST" in rule.methods}


def signed_in(app: Any, token: str) -> Any:
    """A client of `app` whose console session signed in with `token`."""
    client = app.test_client()
    sign_in = client.post(
        "/ui/sign-in", data={"form_token": form_token(client, "/ui/sign-in"), "token": token}
    )
    assert sign_in.status_code == 303, sign_in.get_data(as_text=True)
    return client


def session_cookie(client: Any) -> str:
    cookie = client.get_cookie(SESSION_COOKIE, path=PREFIX)
    assert cookie is not None
    return cookie.value


@pytest.fixture
def stored(client: Any, sql: Any) -> dict[str, int]:
    """Segment SLUG with user 1 in it, and OTHER: "nothing changed" is about rows that exist."""
    create_segment(client, SLUG, description="Voice messages")
    create_segment(client, OTHER)
    assert change_segments(client, 1, add=[SLUG]).status_code == 200
    return row_counts(sql)


@pytest.fixture
def secured_app(make_app: Any) -> Any:
    """Tokens required: alice writes, bob reads; segment SLUG with user 1 in it."""
    app = make_app(api_tokens=parse_api_tokens(TOKENS), secret_key=SECRET_KEY)
    client = app.test_client()
    response = client.post("/api/v1/segments", json={"slug": SLUG}, headers=ALICE_API)
    assert response.status_code == 201, response.get_json()
    response = client.patch("/api/v1/users/1/segments", json={"add": [SLUG]}, headers=ALICE_API)
    assert response.status_code == 200, response.get_json()
    return app


# Every route answers

# A request per GET route that answers without an error: (query, status, mimetype).
GOOD_GETS = {
    "console.home": ("", 302, "text/html"),
    "console.asset": ("", 200, "text/css"),
    "console.access.sign_in": ("", 302, "text/html"),  # no tokens: nothing to sign in to
    "console.segments.list_segments": ("?q=voice", 200, "text/html"),
    "console.segments.show_segment": ("?members_after=1&events_after=1", 200, "text/html"),
    "console.segments.rollout_progress": ("", 200, "application/json"),
    "console.segments.download_members": ("", 200, "text/csv"),
    "console.users.find_user": ("", 200, "text/html"),
    "console.users.show_user": ("", 200, "text/html"),
    "console.reports.report_form": ("", 200, "text/html"),
    "console.reports.download_history": ("?period=month&month_from=2023-08", 200, "text/csv"),
}
GOOD_PATH_VALUES = {"slug": SLUG, "user_id": "1", "filename": "console.css"}
# Per path value: the API's bad value and, where a valid value can name nothing, an unknown one.
PATH_FAULTS = {
    "slug": [BAD_PATH_VALUES["slug"], ("NO_SUCH_SEGMENT", 404, "segment_not_found")],
    "user_id": [BAD_PATH_VALUES["user_id"]],
    "filename": [BAD_PATH_VALUES["filename"]],
}


def test_every_get_route_of_the_console_answers(app, client, stored, subtests):
    rules = [rule for rule in console_rules(app) if "GET" in rule.methods]
    assert {rule.endpoint for rule in rules} == GOOD_GETS.keys()
    for rule in rules:
        query, status, mimetype = GOOD_GETS[rule.endpoint]
        url = rule.build({name: GOOD_PATH_VALUES[name] for name in rule.arguments})[1] + query
        with subtests.test(url=url):
            response = client.get(url)
            assert response.status_code == status, response.get_data(as_text=True)
            assert response.mimetype == mimetype
            response.close()


def path_faults(rule: Any) -> list[tuple[str, int, str]]:
    """The rule's URLs with one bad or unknown path value each: (url, status, code)."""
    good = {name: GOOD_PATH_VALUES[name] for name in rule.arguments}
    faults = []
    for name in sorted(rule.arguments):
        for value, status, code in PATH_FAULTS[name]:
            faults.append((rule.build({**good, name: value})[1], status, code))
    return faults


def test_a_bad_or_unknown_path_value_answers_a_problem_page_as_the_api_would(
    app, client, sql, stored, subtests
):
    """Pages for people; the progress the page's script polls stays JSON."""
    token = form_token(client)
    rules = [rule for rule in console_rules(app) if rule.arguments]
    assert rules
    for rule in rules:
        for url, status, code in path_faults(rule):
            for method in sorted(rule.methods & {"GET", "POST"}):
                with subtests.test(method=method, url=url):
                    data = {"form_token": token} if method == "POST" else None
                    response = client.open(url, method=method, data=data)
                    if url.endswith(".json"):
                        assert response.status_code == status
                        assert response.mimetype == "application/problem+json"
                        assert response.get_json()["code"] == code
                    else:
                        assert_problem_page(response, status, code)
                    assert row_counts(sql) == stored


def test_an_unknown_console_url_or_method_answers_a_page_with_the_security_headers(client):
    """A person who mistypes a console address reads a page, not the API's JSON."""
    for method, url, status, code in [
        ("GET", "/ui/no-such-page", 404, "not_found"),
        ("GET", f"{SEGMENT_PAGE}/no-such-page", 404, "not_found"),
        ("PUT", "/ui/segments", 405, "method_not_allowed"),
    ]:
        response = client.open(url, method=method)
        assert_problem_page(response, status, code)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (url, name)


def test_a_bad_page_position_or_lookup_is_a_422_page_naming_it(client, stored, subtests):
    for url, field in [
        (f"{SEGMENT_PAGE}?members_after=abc", "members_after"),
        (f"{SEGMENT_PAGE}?events_after=0", "events_after"),
        ("/ui/users?user_id=12x", "User id"),
    ]:
        with subtests.test(url=url):
            assert field in assert_problem_page(client.get(url), 422, "validation_failed")


def test_the_console_root_leads_to_the_segments(client):
    response = client.get("/ui/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/ui/segments"


def test_static_assets_are_cached_for_a_year_and_linked_by_their_digest(client, subtests):
    page = client.get("/ui/segments").get_data(as_text=True)
    for path in sorted(STATIC_DIRECTORY.iterdir()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        url = f"/ui/static/{path.name}?v={digest}"
        with subtests.test(asset=path.name):
            assert f'"{url}"' in page
            response = client.get(url)
            assert response.status_code == 200
            assert response.get_data() == path.read_bytes()
            assert response.cache_control.max_age == YEAR_IN_SECONDS
            assert "no-store" not in response.headers["Cache-Control"]
            response.close()


# Segments: the list, creation and the filter


def test_creating_a_segment_stores_it_and_shows_its_page(client, sql):
    response = submit(
        client, "/ui/segments", slug=f" {SLUG} ", description="Voice messages", auto_percent="12.5"
    )
    assert response.headers["Location"] == SEGMENT_PAGE
    assert done(client, response) == f"Created {SLUG}."
    assert segment_row(sql) == ("Voice messages", 12.5)
    assert events(sql) == [("created", None)]
    assert sql.value("SELECT finished_at IS NULL FROM rollouts") is True
    listing = page_text(client.get("/ui/segments"))
    assert "1 active segment" in listing
    assert f"{SLUG} Voice messages 12.5%" in listing


def test_creating_an_existing_slug_is_409_and_keeps_what_was_typed(client, sql, stored):
    response = submit(
        client, "/ui/segments", slug=SLUG, description="Typed again", auto_percent="33"
    )
    assert SLUG in assert_problem_page(response, 409, "segment_exists")
    body = response.get_data(as_text=True)
    assert f'name="slug" required maxlength="64" value="{SLUG}"' in body
    assert ">Typed again</textarea>" in body
    assert 'value="33"' in body
    assert row_counts(sql) == stored


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"slug": "-bad"}, "Slug:"),
        ({"slug": ""}, "Slug:"),
        ({"slug": "NEW", "auto_percent": "101"}, "Percentage:"),
        ({"slug": "NEW", "auto_percent": "1.234"}, "Percentage: Must have at most two decimals"),
        ({"slug": "NEW", "auto_percent": "half"}, "Percentage:"),
        ({"slug": "NEW", "description": "x" * 1001}, "Description:"),
    ],
)
def test_creating_a_segment_with_a_bad_field_is_a_422_naming_it(client, sql, stored, fields, named):
    text = assert_problem_page(submit(client, "/ui/segments", **fields), 422, "validation_failed")
    assert named in text
    assert row_counts(sql) == stored


def test_the_filter_lists_segments_whose_slug_or_description_match(client):
    create_segment(client, "CHECKOUT_V2", description="New payment page")
    create_segment(client, "DARK_MODE", description="Theme")
    create_segment(client, "PAYMENTS_LATAM")
    for query, expected in [
        ("payment", {"CHECKOUT_V2", "PAYMENTS_LATAM"}),
        ("DARK", {"DARK_MODE"}),
        ("  theme ", {"DARK_MODE"}),
        ("nothing-like-it", set()),
        ("", {"CHECKOUT_V2", "DARK_MODE", "PAYMENTS_LATAM"}),
    ]:
        body = assert_page(client.get("/ui/segments", query_string={"q": query}))
        assert set(re.findall(r'href="/ui/segments/([^"?/]+)"', body)) == expected, query
    assert "No active segments match “nothing-like-it”." in page_text(
        client.get("/ui/segments?q=nothing-like-it")
    )


def test_a_deleted_segment_leaves_the_list(client):
    create_segment(client, SLUG)
    assert client.delete(f"/api/v1/segments/{SLUG}").status_code == 204
    assert SEGMENT_PAGE not in client.get("/ui/segments").get_data(as_text=True)


def test_what_people_typed_is_shown_escaped(client, stored):
    script = "<script>alert(1)</script>"
    response = submit(client, f"{SEGMENT_PAGE}/description", description=script)
    assert response.status_code == 303
    for url in ("/ui/segments", SEGMENT_PAGE, f"/ui/segments?q={script}"):
        body = client.get(url).get_data(as_text=True)
        assert script not in body, url
        assert html.escape(script) in body, url
    refused = submit(client, f"{SEGMENT_PAGE}/members", operation="add", user_ids=script)
    assert script not in refused.get_data(as_text=True)
    assert "“<script>alert(1)</script>”" in page_text(refused)


# A segment's page: description and percentage


def test_changing_the_description_saves_it_and_records_an_event(client, sql, stored):
    response = submit(client, f"{SEGMENT_PAGE}/description", description="  Voice notes  ")
    assert done(client, response) == "Description saved."
    assert segment_row(sql) == ("Voice notes", 0)
    assert events(sql)[-1] == ("description_changed", None)
    assert 'Description: "Voice messages" → "Voice notes"' in page_text(client.get(SEGMENT_PAGE))


def test_clearing_the_description_stores_none(client, sql, stored):
    response = submit(client, f"{SEGMENT_PAGE}/description", description="   ")
    assert done(client, response) == "Description cleared."
    assert segment_row(sql) == (None, 0)


def test_a_too_long_description_is_refused_and_shown_as_typed(client, sql, stored):
    response = submit(client, f"{SEGMENT_PAGE}/description", description="x" * 1001)
    assert "Description:" in assert_problem_page(response, 422, "validation_failed")
    assert f">{'x' * 1001}</textarea>" in response.get_data(as_text=True)
    assert row_counts(sql) == stored


def test_a_percentage_change_is_first_previewed_with_the_users_it_would_reach(client, sql):
    create_segment(client, SLUG)
    register(client, range(1, 201))
    before = row_counts(sql)

    response = submit(client, f"{SEGMENT_PAGE}/percentage", auto_percent="50")

    text = page_text(response)
    assert response.status_code == 200
    assert f"Raising {SLUG} from 0% to 50% adds about 100 of the 200 registered users" in text
    assert "Change to 50%" in text
    assert 'name="confirmed" value="yes"' in response.get_data(as_text=True)
    assert row_counts(sql) == before
    assert segment_row(sql) == (None, 0)


def test_a_lower_percentage_preview_says_how_many_users_would_leave(client, sql):
    create_segment(client, SLUG, auto_percent=40)
    register(client, range(1, 1001))
    response = submit(client, f"{SEGMENT_PAGE}/percentage", auto_percent="10")
    text = page_text(response)
    assert f"Lowering {SLUG} from 40% to 10% removes about 300 of the 1,000 registered" in text
    assert segment_row(sql) == (None, 40)


def test_a_preview_of_the_same_percentage_offers_nothing_to_confirm(client, stored):
    response = submit(client, f"{SEGMENT_PAGE}/percentage", auto_percent="0")
    assert f"{SLUG} is already at 0%: nothing would change." in page_text(response)
    assert "Change to" not in page_text(response)


def test_confirming_a_percentage_change_applies_it_and_restarts_the_rollout(app, client, sql):
    create_segment(client, SLUG)
    register(client, range(1, 201))

    response = submit(client, f"{SEGMENT_PAGE}/percentage", auto_percent="50.00", confirmed="yes")

    assert done(client, response) == f"{SLUG} is now at 50%; its rollout has started."
    assert segment_row(sql) == (None, 50)
    assert events(sql)[-1] == ("percentage_changed", None)
    assert sql.rows("SELECT converged_up_to, finished_at FROM rollouts") == [(0, None)]
    page = page_text(client.get(SEGMENT_PAGE))
    assert "Converging to 50%: 0% of registered users reached, 200 left" in page
    assert "Percentage: 0% → 50%" in page
    converge(app)
    assert members(sql, SLUG) == selected(SLUG, range(1, 201), 50)
    assert "Done: at 50%" in page_text(client.get(SEGMENT_PAGE))


def test_confirming_the_percentage_a_segment_already_has_starts_no_rollout(client, sql):
    """A preview shows no button then, but a page previewed before someone else made the same
    change still confirms it: the notice must not tell of a rollout that did not start."""
    create_segment(client, SLUG, auto_percent=20)
    before = row_counts(sql)
    response = submit(client, f"{SEGMENT_PAGE}/percentage", auto_percent="20", confirmed="yes")
    notice = done(client, response)
    assert row_counts(sql) == before
    assert events(sql) == [("created", None)]
    assert "rollout has started" not in notice


def test_a_change_lost_with_the_database_at_its_commit_is_an_error_page_never_saved(
    client, sql, stored
):
    """The database goes away while it commits (a deferred trigger ends the session's own
    backend): the page says so, and no later page claims the change was saved."""
    sql.execute(
        """CREATE FUNCTION lose_the_connection() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5);
           RETURN NULL; END $$;
           CREATE CONSTRAINT TRIGGER lost_at_commit AFTER INSERT ON segment_events
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION lose_the_connection();"""
    )
    response = submit(client, f"{SEGMENT_PAGE}/description", description="lost")
    assert_problem_page(response, 503, "database_unavailable")
    assert segment_row(sql) == ("Voice messages", 0)
    assert NOTICES.findall(client.get(SEGMENT_PAGE).get_data(as_text=True)) == []


# Python's int() would take the last three: the API's JSON number takes ASCII digits alone.
@pytest.mark.parametrize(
    "typed", ["", "101", "-1", "0.001", "fifty", "1_0", "\u0663", "\uff11\uff10"]
)
def test_a_bad_percentage_is_refused_without_a_preview(client, sql, stored, typed):
    response = submit(client, f"{SEGMENT_PAGE}/percentage", auto_percent=typed)
    assert "Percentage:" in assert_problem_page(response, 422, "validation_failed")
    assert "ramp-confirm" not in response.get_data(as_text=True)
    assert row_counts(sql) == stored


# A segment's page: members in bulk


def test_bulk_add_takes_each_pasted_id_once_whatever_the_separators(client, sql, stored):
    response = submit(
        client, f"{SEGMENT_PAGE}/members", operation="add", user_ids="2, 3;4\n\n5\t2 \r\n3,,1"
    )
    assert done(client, response) == f"4 added, 1 renewed, 0 removed; {SLUG} has 5 members."
    assert members(sql, SLUG) == {1, 2, 3, 4, 5}
    assert history(sql)[1:] == [(user_id, "added", "manual", None) for user_id in (2, 3, 4, 5)]


def test_bulk_add_reads_ids_from_an_uploaded_file_as_well(client, sql, stored):
    upload = io.BytesIO("\ufeff10\r\n11\n\n12\n".encode())
    response = client.post(
        f"{SEGMENT_PAGE}/members",
        data={
            "form_token": form_token(client),
            "operation": "add",
            "user_ids": "9",
            "user_ids_file": (upload, "ids.txt"),
        },
        content_type="multipart/form-data",
    )
    assert done(client, response) == f"4 added, 0 renewed, 0 removed; {SLUG} has 5 members."
    assert members(sql, SLUG) == {1, 9, 10, 11, 12}


def test_bulk_remove_removes_the_listed_members(client, sql, stored):
    added = submit(client, f"{SEGMENT_PAGE}/members", operation="add", user_ids="2 3 4")
    assert added.status_code == 303
    response = submit(client, f"{SEGMENT_PAGE}/members", operation="remove", user_ids="1\n3\n99")
    assert done(client, response) == f"0 added, 0 renewed, 2 removed; {SLUG} has 2 members."
    assert members(sql, SLUG) == {2, 4}
    assert [row for row in history(sql) if row[1] == "removed"] == [
        (1, "removed", "manual", None),
        (3, "removed", "manual", None),
    ]


def test_bulk_add_with_an_expiry_reads_it_as_utc(client, sql, stored):
    response = submit(
        client,
        f"{SEGMENT_PAGE}/members",
        operation="add",
        user_ids="1 2",
        expires_at="2099-01-02T03:04:05",
    )
    assert done(client, response) == f"1 added, 1 renewed, 0 removed; {SLUG} has 2 members."
    expected = dt.datetime(2099, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert expiries(sql) == {1: expected, 2: expected}
    assert "2099-01-02 03:04:05 UTC" in page_text(client.get(SEGMENT_PAGE))


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({"operation": "add", "user_ids": "7 8 12x"}, "“12x”"),
        ({"operation": "add", "user_ids": "7 0"}, "“0”"),
        (
            {"operation": "add", "user_ids": "7 8", "expires_at": "2000-01-01T00:00:00"},
            "Expires at: Must be in the future.",
        ),
        ({"operation": "add", "user_ids": " \n "}, "User ids"),
        ({"operation": "move", "user_ids": "7"}, "Choose to add or to remove the users."),
        ({"user_ids": "7"}, "Choose to add or to remove the users."),
    ],
)
def test_a_refused_bulk_change_changes_nothing_and_keeps_what_was_typed(
    client, sql, stored, fields, shown
):
    """Ids 7 and 8 are not registered: a change that went ahead would register them."""
    response = submit(client, f"{SEGMENT_PAGE}/members", **fields)
    assert shown in assert_problem_page(response, 422, "validation_failed")
    assert f">{html.escape(fields['user_ids'])}</textarea>" in response.get_data(as_text=True)
    assert row_counts(sql) == stored


def test_a_past_expiry_for_many_ids_is_refused_once_of_the_field(client, sql, stored):
    """The form has one expiry: the page says it is wrong once, not once per pasted id."""
    response = submit(
        client,
        f"{SEGMENT_PAGE}/members",
        operation="add",
        user_ids=" ".join(str(user_id) for user_id in range(1, 301)),
        expires_at="2000-01-01T00:00",
    )
    text = assert_problem_page(response, 422, "validation_failed")
    assert "Please correct: Expires at: Must be in the future. Nothing was changed." in text
    assert "Item" not in text
    assert "more." not in text
    assert row_counts(sql) == stored


def test_a_bulk_file_that_is_not_utf8_text_is_refused(client, sql, stored):
    response = client.post(
        f"{SEGMENT_PAGE}/members",
        data={
            "form_token": form_token(client),
            "operation": "add",
            "user_ids_file": (io.BytesIO(b"\xff\xfe7\x00"), "ids.txt"),
        },
        content_type="multipart/form-data",
    )
    assert "Must be a text file in UTF-8" in assert_problem_page(response, 422, "validation_failed")
    assert row_counts(sql) == stored


def test_a_form_over_the_body_limit_is_a_413_page_that_changes_nothing(client, sql, stored):
    response = submit(client, f"{SEGMENT_PAGE}/members", operation="add", user_ids="7\n" * 600_000)
    assert_problem_page(response, 413, "payload_too_large")
    assert row_counts(sql) == stored


def test_members_are_listed_fifty_a_page_in_user_order(client, stored):
    register(client, range(2, 62))
    response = client.post(
        f"/api/v1/segments/{SLUG}/members", json={"add": list(range(61, 1, -1)), "remove": []}
    )
    assert response.status_code == 200, response.get_json()

    first = client.get(SEGMENT_PAGE)
    assert listed_users(first) == list(range(1, 51))
    assert f'href="{SEGMENT_PAGE}?members_after=50"' in first.text
    second = client.get(f"{SEGMENT_PAGE}?members_after=50")
    assert listed_users(second) == list(range(51, 62))
    assert "members_after=" not in second.text
    assert "Members after user 50" in page_text(second)
    assert "No members after user 61." in page_text(client.get(f"{SEGMENT_PAGE}?members_after=61"))


# A segment's page: progress, export and deletion


def test_rollout_progress_is_json_for_the_page_script(app, client, sql):
    create_segment(client, OTHER)
    assert client.get(f"/ui/segments/{OTHER}/rollout.json").get_json() is None
    register(client, range(1, 201))
    create_segment(client, SLUG, auto_percent=50)
    expected_members = len(selected(SLUG, range(1, 201), 50))

    response = client.get(f"{SEGMENT_PAGE}/rollout.json")

    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {
        "state": "converging",
        "target_percent": "50%",
        "users_left": 200,
        "done_percent": 0,
        "member_count": 0,
    }
    converge(app)
    assert client.get(f"{SEGMENT_PAGE}/rollout.json").get_json() == {
        "state": "done",
        "target_percent": "50%",
        "users_left": 0,
        "done_percent": 100,
        "member_count": expected_members,
    }


def test_only_the_scripts_address_answers_problems_as_json(client, stored):
    """A slug may end in `.json`: its page's problems are pages like any other's."""
    response = client.get("/ui/segments/gone.json")
    assert_problem_page(response, 404, "segment_not_found")
    create_segment(client, "config.json")
    response = client.get("/ui/segments/config.json?members_after=x")
    assert_problem_page(response, 422, "validation_failed")
    response = client.get("/ui/segments/gone.json/rollout.json")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_members_csv_is_the_apis_export(client, stored):
    added = submit(client, f"{SEGMENT_PAGE}/members", operation="add", user_ids="3 2")
    assert added.status_code == 303

    response = client.get(f"{SEGMENT_PAGE}/members.csv")

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="segment-{SLUG}-members.csv"'
    )
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == "user_id;added_at;expires_at;source"
    assert [line.split(";")[0] for line in lines[1:]] == ["1", "2", "3"]
    assert response.get_data() == client.get(f"/api/v1/segments/{SLUG}/members.csv").get_data()


def test_deleting_needs_the_slug_typed_as_confirmation(client, sql, stored):
    for typed in ["", SLUG.lower(), OTHER]:
        response = submit(client, f"{SEGMENT_PAGE}/delete", confirm_slug=typed)
        text = assert_problem_page(response, 422, "validation_failed")
        assert f"Confirmation: Type the segment's slug, {SLUG}, to delete it." in text
        assert f'name="confirm_slug" autocomplete="off" value="{typed}"' in response.text
        assert row_counts(sql) == stored


def test_deleting_with_the_slug_confirmed_removes_the_segment_and_then_its_members(
    app, client, sql, stored
):
    response = submit(client, f"{SEGMENT_PAGE}/delete", confirm_slug=f" {SLUG} ")
    assert response.headers["Location"] == "/ui/segments"
    assert done(client, response).startswith(f"Deleted {SLUG}.")
    assert segment_row(sql) is None
    assert events(sql)[-1] == ("deleted", None)
    assert_problem_page(client.get(SEGMENT_PAGE), 404, "segment_not_found")
    converge(app)
    assert history(sql)[-1] == (1, "removed", "segment_deleted", None)


# Users


def test_looking_a_user_up_goes_to_its_page(client):
    response = client.get("/ui/users", query_string={"user_id": " 42 "})
    assert response.status_code == 302
    assert response.headers["Location"] == "/ui/users/42"


def test_looking_up_a_bad_user_id_is_a_422_page_that_keeps_it(client):
    response = client.get("/ui/users", query_string={"user_id": "4x2"})
    assert "User id:" in assert_problem_page(response, 422, "validation_failed")
    assert 'value="4x2"' in response.get_data(as_text=True)


def test_a_registered_users_page_lists_its_segments_and_history(client, stored):
    for change in ({"remove": [SLUG]}, {"add": [OTHER]}, {"add": [SLUG]}):
        assert change_segments(client, 1, **change).status_code == 200

    response = client.get("/ui/users/1")

    text = page_text(response)
    assert "Registered " in text
    assert "Not registered" not in text
    body = response.get_data(as_text=True)
    for slug in (SLUG, OTHER):
        assert f'href="/ui/segments/{slug}"' in body
        assert f'aria-label="Remove {slug}"' in body
    history_rows = re.findall(rf"({SLUG}|{OTHER}) (added|removed) manual", text)
    assert history_rows == [(SLUG, "added"), (OTHER, "added"), (SLUG, "removed"), (SLUG, "added")]


def test_an_unregistered_users_page_lists_the_percentage_segments_that_select_it(client, sql):
    create_segment(client, SLUG, auto_percent=50)
    create_segment(client, OTHER)
    chosen = selected(SLUG, range(1, 101), 50)
    picked, passed_over = min(chosen), min(set(range(1, 101)) - chosen)

    response = client.get(f"/ui/users/{picked}")

    text = page_text(response)
    assert "Not registered." in text
    assert "Percentage segments that select this id" in text
    assert f"{SLUG} when registered never" in text
    assert f'href="/ui/segments/{OTHER}"' not in response.get_data(as_text=True)
    assert "Remove" not in text
    other = client.get(f"/ui/users/{passed_over}")
    assert f'href="{SEGMENT_PAGE}"' not in other.get_data(as_text=True)
    assert "None." in page_text(other)
    assert sql.value("SELECT count(*) FROM users") == 0


def test_adding_a_segment_with_an_expiry_registers_the_user_and_stores_it(client, sql, stored):
    response = submit(
        client, "/ui/users/5/segments", operation="add", slug=SLUG, expires_at="2099-06-30T12:00"
    )
    assert response.headers["Location"] == "/ui/users/5"
    assert done(client, response) == f"Added {SLUG}."
    assert sql.value("SELECT count(*) FROM users WHERE user_id = 5") == 1
    assert expiries(sql)[5] == dt.datetime(2099, 6, 30, 12, tzinfo=dt.UTC)
    assert history(sql)[-1] == (5, "added", "manual", None)
    assert f"{SLUG} " in page_text(client.get("/ui/users/5"))
    assert "2099-06-30 12:00:00 UTC" in page_text(client.get("/ui/users/5"))


def test_removing_a_segment_from_a_user_records_it_in_history(client, sql, stored):
    response = submit(client, "/ui/users/1/segments", operation="remove", slug=SLUG)
    assert done(client, response) == f"Removed {SLUG}."
    assert members(sql, SLUG) == set()
    assert history(sql)[-1] == (1, "removed", "manual", None)
    text = page_text(client.get("/ui/users/1"))
    assert f"{SLUG} removed manual" in text
    assert "None." in text


def test_a_refused_removal_is_shown_by_the_segments_not_in_the_add_form(client, sql, stored):
    """A page older than the segment's deletion still offers its Remove button."""
    create_segment(client, "GONE_SOON")
    change_segments(client, 1, add=["GONE_SOON"])
    client.delete("/api/v1/segments/GONE_SOON")
    converge(client.application)
    before = row_counts(sql)
    response = submit(client, "/ui/users/1/segments", operation="remove", slug="GONE_SOON")
    assert "GONE_SOON" in assert_problem_page(response, 404, "segment_not_found")
    body = response.get_data(as_text=True)
    segments_section = body[body.index('id="segments-heading"') : body.index('id="add-heading"')]
    add_section = body[body.index('id="add-heading"') :]
    assert 'class="problem"' in segments_section
    assert 'class="problem"' not in add_section
    assert 'id="slug" name="slug" list="active-slugs" required autocomplete="off" value=""' in body
    assert row_counts(sql) == before


def test_adding_an_unknown_segment_is_a_404_that_registers_no_one(client, sql, stored):
    response = submit(client, "/ui/users/77/segments", operation="add", slug="NO_SUCH_SEGMENT")
    text = assert_problem_page(response, 404, "segment_not_found")
    assert "NO_SUCH_SEGMENT" in text
    assert "Not registered." in text
    assert 'value="NO_SUCH_SEGMENT"' in response.get_data(as_text=True)
    assert row_counts(sql) == stored


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        (
            {"operation": "add", "slug": SLUG, "expires_at": "2001-01-01T00:00"},
            "Must be in the future",
        ),
        ({"operation": "add", "slug": SLUG, "expires_at": "tomorrow"}, "Expires at:"),
        ({"operation": "add", "slug": "-bad"}, "Slug:"),
        ({"operation": "add", "slug": ""}, "Slug:"),
        ({"operation": "swap", "slug": SLUG}, "Choose to add or to remove the segment."),
    ],
)
def test_a_refused_change_of_a_users_segments_changes_nothing(client, sql, stored, fields, shown):
    response = submit(client, "/ui/users/77/segments", **fields)
    assert shown in assert_problem_page(response, 422, "validation_failed")
    assert row_counts(sql) == stored


# Reports


def utc_today(sql: Any) -> dt.date:
    return sql.value("SELECT (now() AT TIME ZONE 'UTC')::date")


def test_the_history_report_is_the_apis_csv_with_its_filters_and_delimiter(client, sql, stored):
    assert change_segments(client, 1, add=[OTHER], remove=[SLUG]).status_code == 200
    assert change_segments(client, 2, add=[SLUG]).status_code == 200
    today = utc_today(sql)
    yesterday = today - dt.timedelta(days=1)
    query = {
        "period": "days",
        "day_from": yesterday.isoformat(),
        "day_to": today.isoformat(),
        "month_from": "not looked at",
        "user_id": "1",
        "segment": SLUG,
        "delimiter": ",",
    }

    response = client.get("/ui/reports/history.csv", query_string=query)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="segsvc-history-{yesterday}_{today}-segment-{SLUG}-user-1.csv"'
    )
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == "user_id,segment,operation,at,reason,segment_id,actor"
    assert [line.split(",")[:3] for line in lines[1:]] == [
        ["1", SLUG, "added"],
        ["1", SLUG, "removed"],
    ]
    api = client.get(
        "/api/v1/reports/history.csv",
        query_string={
            "from": yesterday,
            "to": today,
            "user_id": 1,
            "segment": SLUG,
            "delimiter": ",",
        },
    )
    assert response.get_data() == api.get_data()


def test_a_history_report_for_months_defaults_to_one_month(client, sql, stored):
    month = utc_today(sql).strftime("%Y-%m")
    response = client.get(
        "/ui/reports/history.csv", query_string={"period": "month", "month_from": month}
    )
    assert response.status_code == 200
    assert response.get_data(as_text=True).splitlines()[1].startswith(f"1;{SLUG};added;")


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ({}, "Period: Choose months or days."),
        ({"period": "days", "day_from": ""}, "From:"),
        ({"period": "days", "day_from": "2023-02-30"}, "From:"),
        (
            {"period": "days", "day_from": "2023-08-02", "day_to": "2023-08-01"},
            "To: Must end after",
        ),
        ({"period": "month", "month_from": "2023-08", "user_id": "0"}, "User id:"),
        ({"period": "month", "month_from": "2023-08", "segment": "-bad"}, "Segment:"),
        ({"period": "month", "month_from": "2023-08", "delimiter": "|"}, "Separator:"),
    ],
)
def test_a_report_form_with_errors_is_shown_again_as_a_422_page(client, query, shown):
    response = client.get("/ui/reports/history.csv", query_string=query)
    assert shown in assert_problem_page(response, 422, "validation_failed")
    body = response.get_data(as_text=True)
    for name, value in query.items():
        if name in {"day_from", "day_to", "month_from", "user_id", "segment"} and value:
            assert f'name="{name}"' in body
            assert f'value="{value}"' in body


# Access: forms from elsewhere


def test_a_form_without_the_sessions_token_changes_nothing(app, client, sql, stored, subtests):
    assert post_endpoints(app) == ACTIONS.keys() | SIGN_IN_ENDPOINTS
    other_session = form_token(app.test_client())
    form_token(client)  # this session has a token of its own
    requests = [(url, fields) for url, fields in ACTIONS.values()]
    requests += [("/ui/sign-in", {"token": "x"}), ("/ui/sign-out", {})]
    for url, fields in requests:
        for sent in (None, "", "forged", other_session):
            with subtests.test(url=url, sent=sent):
                data = dict(fields) if sent is None else {**fields, "form_token": sent}
                response = client.post(url, data=data)
                assert "load the page again" in assert_problem_page(
                    response, 403, "form_not_trusted"
                )
                assert row_counts(sql) == stored


def test_the_same_actions_with_the_sessions_token_succeed(client, sql, stored, subtests):
    """The refusals above are the form token's doing, not the actions'."""
    for endpoint, (url, fields) in ACTIONS.items():
        with subtests.test(endpoint=endpoint):
            assert submit(client, url, **fields).status_code == 303
    assert segment_row(sql, "NEW") == (None, 0)
    assert segment_row(sql) is None


# Access: with API tokens


def test_without_a_session_pages_ask_to_sign_in_and_actions_are_401(secured_app, sql):
    client = secured_app.test_client()
    response = client.get("/ui/segments?q=voice")
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/ui/sign-in"
    assert parse_qs(location.query) == {"next": ["/ui/segments?q=voice"]}
    before = row_counts(sql)
    token = form_token(client, "/ui/sign-in")
    for url, fields in ACTIONS.values():
        response = client.post(url, data={"form_token": token, **fields})
        assert "sign in again" in assert_problem_page(response, 401, "unauthorized")
        assert "WWW-Authenticate" not in response.headers
    assert row_counts(sql) == before


def test_a_wrong_token_does_not_sign_in(secured_app):
    client = secured_app.test_client()
    token = form_token(client, "/ui/sign-in")
    for wrong in ("", "nope", ALICE_TOKEN + "x", f"Bearer {ALICE_TOKEN}"):
        response = client.post(
            "/ui/sign-in", data={"form_token": token, "token": wrong, "next": "/ui/users/1"}
        )
        text = assert_problem_page(response, 401, "unauthorized")
        assert "That is not one of this service's API tokens." in text
        assert "WWW-Authenticate" not in response.headers
        assert 'name="next" value="/ui/users/1"' in response.get_data(as_text=True)
    assert client.get("/ui/segments").status_code == 302


def test_signing_in_returns_to_the_page_asked_for(secured_app):
    client = secured_app.test_client()
    asked = client.get("/ui/users/1?x=1").headers["Location"]
    sign_in_page = client.get(asked)
    assert 'name="next" value="/ui/users/1?x=1"' in sign_in_page.get_data(as_text=True)
    response = client.post(
        "/ui/sign-in",
        data={
            "form_token": FORM_TOKEN.search(sign_in_page.get_data(as_text=True))[1],
            "token": f"  {ALICE_TOKEN} ",
            "next": "/ui/users/1?x=1",
        },
    )
    assert response.headers["Location"] == "/ui/users/1?x=1"
    assert done(client, response) == "Signed in as alice, with a write token."
    assert "Signed in as alice write" in page_text(client.get("/ui/users/1"))


@pytest.mark.parametrize(
    "next_page",
    [
        "https://evil.example/ui/segments",
        "//evil.example/ui/segments",
        "/\\evil.example",
        "/ui\\..\\evil",
        "/api/v1/segments",
        "/uix",
        "",
    ],
)
def test_signing_in_never_returns_outside_the_console(secured_app, next_page):
    client = secured_app.test_client()
    page = client.get("/ui/sign-in", query_string={"next": next_page})
    assert 'name="next" value="/ui/segments"' in page.get_data(as_text=True)
    response = client.post(
        "/ui/sign-in",
        data={
            "form_token": FORM_TOKEN.search(page.get_data(as_text=True))[1],
            "token": ALICE_TOKEN,
            "next": next_page,
        },
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/ui/segments"


def test_signing_in_gives_the_session_a_new_form_token(secured_app, sql):
    client = secured_app.test_client()
    before_sign_in = form_token(client, "/ui/sign-in")
    client.post("/ui/sign-in", data={"form_token": before_sign_in, "token": ALICE_TOKEN})
    assert form_token(client) != before_sign_in
    response = client.post("/ui/segments", data={"form_token": before_sign_in, "slug": "NEW"})
    assert_problem_page(response, 403, "form_not_trusted")
    assert segment_row(sql, "NEW") is None


def test_a_secured_console_never_claims_open_access(secured_app):
    """The badge says SEGSVC_API_TOKENS is not set: on a secured service's sign-in page and on
    its refusals of a session that has not signed in, that is false."""
    client = secured_app.test_client()
    sign_in_page = client.get("/ui/sign-in")
    refused = client.post(
        "/ui/segments", data={"form_token": form_token(client, "/ui/sign-in"), "slug": "NEW"}
    )
    assert refused.status_code == 401
    for response in (sign_in_page, refused):
        assert "open access" not in page_text(response)
        assert "SEGSVC_API_TOKENS is not set" not in response.get_data(as_text=True)


def test_a_next_page_with_a_line_break_falls_back_to_the_segments(client, secured_app):
    """A link to the sign-in page can carry any `next`: none may make the sign-in fail."""
    next_page = "/ui/segments\r\nSet-Cookie: planted=1"
    response = client.get("/ui/sign-in", query_string={"next": next_page})
    assert response.status_code == 302
    assert response.headers["Location"] == "/ui/segments"
    secured = secured_app.test_client()
    token = form_token(secured, "/ui/sign-in")
    response = secured.post(
        "/ui/sign-in", data={"form_token": token, "token": ALICE_TOKEN, "next": next_page}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/ui/segments"


def test_a_read_token_sees_every_page_but_changes_nothing(secured_app, sql, subtests):
    client = signed_in(secured_app, BOB_TOKEN)
    for url in ["/ui/segments", SEGMENT_PAGE, "/ui/users/1", "/ui/users/9", "/ui/reports"]:
        with subtests.test(url=url):
            text = page_text(client.get(url))
            assert "Signed in as bob read" in text
            for form in (
                "Create a segment",
                "Save description",
                "Delete",
                "Add a segment",
                "Remove",
            ):
                assert form not in text
    for url in [
        f"{SEGMENT_PAGE}/rollout.json",
        f"{SEGMENT_PAGE}/members.csv",
        "/ui/reports/history.csv?period=month&month_from=2023-08",
    ]:
        assert client.get(url).status_code == 200, url
    before = row_counts(sql)
    for url, fields in ACTIONS.values():
        with subtests.test(url=url):
            response = submit(client, url, **fields)
            assert "read token" in assert_problem_page(response, 403, "forbidden")
            assert row_counts(sql) == before


def test_changes_with_a_write_token_record_its_name_as_the_actor(secured_app, sql):
    client = signed_in(secured_app, ALICE_TOKEN)
    for url, fields in ACTIONS.values():
        assert submit(client, url, **fields).status_code == 303, url
    assert events(sql, "NEW") == [("created", "alice")]
    assert events(sql) == [
        ("created", "alice"),  # through the API with alice's token
        ("description_changed", "alice"),
        ("percentage_changed", "alice"),
        ("deleted", "alice"),
    ]
    assert [row for row in history(sql) if row[2] == "manual"] == [
        (1, "added", "manual", "alice"),
        (2, "added", "manual", "alice"),
        (3, "added", "manual", "alice"),
        (4, "added", "manual", "alice"),
    ]


def test_signing_out_ends_the_session(secured_app):
    client = signed_in(secured_app, ALICE_TOKEN)
    response = submit(client, "/ui/sign-out")
    assert response.status_code == 303
    assert response.headers["Location"] == "/ui/sign-in"
    assert client.get("/ui/segments").status_code == 302
    token = form_token(client, "/ui/sign-in")
    response = client.post("/ui/segments", data={"form_token": token, "slug": "NEW"})
    assert_problem_page(response, 401, "unauthorized")


def test_a_copy_of_a_signed_out_sessions_cookie_is_worth_nothing(secured_app, sql):
    """The cookie is signed, not stored: a copy taken before the sign-out (a shared machine, a
    proxy's log) would still be good for 12 hours if the service did not remember the sign-out."""
    alice = signed_in(secured_app, ALICE_TOKEN)
    token, cookie = form_token(alice), session_cookie(alice)
    assert submit(alice, "/ui/sign-out").status_code == 303
    assert sql.value(
        "SELECT kept_until - now() BETWEEN interval '11 hours 59 minutes' AND interval '12 hours'"
        " FROM console_sign_outs"
    )

    copy = secured_app.test_client()
    copy.set_cookie(SESSION_COOKIE, cookie, path=PREFIX)
    response = copy.get("/ui/segments")
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/ui/sign-in"
    response = copy.post(
        f"{SEGMENT_PAGE}/description", data={"form_token": token, "description": "replayed"}
    )
    assert_problem_page(response, 401, "unauthorized")
    assert segment_row(sql) == (None, 0)
    assert "Signed in as alice" in page_text(
        signed_in(secured_app, ALICE_TOKEN).get("/ui/segments")
    )


def test_sign_outs_are_forgotten_once_every_cookie_of_their_session_has_expired(secured_app, sql):
    sql.execute(
        "INSERT INTO console_sign_outs VALUES (sha256('old'), now() - interval '1 second'),"
        " (sha256('recent'), now() + interval '1 hour')"
    )
    assert submit(signed_in(secured_app, ALICE_TOKEN), "/ui/sign-out").status_code == 303
    kept = sql.rows(
        "SELECT CASE session_digest WHEN sha256('old') THEN 'old' WHEN sha256('recent')"
        " THEN 'recent' ELSE 'this one' END FROM console_sign_outs ORDER BY 1"
    )
    assert kept == [("recent",), ("this one",)]


def test_the_session_keeps_a_keyed_digest_of_its_token_never_the_token(secured_app):
    """Anyone can read a signed cookie: a plain SHA-256 of a short token could be guessed."""
    cookie = session_cookie(signed_in(secured_app, ALICE_TOKEN))
    stored = secured_app.session_interface.get_signing_serializer(secured_app).loads(cookie)
    plain_digest = hashlib.sha256(ALICE_TOKEN.encode()).hexdigest()
    assert ALICE_TOKEN not in str(stored)
    assert plain_digest not in str(stored)
    assert stored["token_mark"] == (
        hmac.new(SECRET_KEY.encode(), bytes.fromhex(plain_digest), "sha256").hexdigest()
    )


@pytest.mark.parametrize("sent", ["é", "ü" * 43, "\u2028", "x" * 5000])
def test_a_form_token_in_any_characters_is_refused_as_untrusted(client, sql, stored, sent):
    form_token(client)
    response = client.post(f"{SEGMENT_PAGE}/description", data={"form_token": sent})
    assert_problem_page(response, 403, "form_not_trusted")
    response = client.post("/ui/sign-out", data={"form_token": sent})
    assert_problem_page(response, 403, "form_not_trusted")
    assert row_counts(sql) == stored


def test_a_page_opened_from_another_sites_link_loads_itself_again_with_the_cookie(secured_app):
    """A browser keeps a SameSite=Strict cookie back when another site's link opens a page: the
    page must not ask a signed-in person to sign in, nor give them a new cookie for theirs."""
    arriving = secured_app.test_client()
    response = arriving.get(
        "/ui/segments?q=voice",
        headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
    )
    body = assert_page(response)
    assert '<meta http-equiv="refresh" content="0">' in body
    assert 'href="/ui/segments?q=voice"' in body
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    # Loaded again from itself, the page is the segments, or the sign-in of a browser without a
    # session; a request of this site's own is answered as always.
    for site in ("same-origin", "none"):
        response = arriving.get("/ui/segments", headers={"Sec-Fetch-Site": site})
        assert response.status_code == 302, site
    alice = signed_in(secured_app, ALICE_TOKEN)
    response = alice.get("/ui/segments", headers={"Sec-Fetch-Site": "cross-site"})
    assert "Signed in as alice" in page_text(response)  # a browser that did send the cookie


def test_a_session_whose_token_was_removed_is_signed_out(make_app, secured_app):
    """A restart with the same secret key keeps a session only while its token is configured."""
    alice = signed_in(secured_app, ALICE_TOKEN)
    token, cookie = form_token(alice), session_cookie(alice)

    def restarted_with(tokens: str) -> Any:
        app = make_app(api_tokens=parse_api_tokens(tokens), secret_key=SECRET_KEY)
        client = app.test_client()
        client.set_cookie(SESSION_COOKIE, cookie, path=PREFIX)
        return client

    assert "Signed in as alice" in page_text(restarted_with(TOKENS).get("/ui/segments"))
    without_alice = restarted_with(f"bob:read:{BOB_TOKEN}")
    response = without_alice.get("/ui/segments")
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/ui/sign-in"
    response = without_alice.post("/ui/segments", data={"form_token": token, "slug": "NEW"})
    assert_problem_page(response, 401, "unauthorized")


def test_static_assets_need_no_session_and_never_carry_one(secured_app):
    response = secured_app.test_client().get("/ui/static/console.js")
    assert response.status_code == 200
    response.close()
    # Caches may keep an asset for a year: one that set a session cookie would hand it out.
    response = signed_in(secured_app, ALICE_TOKEN).get("/ui/static/console.css")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert "Cookie" not in response.headers.get("Vary", "")
    response.close()


# Cookies and headers


def test_the_session_cookie_is_http_only_strict_and_kept_to_the_console(client, make_app):
    (cookie,) = client.get("/ui/segments").headers.getlist("Set-Cookie")
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0].startswith(f"{SESSION_COOKIE}=")
    assert {"HttpOnly", f"Path={PREFIX}", "SameSite=Strict"} <= set(attributes)
    assert "Secure" not in attributes
    for public_url in ("https://segsvc.example", "HTTPS://SEGSVC.EXAMPLE"):
        behind_https = make_app(public_url=public_url).test_client()
        (cookie,) = behind_https.get("/ui/segments").headers.getlist("Set-Cookie")
        assert "Secure" in [part.strip() for part in cookie.split(";")], public_url


def test_api_responses_never_set_a_cookie(app, client, stored):
    form_token(client)
    cookie = session_cookie(client)
    raw = app.test_client(use_cookies=False)
    for method, url, body in [
        ("GET", "/api/v1/segments", None),
        ("GET", "/api/v1/users/1/segments", None),
        ("PATCH", "/api/v1/users/1/segments", {"add": [OTHER]}),
        ("GET", "/api/v1/nothing-here", None),
        ("GET", "/healthz", None),
    ]:
        response = raw.open(
            url, method=method, json=body, headers={"Cookie": f"{SESSION_COOKIE}={cookie}"}
        )
        assert response.status_code < 500
        assert "Set-Cookie" not in response.headers, url
        assert "Cookie" not in response.headers.get("Vary", ""), url


def test_console_answers_send_the_security_headers_and_are_not_stored(client, stored, subtests):
    token = form_token(client)
    answers = {
        "page": client.get("/ui/segments"),
        "redirect": client.get("/ui/"),
        "problem page": client.get("/ui/segments/NO_SUCH_SEGMENT"),
        "refused form": client.post(f"{SEGMENT_PAGE}/delete", data={"form_token": token}),
        "done form": client.post(
            f"{SEGMENT_PAGE}/description", data={"form_token": token, "description": "d"}
        ),
        "csv": client.get(f"{SEGMENT_PAGE}/members.csv"),
        "json": client.get(f"{SEGMENT_PAGE}/rollout.json"),
    }
    for kind, response in answers.items():
        with subtests.test(kind=kind):
            for name, value in SECURITY_HEADERS.items():
                assert response.headers.get(name) == value
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Cache-Control"] == "no-store"
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_a_configured_secret_key_is_kept_and_a_missing_one_takes_the_instances(make_app):
    configured = make_app(secret_key=SECRET_KEY)
    unset = make_app()
    instance_key = "the-key-the-gunicorn-master-made-for-all-workers"

    share_secret_key(configured, instance_key)
    share_secret_key(unset, instance_key)

    assert configured.secret_key == SECRET_KEY
    assert unset.secret_key == instance_key


def test_a_secret_key_short_enough_to_guess_stops_the_start():
    with pytest.raises(ConfigError, match="SEGSVC_SECRET_KEY must be at least 32 characters"):
        Config.from_environ({"DATABASE_URL": "postgresql://x/y", "SEGSVC_SECRET_KEY": "short"})
    environ = {"DATABASE_URL": "postgresql://x/y", "SEGSVC_SECRET_KEY": f" {SECRET_KEY} "}
    assert Config.from_environ(environ).secret_key == SECRET_KEY
    assert SECRET_KEY not in repr(Config.from_environ(environ))


def test_a_missing_secret_key_is_warned_about_at_start(make_app, caplog):
    make_app()
    assert "SEGSVC_SECRET_KEY is not set: web console sessions last until the service restarts" in (
        caplog.text
    )
    caplog.clear()
    make_app(secret_key=SECRET_KEY)
    assert "SEGSVC_SECRET_KEY" not in caplog.text
