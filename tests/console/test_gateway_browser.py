"""The gateway console in real headless Chromium: sign in, create a key, watch a request
arrive in the charts without a reload, start a run and follow it live; a screenshot of
each main page is saved."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.console.gateway_app import MASTER, gateway_app
from tests.console.harness import (
    LoopThread,
    browser_or_skip,
    browser_sign_in,
    close_browser,
    screenshot_dir,
    served,
    wait_for,
)

from corral.testing.server import serve_app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = browser_or_skip()
    try:
        yield driver
    finally:
        close_browser(driver)


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    loop = LoopThread()
    try:
        with served(loop, lambda: serve_app(gateway_app())) as url:
            yield url
    finally:
        loop.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_dir(tmp_path_factory)


def _total(driver: Any) -> int:
    """The requests chart's total, read again if the live part replaced the chart mid-read."""
    from selenium.webdriver.common.by import By

    def read() -> str | None:
        return driver.find_element(By.CSS_SELECTOR, "#chart-requests svg").get_attribute("data-total")

    return int(float(wait_for(read, "the requests chart")))


def test_sign_in_create_a_key_and_see_its_request_in_the_charts(browser: Any, gateway: str, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    browser_sign_in(browser, gateway, MASTER)
    assert browser.current_url == f"{gateway}/ui/"
    browser.get(f"{gateway}/ui/keys")
    form = browser.find_element(By.ID, "create-key")
    form.find_element(By.NAME, "name").send_keys("browser-key")
    form.find_element(By.NAME, "max_budget").send_keys("2.5")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    secret = wait_for(lambda: browser.find_element(By.ID, "new-key").get_attribute("value"), "the new key")
    assert secret.startswith("sk-corral-")
    assert "browser-key" in browser.find_element(By.TAG_NAME, "table").text
    browser.save_screenshot(str(shots / "gateway-keys.png"))

    browser.get(f"{gateway}/ui/")
    before = _total(browser)
    charts = browser.find_element(By.ID, "charts")
    response = httpx.post(f"{gateway}/v1/chat/completions", headers={"authorization": f"Bearer {secret}"},
                          json={"model": "echo", "messages": [{"role": "user", "content": "hello console"}]})
    assert response.status_code == 200
    # No reload: the live part (server-sent events) brings the new bucket in.
    wait_for(lambda: _total(browser) >= before + 1, "the request to show in the requests chart", within=25)
    assert charts.get_attribute("data-live-updated")
    browser.save_screenshot(str(shots / "gateway-overview.png"))
    for page in ("models", "spend", "services"):
        browser.get(f"{gateway}/ui/{page}")
        browser.save_screenshot(str(shots / f"gateway-{page}.png"))


def test_start_a_run_from_the_page_and_follow_it_live(browser: Any, gateway: str, shots: Path) -> None:
    from selenium.webdriver.common.by import By

    browser_sign_in(browser, gateway, MASTER)
    browser.get(f"{gateway}/ui/agents")
    form = browser.find_element(By.ID, "agent-counter")
    form.find_element(By.NAME, "input").send_keys("count for me")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: "/ui/runs/run_" in browser.current_url, "the run page")
    events = browser.find_element(By.ID, "events")
    assert events.get_attribute("data-live")  # the run was still going when the page was drawn
    finished = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#events .ev-run-finished"),
                        "the run.finished event to arrive live")
    assert "completed" in finished[0].text
    text = "".join(e.text.removeprefix("text.delta").strip() + " "
                   for e in browser.find_elements(By.CSS_SELECTOR, "#events .ev-text-delta"))
    assert "Counting sheep" in text and "eight." in text
    assert events.get_attribute("data-live-state") == "ended"
    browser.save_screenshot(str(shots / "gateway-run.png"))
    browser.refresh()
    assert browser.find_element(By.ID, "run-state").text == "succeeded"
    assert "Counting sheep" in browser.find_element(By.ID, "run-output").text
    browser.get(f"{gateway}/ui/agents")
    browser.save_screenshot(str(shots / "gateway-agents.png"))
