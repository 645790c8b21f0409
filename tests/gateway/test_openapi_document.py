"""`/openapi.json` is a valid OpenAPI 3.1 document listing exactly the routes the app
serves, built from the models that validate requests; `/docs` renders it from packaged
assets only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from corral.config.schema import CorralConfig
from corral.gateway.admin import KeyCreate
from corral.gateway.app import create_app
from corral.gateway.openai_format import ChatCompletionIn
from corral.gateway.openapi import OPERATIONS, openapi_path, operations_for, route_keys
from corral.testing.scripted import ScriptedProvider

BASE: dict[str, Any] = {
    "providers": {"script": {"type": "scripted"}},
    "models": {"scripted": {"provider": "script", "model": "scripted"}},
    "auth": {"master_key": "sk-master-document-test"},
}


def app_with_reference(**config: Any) -> Starlette:
    """The gateway's app (the factory mounts the reference routes)."""
    return create_app(CorralConfig.model_validate({**BASE, **config}),
                      providers={"script": ScriptedProvider.from_steps("script", [])})


@asynccontextmanager
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://corral") as http:
        yield http


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items() for method in item}


async def test_the_document_is_valid_openapi_3_1_and_lists_exactly_the_served_routes() -> None:
    app = app_with_reference(agents={"assistant": {"model": "scripted"}}, knowledge={"handbook": {}})
    async with client(app) as http:
        answer = await http.get("/openapi.json")
    document = answer.json()
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    served = {(openapi_path(path), method) for path, method in route_keys(app.routes)}
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert document["openapi"] == "3.1.0"
    assert documented(document) == served
    assert len(served) == len(OPERATIONS) + 3  # every entry of the table, and the reference itself


async def test_an_app_without_agents_documents_no_a2a_or_mcp_routes() -> None:
    app = app_with_reference()
    async with client(app) as http:
        document = (await http.get("/openapi.json")).json()
    paths = set(document["paths"])
    assert documented(document) == {(openapi_path(p), m) for p, m in route_keys(app.routes)}
    assert "/v1/chat/completions" in paths and "/admin/keys" in paths
    assert not {p for p in paths if p.startswith(("/a2a", "/mcp", "/.well-known", "/v1/knowledge"))}


def test_a_route_missing_from_the_table_is_refused() -> None:
    async def handler(_: Any) -> Response:
        return Response()

    with pytest.raises(ValueError, match=r"\('/v1/secret', 'POST'\)"):
        operations_for([Route("/v1/secret", handler, methods=["POST"])])


def test_request_bodies_are_the_validating_models() -> None:
    document = app_document()
    schemas = document["components"]["schemas"]
    chat = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    key = document["paths"]["/admin/keys"]["post"]["requestBody"]["content"]["application/json"]
    assert chat["schema"] == {"$ref": "#/components/schemas/ChatCompletionIn"}
    assert set(schemas["ChatCompletionIn"]["properties"]) == set(ChatCompletionIn.model_fields)
    assert schemas["ChatCompletionIn"]["properties"]["temperature"]["anyOf"][0] == {"maximum": 2, "minimum": 0,
                                                                                 "type": "number"}
    assert set(schemas["KeyCreate"]["properties"]) == set(KeyCreate.model_fields)
    assert schemas["KeyCreate"]["additionalProperties"] is False and key["schema"]["$ref"].endswith("/KeyCreate")
    # Models of one name in different modules keep apart, named by their surface.
    assert {"ChatToolIn", "AnthropicToolIn", "ResponsesToolIn", "ChatMessageIn", "AnthropicMessageIn"} <= set(schemas)


def test_errors_security_and_streams_are_described_per_surface() -> None:
    document = app_document()
    chat = document["paths"]["/v1/chat/completions"]["post"]
    messages = document["paths"]["/v1/messages"]["post"]
    assert chat["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/OpenAIError")
    assert messages["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/AnthropicError")
    assert "529" in messages["responses"] and "529" not in chat["responses"]
    event = chat["responses"]["200"]["content"]["text/event-stream"]["schema"]["properties"]["data"]
    assert event["anyOf"][0] == {"const": "[DONE]"}
    assert event["anyOf"][1]["contentSchema"]["anyOf"][0]["$ref"].endswith("/ChatCompletionChunk")
    assert chat["security"] == [{"apiKey": []}, {"jwt": []}, {"xApiKey": []}]
    assert document["paths"]["/admin/keys"]["get"]["security"] == [{"apiKey": []}]
    assert document["paths"]["/health"]["get"]["security"] == []
    assert document["components"]["securitySchemes"]["jwt"]["bearerFormat"] == "JWT"
    protected = [(p, m, op) for p, item in document["paths"].items() for m, op in item.items() if op["security"]]
    assert protected and all("401" in op["responses"] for _, _, op in protected)


def app_document() -> dict[str, Any]:
    from corral.gateway.openapi import REFERENCE, build_openapi

    return build_openapi([*OPERATIONS, *REFERENCE])


async def test_the_reference_page_loads_only_packaged_assets() -> None:
    app = app_with_reference()
    async with client(app) as http:
        page = await http.get("/docs")
        script = await http.get("/docs/assets/swagger-ui-bundle.js")
        css = await http.get("/docs/assets/swagger-ui.css")
        other = await http.get("/docs/assets/..%2Fpyproject.toml")
    html = page.text
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'url: "/openapi.json"' in html and "/docs/assets/swagger-ui-bundle.js" in html
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert script.status_code == 200 and "SwaggerUIBundle" in script.text
    assert script.headers["content-type"] in ("text/javascript; charset=utf-8", "application/javascript")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
