"""The access log: one line per model call, off the request path.

`AccessLog.record` appends the call's typed fields to a bounded buffer (a tuple and a
list append: well under a microsecond); a flusher task, started and stopped by the app's
lifespan, turns what has accumulated into lines every ``interval`` seconds and hands
them to the handlers of the ``corral.request`` logger, one write per batch. The lines are
the ones `JsonFormatter` / `ConsoleFormatter` print for the same call logged with
`logging` (same fields, same order), and every field that could carry a secret is
redacted. When the buffer is full, lines are dropped and counted (``dropped``), never
waited for; `stop` writes what is left.

Where the lines go follows the logging configuration: a plain `StreamHandler` with
Corral's formatter and filters (what `logging_config` installs) gets the batch as one
write to its stream; any other handler (a file handler, pytest's caplog, an embedding
app's own) gets a `LogRecord` per line, so its formatter and filters apply as usual.
The line is written only while ``corral.request`` is enabled for INFO.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from json.encoder import encode_basestring  # the C string encoder json.dumps(ensure_ascii=False) uses
from typing import Any

from corral.telemetry.logging import ConsoleFormatter, JsonFormatter, RedactingFilter, RequestIdFilter, redact

ACCESS_LOGGER = "corral.request"

# The call's fields, in the order the line carries them (after ts, level, logger, message, request_id).
FIELDS = ("surface", "model", "status", "duration_s", "stream", "deployment", "upstream_model", "attempts",
          "input_tokens", "output_tokens", "error_type")

# A request id of lowercase hex (and dashes), as the gateway makes them, cannot hold
# anything the redactor looks for: no need to run it.
_PLAIN_ID = re.compile(r"[0-9a-f-]{1,128}")
_CORRAL_FILTERS = (RequestIdFilter, RedactingFilter)

# (created, request_id, surface, model, status, duration_s, stream, deployment, upstream_model, attempts,
#  input_tokens, output_tokens, error_type)
_Entry = tuple[float, str | None, str, str, int, float, bool, str | None, str | None, int, int | None, int | None,
               str | None]


def _json_text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _json_number(value: float | None) -> str:
    return "null" if value is None else json.dumps(value) if type(value) is not int else str(value)


class AccessLog:
    """One line per model call, written in batches by a background task.

    ``enabled`` is ``observability.access_log``; ``capacity`` bounds the lines waiting to
    be written; ``interval`` is how often the flusher writes them.
    """

    def __init__(self, *, enabled: bool = True, capacity: int = 8192, interval: float = 0.05,
                 logger: logging.Logger | None = None, clock: Callable[[], float] = time.time) -> None:
        if capacity < 1:
            raise ValueError("access log capacity must be at least 1")
        if interval <= 0:
            raise ValueError("access log interval must be positive")
        self.enabled = enabled
        self.capacity = capacity
        self.interval = interval
        self.logger = logger or logging.getLogger(ACCESS_LOGGER)
        self.clock = clock
        self.dropped = 0  # lines dropped because the buffer was full, since start
        self.written = 0  # lines handed to handlers
        self._pending: list[_Entry] = []
        self._reported_drops = 0
        self._task: asyncio.Task[None] | None = None
        self._redacted: dict[str, str] = {}  # model names, deployments, error types: few values, seen often
        self._second = -1
        self._stamps = ("", "")  # (json, console) timestamps of `_second`, without the milliseconds

    def record(self, *, surface: str, model: str, status: int, duration_s: float, stream: bool = False,
               deployment: str | None = None, upstream_model: str | None = None, attempts: int = 0,
               input_tokens: int | None = None, output_tokens: int | None = None, error_type: str | None = None,
               request_id: str | None = None) -> None:
        """Queue one call's line (on the request path: no formatting, no I/O)."""
        if not self.enabled or not self.logger.isEnabledFor(logging.INFO):
            return
        pending = self._pending
        if len(pending) >= self.capacity:
            self.dropped += 1
            return
        pending.append((self.clock(), request_id, surface, model, status, duration_s, stream, deployment,
                        upstream_model, attempts, input_tokens, output_tokens, error_type))

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        """Start the flusher (the app's lifespan, at startup)."""
        if self.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush_forever(), name="corral-access-log")

    async def stop(self) -> None:
        """Stop the flusher and write every line still waiting (the lifespan, at shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.flush()
            except Exception:  # a handler failed: the next batch tries again
                logging.getLogger("corral.access_log").exception("writing the access log failed")

    def flush(self) -> None:
        """Write every waiting line now, one write per stream."""
        batch, self._pending = self._pending, []
        if batch:
            self._deliver(batch)
            self.written += len(batch)
        if self.dropped != self._reported_drops:
            lost, self._reported_drops = self.dropped - self._reported_drops, self.dropped
            logging.getLogger("corral.access_log").warning(
                "access log buffer full (%d lines): %d lines dropped", self.capacity, lost)

    def _handlers(self) -> Iterable[logging.Handler]:
        """The handlers a record of ``corral.request`` at INFO would reach."""
        logger: logging.Logger | None = self.logger
        while logger is not None:
            for handler in logger.handlers:
                if handler.level <= logging.INFO:
                    yield handler
            if not logger.propagate:
                break
            logger = logger.parent

    def _deliver(self, batch: list[_Entry]) -> None:
        texts: dict[type[logging.Formatter], str] = {}
        for handler in self._handlers():
            formatter = handler.formatter
            kind = type(formatter)
            if (type(handler) is logging.StreamHandler and kind in (JsonFormatter, ConsoleFormatter)
                    and all(isinstance(f, _CORRAL_FILTERS) for f in handler.filters)):
                text = texts.get(kind)
                if text is None:
                    text = texts[kind] = self.format_batch(batch, json_lines=kind is JsonFormatter)
                stream: Any = handler.stream
                handler.acquire()
                try:
                    stream.write(text)
                    stream.flush()
                finally:
                    handler.release()
            else:
                for entry in batch:
                    handler.handle(self._log_record(entry))  # its filters, its formatter

    def format_batch(self, batch: list[_Entry], *, json_lines: bool) -> str:
        """The lines of ``batch``, newline-terminated, as one string."""
        line = self._json_line if json_lines else self._console_line
        return "".join([line(entry) for entry in batch])

    def _clean(self, value: str | None) -> str | None:
        if value is None:
            return None
        found = self._redacted.get(value)
        if found is None:
            if len(self._redacted) >= 4096:  # bounded: a flood of distinct names only costs the cache
                self._redacted.clear()
            found = self._redacted[value] = redact(value)
        return found

    @staticmethod
    def _clean_id(request_id: str | None) -> str | None:
        if not request_id or _PLAIN_ID.fullmatch(request_id):
            return request_id
        return redact(request_id)

    def _stamp(self, created: float) -> tuple[str, str, int]:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamps = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
                            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second)))
        return self._stamps[0], self._stamps[1], int((created - second) * 1000)

    @staticmethod
    def _message(duration: float, fields: tuple[Any, ...]) -> str:
        surface, model, status, _, _, _, _, _, input_tokens, output_tokens, kind = fields
        error = f" error={kind}" if kind else ""
        return (f"{surface} model={model} status={status} {duration:.3f}s "
                f"tokens={input_tokens or 0}/{output_tokens or 0}{error}")

    def _fields(self, entry: _Entry) -> tuple[Any, ...]:
        (_, _, surface, model, status, duration, stream, deployment, upstream_model, attempts, input_tokens,
         output_tokens, kind) = entry
        return (self._clean(surface), self._clean(model), status, round(duration, 6), stream, self._clean(deployment),
                self._clean(upstream_model), attempts, input_tokens, output_tokens, self._clean(kind))

    def _json_line(self, entry: _Entry) -> str:
        """What ``json.dumps`` of the line's dict gives (its separators, ``ensure_ascii=False``),
        put together from the parts: a third of the cost."""
        created, request_id = entry[0], self._clean_id(entry[1])
        fields = self._fields(entry)
        surface, model, status, duration, stream, deployment, upstream_model, attempts, tokens_in, tokens_out, \
            kind = fields
        iso, _, ms = self._stamp(created)
        text = _json_text
        rid = f', "request_id": {text(request_id)}' if request_id else ""
        return (f'{{"ts": "{iso}.{ms:03d}Z", "level": "info", "logger": {text(self.logger.name)}, '
                f'"message": {text(self._message(entry[5], fields))}{rid}, "surface": {text(surface)}, '
                f'"model": {text(model)}, "status": {_json_number(status)}, "duration_s": {_json_number(duration)}, '
                f'"stream": {"true" if stream else "false"}, "deployment": {text(deployment)}, '
                f'"upstream_model": {text(upstream_model)}, "attempts": {_json_number(attempts)}, '
                f'"input_tokens": {_json_number(tokens_in)}, "output_tokens": {_json_number(tokens_out)}, '
                f'"error_type": {text(kind)}}}\n')

    def _console_line(self, entry: _Entry) -> str:
        created, request_id = entry[0], self._clean_id(entry[1])
        fields = self._fields(entry)
        _, local, ms = self._stamp(created)
        rid = f" [{request_id}]" if request_id else ""
        return f"{local},{ms:03d} INFO {self.logger.name}{rid}: {self._message(entry[5], fields)}\n"

    def _log_record(self, entry: _Entry) -> logging.LogRecord:
        """The line as the `LogRecord` `logging` would have made (for handlers of any kind)."""
        created, request_id = entry[0], entry[1]
        fields = self._fields(entry)
        extra = dict(zip(FIELDS, fields, strict=True))
        record = self.logger.makeRecord(self.logger.name, logging.INFO, "(access log)", 0,
                                        self._message(entry[5], fields), (), None,
                                        extra={**extra, "request_id": self._clean_id(request_id)})
        record.created = created
        record.msecs = int((created - int(created)) * 1000)
        return record
