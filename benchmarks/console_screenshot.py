"""Makes docs/console-segment.png, the README's picture of a segment's page in the web console:
`make screenshot`. segsvc is served as `make run` serves it, on a database of its own (as the
benchmarks get theirs), filled through the API, and shot in headless Chromium as the browser
tests drive it (tests/browser.py)."""

import sys
import tempfile
import time
from pathlib import Path

from benchmarks.support import PROJECT, Served, bench_database, call_api

sys.path.insert(0, str(PROJECT / "tests"))
from browser import navigating, start_chromium, wait_until

SLUG = "AVITO_VOICE_MESSAGES"
OUTPUT = PROJECT / "docs" / "console-segment.png"


def _api(port: int, method: str, path: str, body: object = None) -> None:
    status, answer = call_api(port, method, path, body)
    if not isinstance(status, int) or status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {answer[:200]!r}")


def fill(port: int) -> None:
    """A segment a team is ramping: created, described, members added by hand and by share."""
    _api(port, "POST", "/api/v1/users", {"user_ids": list(range(1000, 6000))})
    _api(port, "POST", "/api/v1/segments", {"slug": SLUG, "description": "Voice messages"})
    _api(port, "POST", "/api/v1/segments", {"slug": "AVITO_DISCOUNT_30"})
    _api(port, "PATCH", f"/api/v1/segments/{SLUG}", {"description": "Voice messages in chats"})
    _api(port, "POST", f"/api/v1/segments/{SLUG}/members", {"add": [1000, 1002, 1003]})
    _api(port, "PATCH", f"/api/v1/segments/{SLUG}", {"auto_percent": 10})


def main() -> None:
    with bench_database() as database_url, Served(database_url) as served:
        fill(served.port)
        with tempfile.TemporaryDirectory() as downloads:
            browser = start_chromium(Path(downloads), width=1200, height=1500)
            try:
                browser.get(f"{served.base_url}/ui/segments/{SLUG}")
                wait_until(
                    lambda: "Done" in browser.find_element("css selector", ".progress-text").text,
                    "the rollout to converge",
                )
                navigating(browser, browser.refresh)
                time.sleep(0.5)
                browser.save_screenshot(str(OUTPUT))
            finally:
                browser.quit()
    print(f"wrote {OUTPUT.relative_to(PROJECT)}")


if __name__ == "__main__":
    main()
