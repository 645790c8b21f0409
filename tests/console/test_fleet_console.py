"""The fleet console on the supervisor: sign-in with the fleet token, CSRF on commands,
and in headless Chromium a command sent with confirmation that lands in the audit log."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.console.harness import (
    LoopThread,
    browser_or_skip,
    browser_sign_in,
    close_browser,
    csrf_of,
    http_sign_in,
    screenshot_dir,
    served,
    wait_for,
)
from tests.fleet.conftest import TOKEN, node_config, supervisor_config

from corral.fleet.node.client import Node
from corral.fleet.supervisor.app import Supervisor
from corral.testing.server import free_port


@contextlib.asynccontextmanager
async def fleet_with_a_session(tmp_path: Path) -> AsyncIterator[str]:
    """A supervisor (HTTP on a loopback port), one node, one idle session; yields the URL."""
    sup = Supervisor(supervisor_config(tmp_path, server={"host": "127.0.0.1", "http_port": free_port()}), TOKEN)
    await sup.start()
    node = Node(node_config(tmp_path, f"ws://127.0.0.1:{sup.ws_port}", "n1"), TOKEN)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop))
    try:
        async with asyncio.timeout(10):
            await node.connected.wait()
        started = await sup.dispatcher.dispatch("start", {"project": "demo"}, {"prompt": "hello", "wait": True},
                                                actor="test")
        assert started["status"] == "success", started
        yield f"http://127.0.0.1:{sup.http_port}"
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await sup.stop()


async def test_fleet_pages_need_the_token_and_commands_need_csrf_and_confirmation(tmp_path: Path) -> None:
    async with fleet_with_a_session(tmp_path) as url, httpx.AsyncClient(base_url=url, timeout=20) as client:
        before = await client.get("/ui/sessions")
        wrong = await http_sign_in(client, "not-the-token")
        await http_sign_in(client, TOKEN)
        sessions = await client.get("/ui/sessions")
        session_id = sessions.text.split('<td><code>')[1].split("</code>")[0]
        forged = await client.post("/ui/commands", data={"type": "kill", "session_id": session_id,
                                                         "confirmed": "yes"})
        csrf = await csrf_of(client, "/ui/commands")
        unconfirmed = await client.post("/ui/commands", data={"type": "kill", "session_id": session_id,
                                                              "csrf": csrf})
        audit_before = (await client.get("/api/v1/audit", headers={"authorization": f"Bearer {TOKEN}"})).json()
        pages = {p: (await client.get(p)).status_code for p in
                 ("/ui/", "/ui/sessions", "/ui/events", "/ui/commands", "/ui/cost", "/ui/cost?period=week",
                  "/ui/audit")}
        html = "".join([(await client.get(p)).text for p in pages])
    assert before.status_code == 303 and wrong.status_code == 401
    assert sessions.status_code == 200 and "idle" in sessions.text
    assert forged.status_code == 403
    assert unconfirmed.status_code == 200 and "Confirm: Kill" in unconfirmed.text  # asked, not sent
    assert [a["action"] for a in audit_before["data"]] == ["command.start"]
    assert pages == {p: 200 for p in pages}
    assert TOKEN not in html


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = browser_or_skip()
    try:
        yield driver
    finally:
        close_browser(driver)


def test_send_a_prompt_with_confirmation_and_see_its_audit_row(
        browser: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shots = screenshot_dir(tmp_path_factory)
    loop = LoopThread()
    try:
        with served(loop, lambda: fleet_with_a_session(tmp_path)) as url:
            browser_sign_in(browser, url, TOKEN)
            assert "online" in browser.find_element(By.ID, "nodes").text
            browser.save_screenshot(str(shots / "fleet-nodes.png"))
            browser.get(f"{url}/ui/sessions")
            browser.save_screenshot(str(shots / "fleet-sessions.png"))
            browser.find_element(By.LINK_TEXT, "Command…").click()
            form = browser.find_element(By.ID, "command-form")
            Select(form.find_element(By.NAME, "type")).select_by_value("prompt")
            form.find_element(By.NAME, "message").send_keys("what changed?")
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            confirm = wait_for(lambda: browser.find_element(By.ID, "confirm-form"), "the confirmation step")
            assert "Send a prompt" in confirm.text and "what changed?" in confirm.text
            browser.save_screenshot(str(shots / "fleet-confirm.png"))
            confirm.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            result = wait_for(lambda: browser.find_element(By.ID, "command-result"), "the command's result")
            assert "success" in result.text
            browser.find_element(By.LINK_TEXT, "See it in the audit log").click()
            rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")]
            assert "console" in rows[0] and "command.prompt" in rows[0] and "success" in rows[0]
            assert "command.start" in rows[1]
            browser.save_screenshot(str(shots / "fleet-audit.png"))
            browser.get(f"{url}/ui/events")
            shown = wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#events tr.ev")), "the events")
            session_id = rows[0].split("session_id=")[1].split()[0]
            sent = httpx.post(f"{url}/api/v1/commands", headers={"authorization": f"Bearer {TOKEN}"}, timeout=20,
                              json={"type": "prompt", "target": {"session_id": session_id},
                                    "args": {"message": "and now?", "wait": True}})
            assert sent.status_code == 200 and sent.json()["data"]["status"] == "success"
            # No reload: the new events arrive over server-sent events.
            wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#events tr.ev")) > shown,
                     "the prompt's events to appear live")
            assert browser.find_element(By.ID, "events").get_attribute("data-live-updated")
            browser.save_screenshot(str(shots / "fleet-events.png"))
            browser.get(f"{url}/ui/cost")
            browser.save_screenshot(str(shots / "fleet-cost.png"))
            browser.get("about:blank")
    finally:
        loop.close()
