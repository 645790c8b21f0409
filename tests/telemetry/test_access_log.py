"""`AccessLog`: one line per call, written in batches off the request path, the same
line `logging` printed before, redacted, bounded, flushed on stop."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from corral.config.schema import ObservabilityConfig
from corral.telemetry.access_log import AccessLog
from corral.telemetry.logging import make_handler

CREATED = 1_767_268_800.25  # 2026-01-01T12:00:00.250Z


class CountingStream(io.StringIO):
    """Counts the writes, so a test can see one write per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of its own (no propagation), at INFO, with no handlers yet."""
    log = logging.getLogger("corral.test.access")
    log.setLevel(logging.INFO)
    log.propagate = False
    before = list(log.handlers)
    yield log
    for handler in list(log.handlers):
        if handler not in before:
            log.removeHandler(handler)
    log.setLevel(logging.NOTSET)
    log.propagate = True


def attach(logger: logging.Logger, fmt: str) -> CountingStream:
    stream = CountingStream()
    logger.addHandler(make_handler(fmt, stream))
    return stream


def detach(logger: logging.Logger) -> None:
    logger.removeHandler(logger.handlers[-1])


def call(access: AccessLog, n: int = 0, **fields: object) -> None:
    base: dict[str, object] = {
        "surface": "openai", "model": "chat", "status": 200, "duration_s": 0.8123456 + n, "stream": True,
        "deployment": "openai", "upstream_model": "gpt-4o", "attempts": 1, "input_tokens": 1200,
        "output_tokens": 310, "error_type": None, "request_id": f"3f2a{n:04x}"}
    access.record(**{**base, **fields})  # type: ignore[arg-type]


def test_json_lines_carry_every_field_in_order(logger: logging.Logger) -> None:
    stream = attach(logger, "json")
    access = AccessLog(logger=logger, clock=lambda: CREATED)
    call(access)
    call(access, 1, status=502, error_type="upstream_unavailable", input_tokens=None, output_tokens=None,
         stream=False)
    access.flush()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(first) == ["ts", "level", "logger", "message", "request_id", "surface", "model", "status",
                           "duration_s", "stream", "deployment", "upstream_model", "attempts", "input_tokens",
                           "output_tokens", "error_type"]
    assert first == {
        "ts": "2026-01-01T12:00:00.250Z", "level": "info", "logger": "corral.test.access",
        "message": "openai model=chat status=200 0.812s tokens=1200/310", "request_id": "3f2a0000",
        "surface": "openai", "model": "chat", "status": 200, "duration_s": 0.812346, "stream": True,
        "deployment": "openai", "upstream_model": "gpt-4o", "attempts": 1, "input_tokens": 1200,
        "output_tokens": 310, "error_type": None}
    assert second["message"] == "openai model=chat status=502 1.812s tokens=0/0 error=upstream_unavailable"
    assert (second["status"], second["error_type"], second["input_tokens"], second["stream"]) == (
        502, "upstream_unavailable", None, False)
    assert stream.writes == 1  # the whole batch in one write
    assert access.written == 2 and access.pending == 0


def test_the_line_is_what_logging_printed_for_the_same_call(logger: logging.Logger) -> None:
    """The fast path (one write per batch) and `logging` with Corral's formatters agree."""
    for fmt in ("json", "console"):
        batched = attach(logger, fmt)
        access = AccessLog(logger=logger, clock=lambda: CREATED)
        call(access, 7, request_id="client-chosen.id:1", error_type="rate_limit_exceeded", status=429)
        access.flush()
        detach(logger)

        direct = attach(logger, fmt)
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 1,
                                   "openai model=chat status=429 7.812s tokens=1200/310 error=rate_limit_exceeded",
                                   (), None, extra={
                                       "surface": "openai", "model": "chat", "status": 429, "duration_s": 7.812346,
                                       "stream": True, "deployment": "openai", "upstream_model": "gpt-4o",
                                       "attempts": 1, "input_tokens": 1200, "output_tokens": 310,
                                       "error_type": "rate_limit_exceeded", "request_id": "client-chosen.id:1"})
        record.created, record.msecs = CREATED, 250
        logger.handle(record)
        detach(logger)
        assert batched.getvalue() == direct.getvalue(), fmt
    assert batched.getvalue().endswith(" INFO corral.test.access [client-chosen.id:1]: openai model=chat "
                                       "status=429 7.812s tokens=1200/310 error=rate_limit_exceeded\n")


def test_console_lines_and_lines_in_call_order(logger: logging.Logger) -> None:
    stream = attach(logger, "console")
    access = AccessLog(logger=logger)
    for n in range(5):
        call(access, n)
    access.flush()
    lines = stream.getvalue().splitlines()
    assert [line.split(" [", 1)[1].split("]", 1)[0] for line in lines] == [f"3f2a{n:04x}" for n in range(5)]
    assert all(" INFO corral.test.access [" in line for line in lines)
    assert lines[2].endswith(": openai model=chat status=200 2.812s tokens=1200/310")


def test_secrets_in_any_field_are_redacted(logger: logging.Logger) -> None:
    stream = attach(logger, "json")
    access = AccessLog(logger=logger)
    secret = "sk-proj-abcdefghijklmnopqrstuvwx1234"
    call(access, request_id=secret, model=f"Bearer {secret}", error_type=f"api_key={secret}",
         upstream_model="AKIAABCDEFGHIJKLMNOP")
    access.flush()
    text = stream.getvalue()
    assert secret not in text and "AKIAABCDEFGHIJKLMNOP" not in text
    line = json.loads(text)
    assert line["request_id"] == "sk-[redacted]"
    assert line["model"] == "Bearer [redacted]" and "model=Bearer [redacted]" in line["message"]
    assert line["error_type"] == "api_key=[redacted]"


def test_a_full_buffer_drops_and_counts_and_says_so_once(logger: logging.Logger,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    stream = attach(logger, "json")
    access = AccessLog(logger=logger, capacity=3)
    for n in range(5):
        call(access, n)
    assert (access.pending, access.dropped) == (3, 2)
    with caplog.at_level(logging.WARNING, logger="corral.access_log"):
        access.flush()
        access.flush()  # nothing new dropped: nothing more said
    assert [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == [
        "3f2a0000", "3f2a0001", "3f2a0002"]  # the first ones kept, in order
    assert [r.getMessage() for r in caplog.records] == ["access log buffer full (3 lines): 2 lines dropped"]
    call(access, 9)
    assert (access.pending, access.dropped) == (1, 2)


def test_nothing_is_recorded_when_switched_off_or_above_info(logger: logging.Logger) -> None:
    stream = attach(logger, "json")
    off = AccessLog(enabled=False, logger=logger)
    call(off)
    logger.setLevel(logging.WARNING)
    quiet = AccessLog(logger=logger)
    call(quiet)
    assert (off.pending, quiet.pending, quiet.dropped) == (0, 0, 0)
    off.flush()
    quiet.flush()
    assert stream.getvalue() == ""
    assert ObservabilityConfig().access_log is True
    assert ObservabilityConfig.model_validate({"access_log": False}).access_log is False


async def test_the_flusher_writes_batches_in_the_background_and_stop_flushes(logger: logging.Logger) -> None:
    stream = attach(logger, "json")
    access = AccessLog(logger=logger, interval=0.02)
    await access.start()
    try:
        for n in range(3):
            call(access, n)
        assert stream.getvalue() == ""  # recording never writes
        deadline = time.monotonic() + 5
        while access.written < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert access.written == 3 and stream.writes == 1
        for n in range(3, 7):
            call(access, n)
    finally:
        await access.stop()  # the last lines are written even though the flusher had not run yet
    assert [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == [
        f"3f2a{n:04x}" for n in range(7)]
    assert access.pending == 0


def test_other_handlers_get_a_log_record_per_line(logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    logger.addHandler(caplog.handler)  # pytest's own handler: not a plain stream, so records
    access = AccessLog(logger=logger, clock=lambda: CREATED)
    call(access, 0)
    call(access, 1, status=500, error_type="InternalError")
    access.flush()
    records = [r for r in caplog.records if r.name == "corral.test.access"]
    assert [r.getMessage() for r in records] == [
        "openai model=chat status=200 0.812s tokens=1200/310",
        "openai model=chat status=500 1.812s tokens=1200/310 error=InternalError"]
    first = records[0]
    assert (first.levelno, first.created, first.request_id, first.status, first.upstream_model) == (  # type: ignore[attr-defined]
        logging.INFO, CREATED, "3f2a0000", 200, "gpt-4o")


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        AccessLog(capacity=0)
    with pytest.raises(ValueError, match="interval"):
        AccessLog(interval=0)


def test_json_lines_are_exactly_json_dumps_of_the_fields_for_any_text(logger: logging.Logger) -> None:
    stream = attach(logger, "json")
    access = AccessLog(logger=logger, clock=lambda: CREATED)
    odd = 'mödel "quoted" \\ tab\t✓'
    call(access, 3, model=odd, upstream_model=None, deployment=None, input_tokens=None, output_tokens=0,
         duration_s=1e-7, attempts=3, request_id=None, error_type="ünknown")
    access.flush()
    expected = {"ts": "2026-01-01T12:00:00.250Z", "level": "info", "logger": "corral.test.access",
                "message": f"openai model={odd} status=200 0.000s tokens=0/0 error=ünknown", "surface": "openai",
                "model": odd, "status": 200, "duration_s": 0.0, "stream": True, "deployment": None,
                "upstream_model": None, "attempts": 3, "input_tokens": None, "output_tokens": 0,
                "error_type": "ünknown"}
    assert stream.getvalue() == json.dumps(expected, ensure_ascii=False) + "\n"
