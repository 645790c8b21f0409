"""Errors in the format of the API surface they come from.

Route code raises `ApiError`; the exception handler renders it as an OpenAI error
object, or an Anthropic error, chosen by the route's surface.
"""

from __future__ import annotations

from typing import Literal

import orjson
from starlette.responses import Response

from corral.llm.errors import ProviderError

Surface = Literal["openai", "anthropic"]

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type
        self.headers = headers or {}

    @classmethod
    def from_provider(cls, error: ProviderError) -> ApiError:
        headers = {}
        if error.retry_after is not None:
            headers["retry-after"] = str(max(1, round(error.retry_after)))
        return cls(error.status, str(error), code=error.code, headers=headers)


def surface_for_path(path: str) -> Surface:
    return "anthropic" if path.startswith("/v1/messages") else "openai"


def error_body(error: ApiError, surface: Surface) -> dict[str, object]:
    if surface == "anthropic":
        kind = error.type if error.type and error.type in _ANTHROPIC_TYPES.values() else None
        return {"type": "error", "error": {"type": kind or _ANTHROPIC_TYPES.get(error.status, "api_error"),
                                           "message": error.message}}
    fallback = "server_error" if error.status >= 500 else "invalid_request_error"
    kind = error.type or _OPENAI_TYPES.get(error.status, fallback)
    return {"error": {"message": error.message, "type": kind, "param": error.param, "code": error.code}}


def error_response(error: ApiError, surface: Surface) -> Response:
    return Response(
        orjson.dumps(error_body(error, surface)),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )
