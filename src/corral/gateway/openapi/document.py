"""`build_openapi(operations)`: the OpenAPI 3.1 document of a set of operations.

Schemas come from the pydantic models in the table (JSON Schema 2020-12, which OpenAPI
3.1 uses as it is); request bodies in their validation form, answers in their
serialization form. Error answers carry the error object of the route's surface, chosen
by the same function the app's error handler uses (`surface_for_path`)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from corral import __version__
from corral.gateway.errors import surface_for_path
from corral.gateway.openapi.llm import AnthropicError, OpenAIError
from corral.gateway.openapi.operations import SSE, Answer, Operation

REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
# Two models of one name in different modules (three `ToolIn`s...): named by their surface.
_MODULE_PREFIX = {"openai_format": "Chat", "anthropic_format": "Anthropic", "responses_format": "Responses"}

SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {"type": "http", "scheme": "bearer",
               "description": "`Authorization: Bearer <key>`: the master key, a virtual key (`sk-corral-...`, "
                              "made with the admin API) or a key from `auth.api_keys`."},
    "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A JWT checked against the JWKS URL of `auth.jwt` (docs/auth.md)."},
    "xApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                "description": "The same keys in the header the Anthropic SDK sends."},
}
_SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "none": [],
    "key": [{"apiKey": []}, {"jwt": []}, {"xApiKey": []}],
    "master": [{"apiKey": []}],
}
_ERROR_DESCRIPTIONS = {
    400: "Invalid request", 401: "Missing or invalid credentials", 403: "Not allowed", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Body larger than `server.max_body_bytes`",
    415: "Unsupported content-encoding (gzip and deflate are decoded)",
    429: "Rate limit or budget exceeded (with `retry-after`)", 500: "Internal error, or an agent run failed",
    502: "Upstream unavailable after retries and fallbacks", 503: "Not ready, or limits cannot be checked",
    504: "Upstream timeout", 529: "Upstream overloaded (Anthropic's status for an unavailable upstream)",
}


def openapi_path(path: str) -> str:
    """Starlette's ``{name:converter}`` as OpenAPI's ``{name}``."""
    return _PATH_PARAM.sub(r"{\1}", path)


def build_openapi(operations: Iterable[Operation], *, title: str = "Corral", version: str = __version__,
                  description: str = "") -> dict[str, Any]:
    ops = list(operations)
    schemas = _Schemas(ops)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = _operation(op, schemas)
    tags = sorted({op.tag for op in ops}, key=[o.tag for o in ops].index)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": description or "Corral's HTTP APIs: OpenAI-, Anthropic- and Responses-compatible "
                                               "model APIs, agents, sessions, A2A and MCP, admin and operations.",
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [{"name": t} for t in tags],
        "paths": paths,
        "components": {"schemas": schemas.definitions, "securitySchemes": SECURITY_SCHEMES},
    }


class _Schemas:
    """Every model of the table, generated once, in one namespace."""

    def __init__(self, ops: Sequence[Operation]) -> None:
        wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(OpenAIError, "serialization"),
                                                                 (AnthropicError, "serialization")]
        for op in ops:
            if op.request is not None:
                wanted.append((op.request, "validation"))
            if op.query is not None:
                wanted.append((op.query, "validation"))
            wanted.extend((a.body, "serialization") for a in op.answers if a.body is not None)
        unique = list(dict.fromkeys(wanted))
        refs, top = models_json_schema(unique, ref_template=REF)
        renames = {name: _short_name(name) for name in top.get("$defs", {})}
        self.definitions: dict[str, Any] = {renames[k]: _renamed(v, renames)
                                            for k, v in top.get("$defs", {}).items()}
        self._refs = {key: _renamed(value, renames) for key, value in refs.items()}

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(self._refs[(model, mode)])

    def model(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        """The definition itself (query parameters are listed field by field)."""
        ref = self._refs[(model, mode)]["$ref"]
        definition: dict[str, Any] = self.definitions[ref.rsplit("/", 1)[1]]
        return definition


def _short_name(name: str) -> str:
    if "__" not in name:
        return name
    parts = name.split("__")
    return _MODULE_PREFIX.get(parts[-2], parts[-2].title().replace("_", "")) + parts[-1]


def _renamed(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/components/schemas/"):
                name = v.rsplit("/", 1)[1]
                out[k] = "#/components/schemas/" + renames.get(name, name)
            else:
                out[k] = _renamed(v, renames)
        return out
    if isinstance(value, list):
        return [_renamed(v, renames) for v in value]
    return value


def _operation(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    if op.description:
        out["description"] = op.description
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in _PATH_PARAM.findall(op.path)]
    if op.query is not None:
        definition = schemas.model(op.query, "validation")
        required = set(definition.get("required", ()))
        for name, schema in definition.get("properties", {}).items():
            parameters.append({"name": name, "in": "query", "required": name in required,
                               **({"description": schema["description"]} if "description" in schema else {}),
                               "schema": {k: v for k, v in schema.items() if k != "description"}})
    parameters.extend({"name": h.name, "in": "header", "required": False, "description": h.description,
                       "schema": {"type": "string"}} for h in op.headers)
    if parameters:
        out["parameters"] = parameters
    if op.request is not None:
        out["requestBody"] = {"required": op.request_required,
                              "content": {op.request_media_type: {"schema": schemas.ref(op.request, "validation")}}}
    out["responses"] = _responses(op, schemas)
    out["security"] = _SECURITY[op.auth]
    return out


def _responses(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    error: type[BaseModel] = AnthropicError if surface_for_path(op.path) == "anthropic" else OpenAIError
    responses: dict[str, Any] = {}
    for answer in op.answers:
        entry = responses.setdefault(str(answer.status), {"description": answer.description or "OK",
                                                          "content": {}})
        if answer.description and answer.description not in entry["description"] and entry["content"]:
            entry["description"] += f"; {answer.description}"
        if answer.status == 202 and answer.body is None:
            entry.pop("content")
            continue
        entry["content"][answer.media_type] = {"schema": _body_schema(answer, error, schemas)}
    # Any body may be too large or in an encoding the middleware does not decode.
    for status in sorted({*op.errors, *((413, 415) if op.request is not None else ())}):
        responses.setdefault(str(status), {
            "description": _ERROR_DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"schema": schemas.ref(error, "serialization")}},
        })
    return dict(sorted(responses.items()))


def _body_schema(answer: Answer, error: type[BaseModel], schemas: _Schemas) -> dict[str, Any]:
    if answer.media_type == SSE:
        return _event_schema(answer, error, schemas)
    if answer.body is not None:
        return schemas.ref(answer.body, "serialization")
    if answer.media_type.endswith("json"):
        return {"type": "object"}
    if answer.media_type.startswith("text/"):
        return {"type": "string"}
    return {"type": "string", "format": "binary"}


def _event_schema(answer: Answer, error: type[BaseModel], schemas: _Schemas) -> dict[str, Any]:
    """One server-sent event (OpenAPI before 3.2 has the schema of an event stream describe
    each event): its `data:` is JSON of the answer's model, or the surface's error object
    when the stream fails after it started."""
    payloads = [schemas.ref(error, "serialization")]
    if answer.body is not None:
        payloads.insert(0, schemas.ref(answer.body, "serialization"))
    data: dict[str, Any] = {"type": "string", "contentMediaType": "application/json",
                            "contentSchema": {"anyOf": payloads}}
    if answer.stream_end is not None:
        data = {"anyOf": [{"const": answer.stream_end}, data]}
    return {"type": "object", "required": ["data"],
            "properties": {"event": {"type": "string"}, "data": data, "id": {"type": "string"},
                           "retry": {"type": "integer"}}}
