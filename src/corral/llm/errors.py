"""Typed provider errors. Every adapter maps its upstream's failures onto these;
the router decides on retries from `retryable`, the gateway maps them to the
error format of the ingress API."""

from __future__ import annotations


class ProviderError(Exception):
    """Base class. ``status`` is the HTTP status a gateway should answer with."""

    status: int = 502
    code: str = "upstream_error"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        upstream_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.upstream_status = upstream_status
        self.retry_after = retry_after

    def __str__(self) -> str:
        prefix = f"{self.provider}: " if self.provider else ""
        return f"{prefix}{self.message}"


class AuthenticationError(ProviderError):
    status = 401
    code = "invalid_api_key"


class PermissionDeniedError(ProviderError):
    status = 403
    code = "permission_denied"


class NotFoundError(ProviderError):
    status = 404
    code = "model_not_found"


class RateLimitError(ProviderError):
    status = 429
    code = "rate_limit_exceeded"
    retryable = True


class ContextLengthError(ProviderError):
    status = 400
    code = "context_length_exceeded"


class BadRequestError(ProviderError):
    status = 400
    code = "invalid_request_error"


class UpstreamUnavailableError(ProviderError):
    """5xx, connection refused or reset, or a body that is not what the wire format says."""

    status = 502
    code = "upstream_unavailable"
    retryable = True


class UpstreamTimeout(ProviderError):
    """408/504 from the upstream, or no answer in time (connect, read, or the request's
    own timeout). Named so as not to shadow the builtin `TimeoutError`."""

    status = 504
    code = "upstream_timeout"
    retryable = True


def error_for_status(status: int, message: str, **kw: object) -> ProviderError:
    """Map an upstream HTTP status to the typed error (used by every adapter)."""
    lowered = message.lower()
    if status == 400 and ("context length" in lowered or "context_length" in lowered or "too long" in lowered
                          or "maximum context" in lowered or "prompt is too long" in lowered):
        return ContextLengthError(message, upstream_status=status, **kw)  # type: ignore[arg-type]
    cls: type[ProviderError]
    if status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = PermissionDeniedError
    elif status == 404:
        cls = NotFoundError
    elif status == 429:
        cls = RateLimitError
    elif status == 413 or 400 <= status < 500:
        cls = BadRequestError
    elif status in (504, 408):
        cls = UpstreamTimeout
    else:
        cls = UpstreamUnavailableError
    return cls(message, upstream_status=status, **kw)  # type: ignore[arg-type]
