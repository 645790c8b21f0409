"""`GET /openapi.json`: an OpenAPI 3.1 document for the supervisor's HTTP API, generated from
the route list (`http.operations`) and the pydantic models that validate each request."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, TypeAdapter

from corral import __version__
from corral.fleet.supervisor.api import ErrorBody

if TYPE_CHECKING:
    from corral.fleet.supervisor.http import Operation

REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"\{(\w+)\}")
_STATUS_TEXT = {400: "Invalid request", 401: "Missing or invalid credentials", 404: "Not found",
                409: "Conflict (a node is offline, or no node serves the project)"}
_SIGNED = {
    "slack": [("X-Slack-Request-Timestamp", "Unix seconds; refused outside the replay window"),
              ("X-Slack-Signature", "v0=<hex HMAC-SHA256(signing secret, \"v0:{timestamp}:{raw body}\")>")],
    "discord": [("X-Signature-Timestamp", "Unix seconds; refused outside the replay window"),
                ("X-Signature-Ed25519", "hex Ed25519 signature of timestamp + raw body (the application's key)")],
}
_PATH_ENUMS = {"period": ["today", "week", "month"]}


class ChatError(BaseModel):
    error: str


class _Schemas:
    """Component schemas gathered while describing the operations."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def of(self, kind: Any, mode: Literal["validation", "serialization"]) -> dict[str, Any]:
        schema = TypeAdapter(kind).json_schema(ref_template=REF, mode=mode)
        self.components.update(schema.pop("$defs", {}))
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            name = kind.__name__
            self.components[name] = schema
            return {"$ref": REF.format(model=name)}
        return schema


def _parameters(op: Operation, schemas: _Schemas) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in _PATH_PARAM.findall(op.path):
        schema: dict[str, Any] = {"type": "string"}
        if name in _PATH_ENUMS:
            schema["enum"] = _PATH_ENUMS[name]
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    if op.query is not None:
        model = TypeAdapter(op.query).json_schema(ref_template=REF, mode="validation")
        schemas.components.update(model.pop("$defs", {}))
        required = set(model.get("required", []))
        for name, prop in model.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    for header, description in _SIGNED.get(op.auth, []):
        params.append({"name": header, "in": "header", "required": True, "description": description,
                       "schema": {"type": "string"}})
    return params


def _operation(op: Operation, schemas: _Schemas) -> dict[str, Any]:
    media = "text/plain" if op.response_media_type.startswith("text/") else op.response_media_type
    out: dict[str, Any] = {
        "operationId": f"{op.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', op.path.lower()).strip('_')}",
        "summary": op.summary,
        "responses": {"200": {"description": "OK",
                              "content": {media: {"schema": schemas.of(op.response, "serialization")}}}},
    }
    if op.auth == "bearer":
        out["security"] = [{"fleetToken": []}]
    else:
        out["security"] = []
    if params := _parameters(op, schemas):
        out["parameters"] = params
    if op.body:
        bodies = [schemas.of(model, "validation") for model in op.body]
        schema = bodies[0] if len(bodies) == 1 else {"oneOf": bodies}
        out["requestBody"] = {"required": True, "content": {op.body_media_type: {"schema": schema}}}
    error = ChatError if op.auth in _SIGNED else ErrorBody
    codes = sorted({*op.errors, *((401,) if op.auth != "none" else ())})
    for code in codes:
        out["responses"][str(code)] = {"description": _STATUS_TEXT.get(code, "Error"), "content": {
            "application/json": {"schema": schemas.of(error, "serialization")}}}
    return out


def _component_name(name: str) -> str:
    """OpenAPI names are ``[a-zA-Z0-9._-]+``: ``Data[list[Node]]`` becomes ``Data_list_Node``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def _renamed(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: (REF.format(model=_component_name(v.rsplit("/", 1)[1])) if k == "$ref" else _renamed(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_renamed(v) for v in node]
    return node


def document(ops: list[Operation]) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    components = {_component_name(name): schema for name, schema in sorted(schemas.components.items())}
    doc: dict[str, Any] = _renamed({
        "openapi": "3.1.0",
        "info": {"title": "Corral fleet supervisor", "version": __version__,
                 "description": "The supervisor's HTTP API: nodes, sessions, events, commands, cost, audit "
                                "(fleet token as a Bearer token) and the Slack and Discord chat-ops endpoints "
                                "(signed by the platforms)."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"fleetToken": {"type": "http", "scheme": "bearer",
                                               "description": "The shared fleet token (CORRAL_FLEET_TOKEN)."}},
        },
    })
    return doc
