"""The web console in a real browser: Debian's Chromium, headless, through selenium, against the
service as `make run` serves it (gunicorn, two workers, the scheduler running); and its sessions
across that instance's workers.

Each test drives the pages as an analyst would (typing, clicking, keyboard), then checks the
database behind them. tests/test_console.py covers every route with Flask's client.
"""

import contextlib
import csv
import datetime as dt
import http.cookiejar
import http.server
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import navigating, start_chromium, wait_until
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from serving import Launcher, call
from support import selected

READ_TOKEN = "dashboards:read:read-token-0123456789"
WRITE_TOKEN = "analysts:write:write-token-0123456789"


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    directory = tmp_path / "downloads"
    directory.mkdir()
    return directory


@pytest.fixture
def browser(downloads: Path) -> Iterator[Any]:
    driver = start_chromium(downloads)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def serve(
    start_launcher: Callable[..., Launcher], database_url_for_test: str
) -> Callable[..., Launcher]:
    """Starts the service on the test's database, with the given settings."""

    def start(**settings: str) -> Launcher:
        launcher = start_launcher(
            DATABASE_URL=database_url_for_test, SEGSVC_ROLLOUT_CHUNK_USERS="100", **settings
        )
        launcher.wait_until_healthy()
        return launcher

    return start


def page(launcher: Launcher, path: str) -> str:
    return f"http://127.0.0.1:{launcher.port}{path}"


def api(launcher: Launcher, method: str, path: str, body: Any = None) -> Any:
    status, answer = call(launcher.port, method, path, body)
    assert status < 300, answer
    return answer


def post_form(browser: Any, form_selector: str) -> None:
    button = browser.find_element(By.CSS_SELECTOR, f"{form_selector} button[type=submit]")
    navigating(browser, button.click)


def type_and_enter(browser: Any, element_id: str, text: str) -> None:
    field = browser.find_element(By.ID, element_id)
    navigating(browser, lambda: field.send_keys(text, Keys.ENTER))


def notice(browser: Any) -> str:
    return browser.find_element(By.CSS_SELECTOR, "p.notice").text


def test_an_analyst_creates_a_segment_and_ramps_it_until_the_rollout_is_done(serve, browser, sql):
    launcher = serve()
    users = range(1, 2001)
    api(launcher, "POST", "/api/v1/users", {"user_ids": list(users)})
    browser.get(page(launcher, "/ui/segments"))

    browser.find_element(By.ID, "slug").send_keys("AVITO_VOICE_MESSAGES")
    browser.find_element(By.ID, "description").send_keys("Voice messages in chats")
    post_form(browser, "form[method=post][action='/ui/segments']")
    assert notice(browser) == "Created AVITO_VOICE_MESSAGES."
    assert browser.find_element(By.TAG_NAME, "h1").text == "AVITO_VOICE_MESSAGES"

    browser.find_element(By.ID, "auto_percent").clear()
    type_and_enter(browser, "auto_percent", "30")
    confirmation = browser.find_element(By.ID, "ramp-confirm").text
    assert "from 0% to 30% adds about 600 of the 2,000 registered users" in confirmation
    assert sql.value("SELECT auto_percent FROM segments") == 0  # nothing changes before confirming
    post_form(browser, "#ramp-confirm")
    assert notice(browser) == "AVITO_VOICE_MESSAGES is now at 30%; its rollout has started."

    browser.execute_script("window.notReloaded = true")
    wait_until(
        lambda: browser.find_element(By.CSS_SELECTOR, ".progress-text").text.startswith("Done"),
        "the rollout to show done",
    )
    expected = selected("AVITO_VOICE_MESSAGES", users, 30)
    assert browser.find_element(By.CSS_SELECTOR, ".progress-text").text == "Done: at 30%"
    assert (
        browser.find_element(By.CSS_SELECTOR, ".progress progress").get_attribute("value") == "100"
    )
    assert browser.find_element(By.ID, "member-count").text == f"{len(expected):,}"
    assert browser.execute_script("return window.notReloaded") is True  # the script updated it
    members = sql.rows("SELECT user_id FROM memberships WHERE source = 'auto'")
    assert {user_id for (user_id,) in members} == expected


def test_pasted_ids_are_added_in_bulk(serve, browser, sql):
    launcher = serve()
    api(launcher, "POST", "/api/v1/segments", {"slug": "AVITO_DISCOUNT_30"})
    browser.get(page(launcher, "/ui/segments/AVITO_DISCOUNT_30"))

    browser.find_element(By.ID, "user_ids").send_keys("1001\n1002, 1003\n1003  1004\n")
    post_form(browser, "form[action$='/members']")

    assert notice(browser) == "4 added, 0 renewed, 0 removed; AVITO_DISCOUNT_30 has 4 members."
    listed = browser.find_elements(By.CSS_SELECTOR, "#members-heading ~ table tbody td:first-child")
    assert [cell.text for cell in listed] == ["1001", "1002", "1003", "1004"]
    assert sql.rows("SELECT user_id, operation, reason FROM membership_history ORDER BY 1") == [
        (user_id, "added", "manual") for user_id in (1001, 1002, 1003, 1004)
    ]


def test_a_refused_bulk_change_shows_why_and_changes_nothing(serve, browser, sql):
    launcher = serve()
    api(launcher, "POST", "/api/v1/segments", {"slug": "AVITO_DISCOUNT_30"})
    browser.get(page(launcher, "/ui/segments/AVITO_DISCOUNT_30"))

    browser.find_element(By.ID, "user_ids").send_keys("1001\n10O2\n")
    post_form(browser, "form[action$='/members']")

    problem = browser.find_element(By.CSS_SELECTOR, ".problem")
    assert "“10O2”: Must be an integer from 1 to 9223372036854775807." in problem.text
    assert browser.switch_to.active_element == problem  # focus moves to it, for keyboards
    assert browser.find_element(By.ID, "user_ids").get_attribute("value") == "1001\n10O2\n"
    assert sql.value("SELECT count(*) FROM users") == 0
    assert sql.value("SELECT count(*) FROM membership_history") == 0


def test_a_user_is_looked_up_and_given_a_segment_with_an_expiry(serve, browser, sql):
    launcher = serve()
    api(launcher, "POST", "/api/v1/segments", {"slug": "AVITO_DISCOUNT_50"})
    api(launcher, "POST", "/api/v1/segments", {"slug": "AVITO_HALF", "auto_percent": 50})
    browser.get(page(launcher, "/ui/segments"))

    navigating(browser, browser.find_element(By.LINK_TEXT, "Users").click)
    type_and_enter(browser, "user_id", "1000")
    assert browser.find_element(By.TAG_NAME, "h1").text == "User 1000"
    assert "Not registered" in browser.find_element(By.TAG_NAME, "main").text
    half = {"AVITO_HALF"} if selected("AVITO_HALF", [1000], 50) else set()
    assert set(_segment_cells(browser)) == half

    browser.find_element(By.ID, "slug").send_keys("AVITO_DISCOUNT_50")
    browser.execute_script("document.getElementById('expires_at').value = '2031-02-03T04:05:06'")
    post_form(browser, "form[action$='/segments']:not(.inline)")

    assert notice(browser) == "Added AVITO_DISCOUNT_50."
    rows = browser.find_elements(By.CSS_SELECTOR, "#segments-heading ~ table tbody tr")
    shown = {row.find_element(By.TAG_NAME, "td").text: row.text for row in rows}
    assert set(shown) == {"AVITO_DISCOUNT_50", *half}
    assert "2031-02-03 04:05:06 UTC" in shown["AVITO_DISCOUNT_50"]
    assert sql.value(
        "SELECT m.expires_at FROM memberships m JOIN segments s USING (segment_id)"
        " WHERE m.user_id = 1000 AND s.slug = 'AVITO_DISCOUNT_50'"
    ) == dt.datetime(2031, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    history = browser.find_element(By.CSS_SELECTOR, "#history-heading ~ table tbody").text
    assert "AVITO_DISCOUNT_50 added manual" in history


def _segment_cells(browser: Any) -> list[str]:
    cells = browser.find_elements(By.CSS_SELECTOR, "#segments-heading ~ table tbody td:first-child")
    return [cell.text for cell in cells if cell.text != "None."]


def test_a_day_range_report_downloads_with_its_rows(serve, browser, downloads, sql):
    launcher = serve()
    api(launcher, "POST", "/api/v1/segments", {"slug": "AVITO_VOICE_MESSAGES"})
    api(launcher, "POST", "/api/v1/segments", {"slug": "AVITO_DISCOUNT_30"})
    for user_id in (7, 8):
        api(
            launcher,
            "PATCH",
            f"/api/v1/users/{user_id}/segments",
            {"add": ["AVITO_VOICE_MESSAGES", "AVITO_DISCOUNT_30"]},
        )
    api(launcher, "PATCH", "/api/v1/users/7/segments", {"remove": ["AVITO_DISCOUNT_30"]})
    today = dt.datetime.now(dt.UTC).date()
    browser.get(page(launcher, "/ui/reports"))

    browser.find_element(By.CSS_SELECTOR, "input[name=period][value=days]").click()
    assert not browser.find_element(By.ID, "month_from").is_displayed()
    browser.execute_script(
        "document.getElementById('day_from').value = arguments[0];"
        "document.getElementById('day_to').value = arguments[1];",
        (today - dt.timedelta(days=1)).isoformat(),
        today.isoformat(),
    )
    browser.find_element(By.ID, "user_id").send_keys("7")
    browser.find_element(By.CSS_SELECTOR, "#report-form button[type=submit]").click()

    name = f"segsvc-history-{today - dt.timedelta(days=1)}_{today}-user-7.csv"
    report = wait_until(lambda: _finished(downloads / name), f"{name} to download")
    rows = list(csv.reader(report.read_text().splitlines(), delimiter=";"))
    assert rows[0] == ["user_id", "segment", "operation", "at", "reason", "segment_id", "actor"]
    stored = sql.rows(
        "SELECT h.user_id::text, s.slug, h.operation,"
        " to_char(h.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), h.reason"
        " FROM membership_history h JOIN segments s USING (segment_id)"
        " WHERE h.user_id = 7 ORDER BY h.at, h.history_id"
    )
    assert [tuple(row[:5]) for row in rows[1:]] == stored
    assert sorted((row[1], row[2]) for row in rows[1:]) == [
        ("AVITO_DISCOUNT_30", "added"),
        ("AVITO_DISCOUNT_30", "removed"),
        ("AVITO_VOICE_MESSAGES", "added"),
    ]


def _finished(path: Path) -> Path | None:
    """The download, once Chromium has written it whole (it writes to `.crdownload` first)."""
    return path if path.exists() and path.stat().st_size > 0 else None


def _sign_in(browser: Any, launcher: Launcher, token: str) -> None:
    browser.get(page(launcher, "/ui/segments"))
    assert "/ui/sign-in?next=/ui/segments" in browser.current_url
    type_and_enter(browser, "token", token.rsplit(":", 1)[1])


def test_a_read_token_sees_everything_and_can_change_nothing(serve, browser, sql):
    launcher = serve(SEGSVC_API_TOKENS=f"{READ_TOKEN},{WRITE_TOKEN}")
    _sign_in(browser, launcher, READ_TOKEN)
    assert notice(browser) == "Signed in as dashboards, with a read token."
    assert sql.value("SELECT count(*) FROM segments") == 0
    assert not browser.find_elements(By.ID, "create-heading")

    # A change sent anyway, with the session's own form token, is refused.
    form_token = browser.find_element(By.NAME, "form_token").get_attribute("value")
    navigating(
        browser,
        lambda: browser.execute_script(
            """const form = document.createElement('form');
        form.method = 'post'; form.action = '/ui/segments';
        for (const [name, value] of [['form_token', arguments[0]], ['slug', 'SNEAKY']]) {
          const input = document.createElement('input');
          input.name = name; input.value = value; form.appendChild(input);
        }
        document.body.appendChild(form); form.submit();""",
            form_token,
        ),
    )
    problem = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".problem"), "refusal")
    assert "You signed in with a read token" in problem[0].text
    assert "forbidden" in problem[0].text
    assert sql.value("SELECT count(*) FROM segments") == 0


def test_a_write_token_changes_are_recorded_under_its_name(serve, browser, sql):
    launcher = serve(SEGSVC_API_TOKENS=f"{READ_TOKEN},{WRITE_TOKEN}")
    _sign_in(browser, launcher, WRITE_TOKEN)
    browser.find_element(By.ID, "slug").send_keys("AVITO_VOICE_MESSAGES")
    post_form(browser, "form[method=post][action='/ui/segments']")
    browser.find_element(By.ID, "user_ids").send_keys("5")
    post_form(browser, "form[action$='/members']")

    assert sql.rows("SELECT kind, actor FROM segment_events") == [("created", "analysts")]
    assert sql.rows("SELECT user_id, actor FROM membership_history") == [(5, "analysts")]


class _OtherSitePage(http.server.BaseHTTPRequestHandler):
    """Another site's page (localhost is not 127.0.0.1 to a browser's SameSite rules)."""

    body = ""

    def do_GET(self) -> None:
        body = self.body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def other_site(body: str) -> Iterator[str]:
    """Serves `body` on another site while in the block; yields its address."""
    handler = type("Page", (_OtherSitePage,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_forged_cross_site_form_post_is_refused(serve, browser, sql):
    launcher = serve()
    browser.get(page(launcher, "/ui/segments"))  # the browser has a console session
    forging_page = (
        f'<form id="f" method="post" action="{page(launcher, "/ui/segments")}">'
        '<input name="slug" value="FORGED"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )
    with other_site(forging_page) as address:
        browser.get(address)
        problem = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, ".problem"), "refusal")
    assert browser.title.startswith("Form not trusted")
    assert "form_not_trusted" in problem[0].text
    assert sql.value("SELECT count(*) FROM segments") == 0


def test_a_link_from_another_site_keeps_the_session(serve, browser, sql):
    """A SameSite=Strict cookie is not sent when another site's link opens the console: the
    page it lands on must not answer as if signed out and replace the session's cookie."""
    launcher = serve(SEGSVC_API_TOKENS=WRITE_TOKEN)
    _sign_in(browser, launcher, WRITE_TOKEN)
    target = page(launcher, "/ui/reports")
    with other_site(f'<a id="link" href="{target}">the reports</a>') as address:
        browser.get(address)
        navigating(browser, browser.find_element(By.ID, "link").click)
        wait_until(lambda: browser.current_url == target, "the reports page")
        assert "Signed in as analysts" in browser.find_element(By.TAG_NAME, "header").text
        browser.get(page(launcher, "/ui/segments"))  # and the session is still there
        assert browser.current_url == page(launcher, "/ui/segments")

        # A browser without a session lands on the sign-in page (the page reloads once).
        browser.delete_all_cookies()
        browser.get(address)
        navigating(browser, browser.find_element(By.ID, "link").click)
        wait_until(lambda: "/ui/sign-in?next=" in browser.current_url, "the sign-in page")


def test_every_console_page_can_be_used_from_the_keyboard(serve, browser, sql):
    launcher = serve()
    browser.get(page(launcher, "/ui/segments"))
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    skip = browser.switch_to.active_element
    assert skip.text == "Skip to content"
    skip.send_keys(Keys.ENTER)
    # From the content, the filter and the create form are reached with Tab alone.
    reached = []
    for _ in range(8):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        reached.append(browser.switch_to.active_element.get_attribute("id"))
    assert "filter" in reached
    assert "slug" in reached
    browser.find_element(By.ID, "slug").send_keys("KEYBOARD_ONLY", Keys.TAB)
    percentage = browser.switch_to.active_element
    assert percentage.get_attribute("id") == "auto_percent"
    navigating(browser, lambda: percentage.send_keys(Keys.ENTER))
    assert notice(browser) == "Created KEYBOARD_ONLY."
    assert sql.value("SELECT slug FROM segments") == "KEYBOARD_ONLY"


def test_a_session_signed_in_on_one_worker_is_good_on_every_worker(serve):
    """Without SEGSVC_SECRET_KEY each instance makes one key, shared by its workers: a key per
    worker would sign a session out whenever another worker answered."""
    launcher = serve(SEGSVC_API_TOKENS=WRITE_TOKEN, SEGSVC_SECRET_KEY=None)
    assert launcher.workers == 2
    cookies = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(cookies)
    )
    with opener.open(page(launcher, "/ui/sign-in"), timeout=5) as response:
        form_token = re.search(r'name="form_token" value="([^"]+)"', response.read().decode())[1]
    fields = {"form_token": form_token, "token": WRITE_TOKEN.rsplit(":", 1)[1]}
    with opener.open(
        page(launcher, "/ui/sign-in"), urllib.parse.urlencode(fields).encode(), timeout=5
    ) as response:
        assert response.url == page(launcher, "/ui/segments")
    # urllib opens a connection per request, which either worker may accept.
    for _ in range(40):
        with opener.open(page(launcher, "/ui/segments"), timeout=5) as response:
            assert response.url == page(launcher, "/ui/segments")  # not sent to sign in
            assert "Signed in as <strong>analysts</strong>" in response.read().decode()
