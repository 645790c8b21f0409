"""The supervisor's `/openapi.json`: a valid OpenAPI 3.1 document naming every route it serves,
whose schemas accept what the API really answers."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
from openapi_spec_validator import validate
from starlette.routing import Route

from corral.fleet.supervisor.http import build_http_app

from .conftest import Fleet


def _validator(doc: dict[str, Any], path: str, method: str, status: str = "200") -> jsonschema.Validator:
    pointer = "/".join(["#/paths", path.replace("~", "~0").replace("/", "~1"), method, "responses", status,
                        "content", "application~1json", "schema"])
    return jsonschema.Draft202012Validator({**doc, "$ref": pointer})


async def test_openapi_document_is_valid_and_lists_every_route(fleet: Fleet) -> None:
    sup = await fleet.start_supervisor()
    await fleet.start_node("n1")
    started = await fleet.command("start", {"project": "demo"}, {"project": "demo", "prompt": "hi", "wait": True})
    app = build_http_app(sup)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fleet") as client:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        doc = response.json()
        validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
        assert doc["openapi"] == "3.1.0"

        served = {(route.path, method.lower()) for route in app.routes if isinstance(route, Route) and route.include_in_schema
                  for method in route.methods or () if method != "HEAD"}
        documented = {(path, method) for path, item in doc["paths"].items() for method in item}
        assert documented == served and ("/openapi.json", "get") in served and len(served) == 16

        command_body = doc["paths"]["/api/v1/commands"]["post"]["requestBody"]["content"]["application/json"]
        assert command_body["schema"] == {"$ref": "#/components/schemas/CommandRequest"}
        assert doc["components"]["schemas"]["CommandRequest"]["properties"]["type"]["enum"] == [
            "start", "prompt", "resume", "restart", "kill", "status"]
        assert doc["paths"]["/api/v1/nodes"]["get"]["security"] == [{"fleetToken": []}]
        assert doc["paths"]["/chatops/discord"]["post"]["security"] == []
        assert {p["name"] for p in doc["paths"]["/api/v1/events"]["get"]["parameters"]} == {
            "session_id", "node_id", "type", "after", "limit"}

        headers = {"Authorization": f"Bearer {fleet_token()}"}
        sid = started["output"]["session_id"]
        for path, template in (("/api/v1/nodes", "/api/v1/nodes"), ("/api/v1/nodes/n1", "/api/v1/nodes/{node_id}"),
                               ("/api/v1/sessions", "/api/v1/sessions"),
                               (f"/api/v1/sessions/{sid}", "/api/v1/sessions/{session_id}"),
                               ("/api/v1/events", "/api/v1/events"), ("/api/v1/commands", "/api/v1/commands"),
                               ("/api/v1/cost/today", "/api/v1/cost/{period}"), ("/api/v1/audit", "/api/v1/audit"),
                               ("/readyz", "/readyz"), ("/healthz", "/healthz")):
            answer = await client.get(path, headers=headers)
            assert answer.status_code == 200, path
            _validator(doc, template, "get").validate(answer.json())
        missing = await client.get("/api/v1/nodes/zz", headers=headers)
        _validator(doc, "/api/v1/nodes/{node_id}", "get", "404").validate(missing.json())

        # the same model that the document shows refuses what it does not allow
        bad = await client.post("/api/v1/commands", headers=headers, json={"type": "kill", "target": {"host": "x"}})
        assert bad.status_code == 400 and bad.json()["error"] == {
            "code": "invalid_command", "message": "target.host: Extra inputs are not permitted"}
        bad_query = await client.get("/api/v1/sessions", headers=headers, params={"state": "asleep"})
        assert bad_query.status_code == 400 and bad_query.json()["error"]["code"] == "invalid_query"


def fleet_token() -> str:
    from .conftest import TOKEN

    return TOKEN
