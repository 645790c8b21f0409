"""Plumbing every wire adapter shares: the pooled client, error mapping, SSE framing.

Adapters never retry (the router does); they only turn every way an upstream can
fail into one of the typed errors of `corral.llm.errors`.
"""

from __future__ import annotations

import asyncio
import builtins
import email.utils
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from corral import __version__
from corral.config.schema import ProviderConfig
from corral.llm import errors
from corral.llm.providers._wire import Network, Origin, Timeouts, Wire, WireResponse, origin_of
from corral.llm.readahead import ReadAhead
from corral.telemetry.redact import redact_text

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


_URL_CACHE_SIZE = 512  # paths x parameters per provider (Gemini's paths name the model)
# What every request carries before the provider's own headers (which may replace them).
# Only the encodings httpx decodes with the standard library are offered.
_BASE_HEADERS = {"accept": "*/*", "accept-encoding": "gzip, deflate", "connection": "keep-alive",
                 "user-agent": f"corral/{__version__}"}


class HttpClient:
    """One provider's upstream client: the pooled wire (`_wire.Wire`, the only send path),
    request heads encoded once per path, and the failure mapping."""

    def __init__(
        self,
        provider: str,
        config: ProviderConfig,
        *,
        base_url: str,
        headers: Mapping[str, str],
        api_key: str | None,
        error_parser: ErrorParser = default_error_parser,
        params: Mapping[str, str] | None = None,
        network: Network | None = None,
    ) -> None:
        self.provider = provider
        self._api_key = api_key
        self._error_parser = error_parser
        self._default_timeout = config.timeout
        self._connect_timeout = config.connect_timeout
        self._base_url = base_url.rstrip("/")
        self._params = dict(params or {})
        merged = httpx.Headers(_BASE_HEADERS)
        merged.update(headers)
        merged.update(config.headers)
        self._headers = [(name, value) for name, value in merged.raw
                         if name.lower() not in (b"host", b"content-length", b"content-type", b"transfer-encoding")]
        self._wire = Wire(max_connections=config.max_connections, network=network)
        self._closed = False
        self._heads: dict[tuple[str, str, tuple[tuple[str, str], ...], bool], tuple[Origin, bytes]] = {}
        self._timeouts_by_seconds: dict[float | None, Timeouts] = {}

    async def aclose(self) -> None:
        self._closed = True
        await self._wire.aclose()

    @property
    def wire(self) -> Wire:
        """The connection pool (for diagnostics and tests: open and idle connections)."""
        return self._wire

    def url(self, path: str, params: Mapping[str, str] | None = None) -> httpx.URL:
        """`path` under the base URL (an absolute URL stays as it is), with the client's
        parameters and then `params`."""
        url = httpx.URL(path if "://" in path else f"{self._base_url}/{path.lstrip('/')}")
        merged = {**self._params, **params} if params else self._params
        return url.copy_merge_params(merged) if merged else url

    async def _send(self, method: str, path: str, json_body: Any, params: Mapping[str, str] | None,
                    seconds: float | None) -> WireResponse:
        if self._closed:  # a programming error
            raise RuntimeError(f"{self.provider}: the HTTP client is closed")
        origin, head = self._head(method, path, params, json_body is not None)
        if json_body is None:
            return await self._wire.send(origin, head + b"\r\n", b"", self._timeouts(seconds),
                                         head_only=method == "HEAD")
        encoded = orjson.dumps(json_body)
        return await self._wire.send(origin, head + b"%d\r\n\r\n" % len(encoded), encoded, self._timeouts(seconds))

    def _head(self, method: str, path: str, params: Mapping[str, str] | None,
              has_body: bool) -> tuple[Origin, bytes]:
        """The origin and the encoded request head, built once per method, path and
        parameters: the request line, ``Host``, the client's headers, and for a body the
        JSON content type and the ``Content-Length:`` name, its value to follow. Without
        a body the head lacks only its final blank line."""
        key = (method, path, tuple(params.items()) if params else (), has_body)
        found = self._heads.get(key)
        if found is None:
            if len(self._heads) >= _URL_CACHE_SIZE:
                self._heads.clear()
            url = self.url(path, params)
            lines = [method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\nHost: ", url.netloc, b"\r\n"]
            for name, value in self._headers:
                lines += (name, b": ", value, b"\r\n")
            if has_body:
                lines.append(b"Content-Type: application/json\r\nContent-Length: ")
            found = self._heads[key] = (origin_of(url), b"".join(lines))
        return found

    def _timeouts(self, seconds: float | None) -> Timeouts:
        """The wire's timeouts for a call bounded by `seconds` (else the provider's
        timeout): connecting within the connect timeout, everything else within the
        call's; built once per value."""
        found = self._timeouts_by_seconds.get(seconds)
        if found is None:
            if len(self._timeouts_by_seconds) >= _URL_CACHE_SIZE:
                self._timeouts_by_seconds.clear()
            total = seconds or self._default_timeout
            found = Timeouts(connect=min(self._connect_timeout, total), read=total, write=total, pool=total)
            self._timeouts_by_seconds[seconds] = found
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
                        seconds: float | None) -> tuple[WireResponse, bytes]:
        response = await self._checked(method, path, json_body, params, seconds)
        try:
            return response, await self._read(response)
        finally:
            await response.aclose()  # nothing to do once the body was read to its end

    async def _checked(self, method: str, path: str, json_body: Any, params: Mapping[str, str] | None,
                       seconds: float | None) -> WireResponse:
        """Sends the request; an error status raises (its body read and mapped)."""
        try:
            response = await self._send(method, path, json_body, params, seconds)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from None
        if response.status >= 400:
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
    ) -> AsyncIterator[WireResponse]:
        """Opens a streamed response whose status is 2xx; error statuses raise."""
        response = await self._checked(method, path, json_body, params, seconds)
        try:
            yield response
        finally:
            await response.aclose()

    async def _read(self, response: WireResponse) -> bytes:
        try:
            if response.encoded:
                return await response.decoded().aread()  # httpx decodes it
            whole = response.body.take_all()  # when it is all in already (the usual small answer)
            if whole is not None:
                return whole
            parts = [part async for part in response.body]
            return parts[0] if len(parts) == 1 else b"".join(parts)
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from None

    def redact(self, text: str) -> str:
        """Upstream text fit for an error message: the key, and anything shaped like a secret, masked."""
        return redact_text(text, known=(self._api_key,))

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
        if isinstance(exc, httpx.ProxyError):
            return errors.UpstreamUnavailableError(f"proxy failure: {self.redact(str(exc))}", provider=self.provider)
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            detail = self.redact(str(exc)) or "the upstream closed the connection mid-response"
            return errors.UpstreamUnavailableError(f"{detail} ({kind})", provider=self.provider)
        return errors.UpstreamUnavailableError(f"upstream transport failure ({kind})", provider=self.provider)

    def status_error(self, response: WireResponse, raw: bytes) -> errors.ProviderError:
        return self.error_from(response.status, raw, response.headers, httpx.codes.get_reason_phrase(response.status))

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

    def parse_json(self, raw: bytes, response: WireResponse) -> Any:
        try:
            return orjson.loads(raw)
        except ValueError:
            kind = (response.header(b"content-type") or b"no content-type").decode("latin-1")
            snippet = self.redact(raw[:80].decode("utf-8", "replace"))
            raise errors.UpstreamUnavailableError(
                f"the upstream answered HTTP {response.status} with a body that is not JSON "
                f"({kind}): {snippet!r}",
                provider=self.provider,
                upstream_status=response.status,
            ) from None

    def bad_payload(self, what: str) -> errors.UpstreamUnavailableError:
        return errors.UpstreamUnavailableError(f"malformed upstream response: {what}", provider=self.provider)

    def truncated(self) -> errors.UpstreamUnavailableError:
        return errors.UpstreamUnavailableError(
            "the upstream stream ended before it finished (no final event)", provider=self.provider
        )

    async def sse(self, response: WireResponse, read_ahead: ReadAhead | None = None,
                  ) -> AsyncIterator[ServerSentEvent]:
        """Server-sent events of a streamed response; transport failures become typed errors.
        Parsed from the bytes as they arrive (every line ending the spec allows); while
        the events of one read are yielded, ``read_ahead.more`` says whether others follow."""
        if (response.header(b"content-type") or b"").startswith(b"application/json"):
            raise await self._json_instead_of_events(response)
        parser = EventParser()
        # The body as it arrives; httpx's decoding layer only when the body is encoded.
        source = response.decoded().aiter_bytes() if response.encoded else response.body
        try:
            async for raw in source:
                events = parser.feed(raw)
                if read_ahead is None:
                    for event in events:
                        yield event
                    continue
                last = len(events) - 1
                for index, event in enumerate(events):
                    read_ahead.more = index < last
                    yield event
                read_ahead.more = False
        except httpx.HTTPError as exc:
            raise self.transport_error(exc) from None
        finally:  # a consumer that stops early must not leave a writer holding its output
            if read_ahead is not None:
                read_ahead.more = False
        last_event = parser.finish()
        if last_event is not None:
            yield last_event

    async def drain(self, events: AsyncIterator[ServerSentEvent], seconds: float = 1.0,
                    response: WireResponse | None = None) -> None:
        """Reads what follows a stream's last event, up to the end of the response, so
        the connection goes back to the pool: closing a response mid-body closes its
        connection, and the next stream would pay a new connect (and TLS handshake).
        Bounded, for servers that keep the response open after their last event (no
        bound needed when `response`'s body says it has all arrived, the usual case)."""
        try:
            async with asyncio.timeout(None if response is not None and response.body.at_end() else seconds):
                async for _ in events:
                    pass
        except (builtins.TimeoutError, errors.ProviderError):
            pass

    async def _json_instead_of_events(self, response: WireResponse) -> errors.ProviderError:
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



class EventParser:
    """The event stream format's framing (every line ending the spec allows, comments,
    multi-line data, fields without a value), fed the bytes of each read however they
    are split."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, raw: bytes) -> list[ServerSentEvent]:
        """The events that `raw` completes, in order."""
        pending = self._pending + raw if self._pending else raw
        if b"\r" in pending:  # CRLF or CR line endings; a CR at the end may start a CRLF
            held = pending.endswith(b"\r")
            body = pending[:-1] if held else pending
            pending = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + (b"\r" if held else b"")
        blocks = pending.split(b"\n\n")
        self._pending = blocks.pop()
        events = []
        for block in blocks:
            event = _parse_event(block)
            if event is not None:
                events.append(event)
        return events

    def finish(self) -> ServerSentEvent | None:
        """A last event the stream ended without its blank line."""
        pending, self._pending = self._pending, b""
        return _parse_event(pending.rstrip(b"\r\n")) if pending.strip() else None


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
