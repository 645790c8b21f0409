"""What the console tests share: a served app on its own event loop thread (Selenium's
calls block, so the server cannot share the test's loop), headless Chromium from the
system packages, and sign-in helpers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 15.0  # seconds: every browser wait is bounded by this


class LoopThread:
    """An asyncio loop on a thread of its own; `run` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="console-test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def served(loop: LoopThread, enter: Callable[[], contextlib.AbstractAsyncContextManager[str]]) -> Iterator[str]:
    """Enter an async context manager yielding a URL on the loop thread; exit it after."""
    manager = enter()
    url = loop.run(manager.__aenter__())
    try:
        yield url
    finally:
        loop.run(manager.__aexit__(None, None, None))


def browser_or_skip() -> Any:
    """Headless Chromium through Selenium, with the system's chromedriver (nothing is
    downloaded: both paths are given, so Selenium Manager is never asked)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail("chromium and chromium-driver are required (apt-get install -y chromium chromium-driver)")
        pytest.skip("browser tests need Debian's chromium and chromium-driver packages")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"corral-console-chromium-{os.getpid()}-{threading.get_ident()}"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.corral_profile = profile
    return driver


def close_browser(driver: Any) -> None:
    profile = driver.corral_profile
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(check: Callable[[], T], what: str, within: float = WAIT) -> T:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # A live part may replace an element between finding and reading it: read again.
    ignored = (NoSuchElementException, StaleElementReferenceException)
    result: T = WebDriverWait(None, within, poll_frequency=0.1, ignored_exceptions=ignored).until(
        lambda _: check(), what)
    return result


def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests save page screenshots (``CORRAL_CONSOLE_SCREENSHOTS`` to keep them)."""
    chosen = os.environ.get("CORRAL_CONSOLE_SCREENSHOTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("console-screens")


def browser_sign_in(driver: Any, base: str, secret: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/ui/login")
    driver.find_element(By.NAME, "secret").send_keys(secret)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(lambda: "/ui/login" not in driver.current_url, "the sign-in to land on a page")


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def http_sign_in(client: httpx.AsyncClient, secret: str) -> httpx.Response:
    page = await client.get("/ui/login")
    match = CSRF.search(page.text)
    assert match, page.text
    return await client.post("/ui/login", data={"csrf": match.group(1), "secret": secret, "next": ""})


async def csrf_of(client: httpx.AsyncClient, path: str) -> str:
    match = CSRF.search((await client.get(path)).text)
    assert match
    return match.group(1)


Probe = Callable[[], Awaitable[bool]]
