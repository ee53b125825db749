"""Debian's Chromium, headless, driven by selenium through Debian's chromedriver (`make test`
installs both when missing; nothing is downloaded)."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_SECONDS = 20
_OLD_PAGE_MARK = "segsvcPageBeforeAction"  # set on a page's window before leaving it


def start_chromium(download_directory: Path, width: int = 1280, height: int = 1000) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root
        "--disable-dev-shm-usage",
        "--no-proxy-server",  # the service is on this machine
        f"--window-size={width},{height}",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(download_directory),
            "download.prompt_for_download": False,
        },
    )
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_until(condition: Callable[[], Any], what: str, seconds: float = WAIT_SECONDS) -> Any:
    """Polls `condition` until it returns something true, and returns that."""
    deadline = time.monotonic() + seconds
    while True:
        found = condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def navigating(browser: Any, action: Callable[[], Any]) -> None:
    """Runs `action` (a click, an Enter) and waits until the page it leads to has loaded.

    The old page is marked on its `window`, which a new document does not share; asking the old
    page's elements whether they are stale instead races its teardown (chromedriver then answers
    "Node with given id does not belong to the document", not a stale-element error)."""
    browser.execute_script(f"window.{_OLD_PAGE_MARK} = true")
    action()
    wait_until(lambda: _next_page_loaded(browser), "the next page to load")


def _next_page_loaded(browser: Any) -> bool:
    try:
        return browser.execute_script(
            f"return !window.{_OLD_PAGE_MARK} && document.readyState === 'complete'"
        )
    except WebDriverException:  # a command that met the old document going away: not there yet
        return False
