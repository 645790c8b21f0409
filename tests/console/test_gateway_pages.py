"""The gateway console over HTTP (no browser): sessions, CSRF, who sees what, and that
no secret reaches a page."""

from __future__ import annotations

import asyncio
import csv
import io
import re

import httpx
from tests.console.gateway_app import MASTER, PROVIDER_SECRET, gateway_app
from tests.console.harness import csrf_of, http_sign_in

from corral.testing.server import serve_app

PAGES = ["/ui/", "/ui/?range=24h", "/ui/?range=7d", "/ui/keys", "/ui/keys?revoked=1", "/ui/models", "/ui/spend",
         "/ui/spend?group_by=key", "/ui/spend?group_by=team", "/ui/spend?group_by=agent", "/ui/spend?group_by=day",
         "/ui/agents", "/ui/services", "/ui/login"]


async def _chat(client: httpx.AsyncClient, key: str, text: str = "hi") -> None:
    response = await client.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                 json={"model": "echo", "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text


async def _new_key(client: httpx.AsyncClient, **body: object) -> dict[str, str]:
    response = await client.post("/admin/keys", headers={"authorization": f"Bearer {MASTER}"}, json=body)
    assert response.status_code == 201
    data: dict[str, str] = response.json()
    return data


async def test_pages_need_a_session_and_sign_in_sets_a_strict_httponly_cookie() -> None:
    async with serve_app(gateway_app()) as url, httpx.AsyncClient(base_url=url) as client:
        before = await client.get("/ui/keys")
        wrong = await http_sign_in(client, "sk-corral-not-a-key")
        signed = await http_sign_in(client, MASTER)
        keys = await client.get("/ui/keys")
    assert before.status_code == 303 and before.headers["location"] == "/ui/login?next=/ui/keys"
    assert wrong.status_code == 401 and "was not accepted" in wrong.text
    cookie = signed.headers["set-cookie"]
    assert signed.status_code == 303 and "corral_console=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert MASTER not in cookie  # the cookie says who signed in, never the key
    assert keys.status_code == 200 and "Create a key" in keys.text
    assert "script-src 'self'" in keys.headers["content-security-policy"]


async def test_a_tampered_or_foreign_cookie_is_no_session() -> None:
    async with serve_app(gateway_app()) as url, httpx.AsyncClient(base_url=url) as client:
        await http_sign_in(client, MASTER)
        good = client.cookies["corral_console"]
        payload, _, mac = good.rpartition(".")
        client.cookies.set("corral_console", payload[:-2] + "xx." + mac, path="/ui")
        tampered = await client.get("/ui/keys")
    async with serve_app(gateway_app()) as url, httpx.AsyncClient(base_url=url) as other:
        other.cookies.set("corral_console", good, path="/ui")  # signed by another process's secret
        foreign = await other.get("/ui/keys")
    assert tampered.status_code == 303 and foreign.status_code == 303


async def test_forms_without_the_csrf_token_are_refused_and_change_nothing() -> None:
    async with serve_app(gateway_app()) as url, httpx.AsyncClient(base_url=url) as client:
        await http_sign_in(client, MASTER)
        missing = await client.post("/ui/keys", data={"name": "sneaky"})
        wrong = await client.post("/ui/keys", data={"name": "sneaky", "csrf": "forged"})
        team = await client.post("/ui/teams", data={"name": "sneaky-team"})
        run = await client.post("/ui/agents/counter/runs", data={"input": "go"})
        login = await client.post("/ui/login", data={"secret": MASTER})  # no double-submit token
        logout = await client.post("/ui/logout")
        keys = (await client.get("/admin/keys", headers={"authorization": f"Bearer {MASTER}"})).json()["data"]
        teams = (await client.get("/admin/teams", headers={"authorization": f"Bearer {MASTER}"})).json()["data"]
        still = await client.get("/ui/keys")
        good = await client.post("/ui/keys", data={"name": "real", "csrf": await csrf_of(client, "/ui/keys")})
    assert [r.status_code for r in (missing, wrong, team, run, login, logout)] == [403] * 6
    assert "CSRF" in missing.text and keys == [] and teams == []
    assert still.status_code == 200  # the refused logout did not end the session
    assert good.status_code == 201 and re.search(r'id="new-key" readonly value="sk-corral-', good.text)


async def test_a_virtual_key_sees_only_its_own_usage_and_no_admin_page() -> None:
    async with serve_app(gateway_app()) as url, httpx.AsyncClient(base_url=url) as client:
        mine, theirs = await _new_key(client, name="mine"), await _new_key(client, name="theirs")
        await _chat(client, mine["key"])
        for _ in range(3):
            await _chat(client, theirs["key"])
        await asyncio.sleep(1.3)  # the usage rows are written in batches
        await http_sign_in(client, mine["key"])
        admin_pages = {p: (await client.get(p)).status_code for p in
                       ("/ui/keys", "/ui/models", "/ui/services", "/ui/spend?group_by=key", "/ui/spend?group_by=team")}
        posted = await client.post("/ui/keys", data={"name": "x", "csrf": await csrf_of(client, "/ui/")})
        overview = (await client.get("/ui/")).text
        spend = list(csv.reader(io.StringIO((await client.get("/ui/spend.csv?group_by=model&range=1h")).text)))
        nav = re.findall(r'<nav>(.*?)</nav>', overview)[0]
    assert admin_pages == {p: 403 for p in admin_pages} and posted.status_code == 403
    assert 'id="chart-requests"' in overview and re.search(r'id="chart-requests".*?data-total="1"', overview)
    assert spend[0] == ["model", "requests", "input_tokens", "output_tokens", "cost_usd"]
    assert [row[:2] for row in spend[1:]] == [["echo", "1"]]
    assert "Keys" not in nav and "Spend" in nav and "(own usage)" in overview


async def test_a_revoked_key_ends_its_console_session() -> None:
    async with serve_app(gateway_app()) as url, httpx.AsyncClient(base_url=url) as client:
        key = await _new_key(client, name="short-lived")
        await http_sign_in(client, key["key"])
        before = await client.get("/ui/")
        await client.post(f"/admin/keys/{key['id']}/revoke", headers={"authorization": f"Bearer {MASTER}"})
        after = await client.get("/ui/")
    assert before.status_code == 200 and after.status_code == 303


async def test_no_secret_appears_in_any_page() -> None:
    async with serve_app(gateway_app()) as url, httpx.AsyncClient(base_url=url) as client:
        key = await _new_key(client, name="watched", max_budget=5)
        await _chat(client, key["key"])
        await http_sign_in(client, MASTER)
        csrf = await csrf_of(client, "/ui/keys")
        created = await client.post("/ui/keys", data={"name": "made-here", "csrf": csrf})
        made = re.search(r'id="new-key" readonly value="([^"]+)"', created.text)
        assert made is not None
        run = await client.post("/ui/agents/counter/runs", data={"input": "count", "csrf": csrf})
        await asyncio.sleep(1.3)
        pages = {p: await client.get(p) for p in [*PAGES, run.headers["location"]]}
        exported = await client.get("/ui/spend.csv?group_by=key")
    secrets = [MASTER, PROVIDER_SECRET, key["key"], made.group(1)]
    assert all(r.status_code == 200 for r in pages.values()), {p: r.status_code for p, r in pages.items()}
    for path, response in [*pages.items(), ("csv", exported)]:
        leaked = [s[:12] for s in secrets if s in response.text]
        assert not leaked, f"{path} shows a secret"
    assert key["id"] in pages["/ui/keys"].text and "watched" in pages["/ui/keys"].text


async def test_spend_by_agent_and_csv_export_add_up() -> None:
    async with serve_app(gateway_app()) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        await _chat(client, MASTER)
        response = await client.post("/v1/agents/counter/runs", headers={"authorization": f"Bearer {MASTER}"},
                                     json={"input": "count"})
        assert response.json()["state"] == "succeeded"
        await asyncio.sleep(1.3)
        await http_sign_in(client, MASTER)
        by_agent = list(csv.reader(io.StringIO((await client.get("/ui/spend.csv?group_by=agent&range=1h")).text)))
        by_model = list(csv.reader(io.StringIO((await client.get("/ui/spend.csv?group_by=model&range=1h")).text)))
        exported = await client.get("/ui/spend.csv?group_by=day")
    assert {row[0]: row[1] for row in by_agent[1:]} == {"": "1", "counter": "1"}  # "": not an agent's call
    assert {row[0]: row[1] for row in by_model[1:]} == {"echo": "1", "slow": "1"}
    assert exported.headers["content-type"].startswith("text/csv")
    assert 'filename="corral-spend-by-day-7d.csv"' in exported.headers["content-disposition"]


async def test_the_knowledge_page_lists_bases_and_answers_a_query() -> None:
    app = gateway_app(knowledge={"handbook": {"embedder": {"type": "offline"}}})
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, follow_redirects=True) as client:
        master = {"authorization": f"Bearer {MASTER}"}
        docs = {"documents": [{"source": "ops/backups.md", "text": "Backups run nightly at 02:00."},
                              {"source": "ops/alerts.md", "text": "Alerts go to the oncall route."}]}
        assert (await client.post("/v1/knowledge/handbook/documents", json=docs, headers=master)).status_code == 200
        await http_sign_in(client, MASTER)
        listing = await client.get("/ui/knowledge")
        answer = await client.get("/ui/knowledge", params={"base": "handbook", "q": "when do backups run"})
    assert listing.status_code == 200 and ">handbook<" in listing.text and 'href="/ui/knowledge"' in listing.text
    passages = answer.text.split('id="passages"', 1)[1]
    assert passages.index("ops/backups.md") < passages.find("ops/alerts.md") or "ops/alerts.md" not in passages
    assert "Backups run nightly at 02:00." in passages
