"""What every route shares to read a request and write an answer: the body read
straight from ASGI, JSON parsing with the API's error, and one JSON response class."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from corral.gateway.errors import ApiError


class JSONBytes(Response):
    """A JSON response from bytes already encoded: its two headers written directly
    (Starlette's `init_headers` costs as much as encoding a small answer)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]


def json_response(data: object, status: int = 200) -> Response:
    return JSONBytes(orjson.dumps(data), status)


async def read_body(request: Request) -> bytes:
    """The request's body, read straight from the ASGI `receive` (Starlette's
    `Request.body()` goes through an async generator and `aclosing` per request)."""
    chunks: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"We could not parse the JSON body of your request: {exc}",
                       code="invalid_json") from None


async def json_body(request: Request) -> Any:
    """The request's JSON body (see `read_body`)."""
    return parse_json(await read_body(request))


async def json_object(request: Request) -> dict[str, Any]:
    """A JSON object body; an empty body is an empty object (the runs API's optional bodies)."""
    raw = await read_body(request)
    if not raw:
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object", code="invalid_json")
    return body
