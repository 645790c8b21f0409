"""Plumbing every wire adapter shares: the pooled client, error mapping, SSE framing.

Adapters never retry (the router does); they only turn every way an upstream can
fail into one of the typed errors of `corral.llm.errors`.
"""

from __future__ import annotations

import asyncio
import builtins
import email.utils
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from corral.config.schema import ProviderConfig
from corral.llm import errors
from corral.llm.providers._wire import FastTransport, origin_of
from corral.llm.readahead import ReadAhead

# Parses a vendor's JSON error body into (message, code); the code may be None.
ErrorParser = Callable[[Any], tuple[str | None, str | None]]

_MAX_ERROR_TEXT = 500

# Vendor error codes that say more than the HTTP status does.
_ERRORS_BY_CODE: dict[str, type[errors.ProviderError]] = {
    "context_length_exceeded": errors.ContextLengthError,
    "API_KEY_INVALID": errors.AuthenticationError,  # Gemini answers a bad key with 400
}


@dataclass(slots=True)
class ServerSentEvent:
    event: str | None
    data: str


def default_error_parser(body: Any) -> tuple[str | None, str | None]:
    """``{"error": {"message", "code"|"type"|"status"}}`` covers OpenAI, Anthropic and Gemini."""
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, str):
        return error, None
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code") if isinstance(error.get("code"), str) else None
        code = code or error.get("type") or error.get("status")
        return (str(message) if message is not None else None), (str(code) if code else None)
    message = body.get("message") or body.get("detail")
    return (str(message) if message else None), None


def retry_after_seconds(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """``retry-after-ms`` (OpenAI), then ``retry-after`` as seconds or an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _default_transport(config: ProviderConfig) -> httpx.AsyncBaseTransport | None:
    """Corral's own HTTP/1.1 wire (`_wire.FastTransport`), or None (httpx's own
    transport, which speaks proxies) when the environment names a proxy."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return None
    limits = httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=config.max_connections)
    return FastTransport(limits)


_URL_CACHE_SIZE = 512  # paths x parameters per provider (Gemini's paths name the model)
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class HttpClient:
    """One pooled `httpx.AsyncClient` plus the failure mapping for one provider."""

    def __init__(
        self,
        provider: str,
        config: ProviderConfig,
        *,
        base_url: str,
        headers: Mapping[str, str],
        api_key: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
        error_parser: ErrorParser = default_error_parser,
        params: Mapping[str, str] | None = None,
    ) -> None:
        self.provider = provider
        self._api_key = api_key
        self._error_parser = error_parser
        self._default_timeout = config.timeout
        self._connect_timeout = config.connect_timeout
        # Our own transport (or a test's) is called directly: the client's per-request
        # layers (URL merging and parsing, cookies, redirects, auth flows, event hooks)
        # profiled as a third of a proxied request and do nothing for an API call. With
        # no transport of ours (a proxy in the environment) the client does it all.
        self._transport = transport or _default_transport(config)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={**headers, **config.headers},
            params=dict(params or {}),
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            transport=self._transport,
        )
        self._urls: dict[tuple[str, tuple[tuple[str, str], ...]], httpx.URL] = {}
        self._wire = self._transport if isinstance(self._transport, FastTransport) else None
        self._heads: dict[tuple[str, str, tuple[tuple[str, str], ...], bool],
                          tuple[tuple[bytes, bytes, int], bytes]] = {}
        self._timeout_dicts: dict[float | None, dict[str, float | None]] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    def _url(self, path: str, params: Mapping[str, str] | None) -> httpx.URL:
        """The client's own URL for `path` (base URL, default and call parameters
        merged), built once per path and parameters."""
        key = (path, tuple(params.items()) if params else ())
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            url = self._urls[key] = self._client.build_request("GET", path, params=params).url
        return url

    async def _send(self, method: str, path: str, json_body: Any, params: Mapping[str, str] | None,
                    seconds: float | None) -> httpx.Response:
        if self._client.is_closed:  # a programming error, as httpx has it
            raise RuntimeError(f"{self.provider}: the HTTP client is closed")
        if self._transport is None:
            request = self._client.build_request(method, path, json=json_body, params=params,
                                                 timeout=self.timeout(seconds))
            return await self._client.send(request, stream=True)
        if self._wire is not None:  # our own wire: the request head pre-encoded per path
            origin, head = self._head(method, path, params, json_body is not None)
            if json_body is None:
                return await self._wire.send(origin, head + b"\r\n", b"", self._timeouts(seconds),
                                             head_only=method == "HEAD")
            encoded = orjson.dumps(json_body)
            return await self._wire.send(origin, head + b"%d\r\n\r\n" % len(encoded), encoded,
                                         self._timeouts(seconds))
        headers = self._client.headers
        content = None
        if json_body is not None:
            content = orjson.dumps(json_body)
            headers = httpx.Headers(headers)
            headers["content-type"] = "application/json"
        request = httpx.Request(method, self._url(path, params), headers=headers, content=content,
                                extensions={"timeout": self._timeouts(seconds)})
        response = await self._transport.handle_async_request(request)
        response.request = request
        return response

    def _head(self, method: str, path: str, params: Mapping[str, str] | None,
              has_body: bool) -> tuple[tuple[bytes, bytes, int], bytes]:
        """The origin and the encoded request head for `_wire`, built once per method,
        path and parameters: the request line, the headers `httpx.Request` would send
        (host, the client's headers, the JSON content type), and for a body the
        ``Content-Length:`` name, its value to follow. Without a body the head lacks
        only its final blank line."""
        key = (method, path, tuple(params.items()) if params else (), has_body)
        found = self._heads.get(key)
        if found is None:
            if len(self._heads) >= _URL_CACHE_SIZE:
                self._heads.clear()
            url = self._url(path, params)
            lines = [method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\nHost: ", url.netloc, b"\r\n"]
            for name, value in self._client.headers.raw:
                if name.lower() not in (b"host", b"content-length", b"content-type", b"transfer-encoding"):
                    lines += (name, b": ", value, b"\r\n")
            if has_body:
                lines.append(b"Content-Type: application/json\r\nContent-Length: ")
            found = self._heads[key] = (origin_of(url), b"".join(lines))
        return found

    def timeout(self, seconds: float | None) -> httpx.Timeout:
        total = seconds or self._default_timeout
        return httpx.Timeout(total, connect=min(self._connect_timeout, total))

    def _timeouts(self, seconds: float | None) -> dict[str, float | None]:
        """`timeout(seconds).as_dict()`, built once per value (the request extension)."""
        found = self._timeout_dicts.get(seconds)
        if found is None:
            if len(self._timeout_dicts) >= _URL_CACHE_SIZE:
                self._timeout_dicts.clear()
            found = self._timeout_dicts[seconds] = self.timeout(seconds).as_dict()
        return found

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        seconds: float | None = None,
    ) -> Any:
        """Sends one request and returns its parsed JSON body, or raises a typed error.
        ``seconds`` bounds the whole call, not just each read."""
        try:
            if seconds is None:
                response, raw = await self._exchange(method, path, json_body, params, None)
            else:
                async with asyncio.timeout(seconds):
                    response, raw = await self._exchange(method, path, json_body, params, seconds)
        except builtins.TimeoutError:
            if seconds is None:  # not our deadline: an OS-level timeout
                raise errors.UpstreamTimeout("timed out talking to the upstream", provider=self.provider) from None
            raise errors.UpstreamTimeout(f"no complete answer within {seconds:g}s", provider=self.provider) from None
        return self.parse_json(raw, response)

    async def _exchange(self, method: str, path: str, json_body: Any, params: Mapping[str, str] | None,
                        seconds: float | None) -> tuple[httpx.Response, bytes]:
        response = await self._checked(method, path, json_body, params, seconds)
        try:
            return response, await self._read(response)
        finally:
            if not response.is_closed:  # `Response.aclose` without its per-call context manager
                response.is_closed = True
                await response.stream.aclose()  # type: ignore[union-attr]

    async def _checked(self, method: str, path: str, json_body: Any, params: Mapping[str, str] | None,
                       seconds: float | None) -> httpx.Response:
        """Sends the request; an error status raises (its body read and mapped)."""
        try:
            response = await self._send(method, path, json_body, params, seconds)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from None
        if response.status_code >= 400:
            try:
                raw = await self._read(response)
            finally:
                await response.aclose()
            raise self.status_error(response, raw)
        return response

    @asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        seconds: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Opens a streamed response whose status is 2xx; error statuses raise."""
        response = await self._checked(method, path, json_body, params, seconds)
        try:
            yield response
        finally:
            await response.aclose()

    async def _read(self, response: httpx.Response) -> bytes:
        try:
            if _encoded(response):
                return await response.aread()  # httpx decodes it
            take_all = getattr(response.stream, "take_all", None)  # the wire's, when it is all in
            whole = take_all() if take_all is not None else None
            if whole is not None:
                return bytes(whole)
            parts = [part async for part in response.stream]  # type: ignore[union-attr]
            return parts[0] if len(parts) == 1 else b"".join(parts)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from None

    def redact(self, text: str) -> str:
        if self._api_key and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return text

    def transport_error(self, exc: httpx.HTTPError) -> errors.ProviderError:
        """Maps a transport failure. The exception text never carries the key (it is a header)."""
        kind = type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            phase = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "waiting for the upstream"
            return errors.UpstreamTimeout(f"timed out {phase} ({kind})", provider=self.provider)
        if isinstance(exc, httpx.ConnectError):
            return errors.UpstreamUnavailableError(
                f"cannot connect to the upstream: {self.redact(str(exc)) or kind}", provider=self.provider
            )
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            return errors.UpstreamUnavailableError(
                f"the upstream closed the connection mid-response ({kind})", provider=self.provider
            )
        return errors.UpstreamUnavailableError(f"upstream transport failure ({kind})", provider=self.provider)

    def status_error(self, response: httpx.Response, raw: bytes) -> errors.ProviderError:
        return self.error_from(response.status_code, raw, response.headers, response.reason_phrase)

    def error_from(
        self, status: int, raw: bytes, headers: httpx.Headers | None = None, reason: str = ""
    ) -> errors.ProviderError:
        """The typed error for an error status (or an error object inside a 2xx body)."""
        message, code = None, None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if body is not None:
            message, code = self._error_parser(body)
        if not message:
            text = raw.decode("utf-8", "replace").strip()[:_MAX_ERROR_TEXT]
            message = text or reason or f"HTTP {status}"
        message = self.redact(message)
        retry_after = retry_after_seconds(headers) if headers is not None else None
        special = _ERRORS_BY_CODE.get(code or "")
        if special is not None:
            return special(message, provider=self.provider, upstream_status=status, retry_after=retry_after)
        return errors.error_for_status(status, message, provider=self.provider, retry_after=retry_after)

    def parse_json(self, raw: bytes, response: httpx.Response) -> Any:
        try:
            return orjson.loads(raw)
        except ValueError:
            kind = response.headers.get("content-type", "no content-type")
            snippet = self.redact(raw[:80].decode("utf-8", "replace"))
            raise errors.UpstreamUnavailableError(
                f"the upstream answered HTTP {response.status_code} with a body that is not JSON "
                f"({kind}): {snippet!r}",
                provider=self.provider,
                upstream_status=response.status_code,
            ) from None

    def bad_payload(self, what: str) -> errors.UpstreamUnavailableError:
        return errors.UpstreamUnavailableError(f"malformed upstream response: {what}", provider=self.provider)

    def truncated(self) -> errors.UpstreamUnavailableError:
        return errors.UpstreamUnavailableError(
            "the upstream stream ended before it finished (no final event)", provider=self.provider
        )

    async def sse(self, response: httpx.Response, read_ahead: ReadAhead | None = None,
                  ) -> AsyncIterator[ServerSentEvent]:
        """Server-sent events of a streamed response; transport failures become typed errors.
        Parsed from the bytes as they arrive (every line ending the spec allows); while
        the events of one read are yielded, ``read_ahead.more`` says whether others follow."""
        if response.headers.get("content-type", "").startswith("application/json"):
            raise await self._json_instead_of_events(response)
        ahead = read_ahead
        pending = b""
        # The body as it arrives; httpx's decoding layer only when the body is encoded.
        source = response.aiter_bytes() if _encoded(response) else response.stream
        try:
            async for raw in source:  # type: ignore[union-attr]
                pending += raw
                if b"\r" in pending:  # CRLF or CR line endings; a CR at the end may start a CRLF
                    held = pending.endswith(b"\r")
                    body = pending[:-1] if held else pending
                    pending = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if held else b"")
                blocks = pending.split(b"\n\n")
                pending = blocks.pop()
                last = len(blocks) - 1
                for index, block in enumerate(blocks):
                    event = _parse_event(block)
                    if event is not None:
                        if ahead is not None:
                            ahead.more = index < last
                        yield event
                if ahead is not None:
                    ahead.more = False
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from None
        finally:  # a consumer that stops early must not leave a writer holding its output
            if ahead is not None:
                ahead.more = False
        event = _parse_event(pending.rstrip(b"\r\n")) if pending.strip() else None
        if event is not None:
            yield event

    async def drain(self, events: AsyncIterator[ServerSentEvent], seconds: float = 1.0,
                    response: httpx.Response | None = None) -> None:
        """Reads what follows a stream's last event, up to the end of the response, so
        the connection goes back to the pool: closing a response mid-body closes its
        connection, and the next stream would pay a new connect (and TLS handshake).
        Bounded, for servers that keep the response open after their last event (no
        bound needed when `response`'s body says it has all arrived, the usual case)."""
        at_end = getattr(response.stream, "at_end", None) if response is not None else None
        try:
            async with asyncio.timeout(None if at_end is not None and at_end() else seconds):
                async for _ in events:
                    pass
        except (builtins.TimeoutError, errors.ProviderError):
            pass

    async def _json_instead_of_events(self, response: httpx.Response) -> errors.ProviderError:
        # Some servers answer a stream request that failed with a plain JSON error and a 200.
        raw = await self._read(response)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        message, _ = self._error_parser(body) if body is not None else (None, None)
        if message:
            status = as_int(as_dict(as_dict(body).get("error")).get("code")) or 502
            return self.error_from(status if status >= 400 else 502, raw)
        return self.bad_payload("expected an event stream, got a JSON document")

    def event_json(self, sse: ServerSentEvent) -> Any:
        try:
            return orjson.loads(sse.data)
        except ValueError:
            raise self.bad_payload(f"stream event is not JSON: {self.redact(sse.data[:80])!r}") from None



def _encoded(response: httpx.Response) -> bool:
    """Whether the body has a content-encoding for httpx to decode; the wire says so in an
    extension (no header lookup), other transports in the headers."""
    encoded = response.extensions.get("corral_encoded")
    return "content-encoding" in response.headers if encoded is None else bool(encoded)


def _parse_event(block: bytes) -> ServerSentEvent | None:
    """One event's lines; None when it carries no data (comments, a lone `event:`)."""
    if block.startswith(b"data: ") and b"\n" not in block:  # the usual event: one data line
        return ServerSentEvent(None, block[6:].decode("utf-8", "replace"))
    event: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            event = (line[7:] if line[6:7] == b" " else line[6:]).decode("utf-8", "replace")
        elif line == b"data":  # a field name alone: an empty value
            data.append(b"")
    if not data:
        return None
    return ServerSentEvent(event, b"\n".join(data).decode("utf-8", "replace"))


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
