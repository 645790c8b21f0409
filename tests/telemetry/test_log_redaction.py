"""Logs: secrets never reach the output; every line of a request carries its request id."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import httpx
import pytest

from corral.config.schema import ModelConfig, ScriptStep
from corral.telemetry.logging import REQUEST_ID, logging_config, make_handler, redact

SECRETS = [
    "sk-proj-abcdefghijklmnopqrstuvwx1234",
    "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx",
    "sk-corral-0123456789abcdef0123",
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXZhbHVl",
    "Zm9vOmJhcg-basic-credential",
    "plain-opaque-token-42",
]


@pytest.fixture
def captured():
    """A Corral handler on the `corral` logger, writing to a buffer (removed afterwards)."""

    def attach(fmt: str) -> io.StringIO:
        stream = io.StringIO()
        handler = make_handler(fmt, stream)
        logger = logging.getLogger("corral")
        logger.addHandler(handler)
        handlers.append(handler)
        return stream

    handlers: list[logging.Handler] = []
    logger = logging.getLogger("corral")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield attach
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_keys_tokens_and_auth_headers_never_appear_in_output(captured, fmt) -> None:
    stream = captured(fmt)
    log = logging.getLogger("corral.test")
    log.info("calling upstream with key %s", SECRETS[0])
    log.warning("headers: %s", {"Authorization": f"Bearer {SECRETS[1]}", "x-api-key": SECRETS[2]})
    log.error("jwt was %s", SECRETS[3])
    log.info("Authorization: Basic %s", SECRETS[4])
    log.info("retrying", extra={"url": f"https://api.example/v1?api_key={SECRETS[5]}"})
    try:
        raise ValueError(f"upstream rejected {SECRETS[2]}")
    except ValueError:
        log.exception("failed")
    output = stream.getvalue()
    for secret in SECRETS:
        assert secret not in output
    assert "[redacted]" in output
    assert "calling upstream with key" in output and "retrying" in output


def test_json_lines_are_objects_with_level_logger_and_request_id(captured) -> None:
    stream = captured("json")
    token = REQUEST_ID.set("req-123")
    try:
        logging.getLogger("corral.test").info("hello %s", "world", extra={"model": "m1"})
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(stream.getvalue())
    assert (line["level"], line["logger"], line["message"]) == ("info", "corral.test", "hello world")
    assert (line["request_id"], line["model"]) == ("req-123", "m1")
    assert line["ts"].endswith("Z")


def test_redact_keeps_ordinary_text() -> None:
    text = "model=gpt-4o max_tokens=5 status=200 sketch-of-a-plan"
    assert redact(text) == text


def test_logging_config_is_a_valid_dictconfig_for_uvicorn() -> None:
    config = logging_config("warning", "json")
    assert config["root"]["level"] == "WARNING"
    assert config["loggers"]["uvicorn.access"]["propagate"] is True
    logging.config.dictConfig({**config, "root": {"level": "WARNING", "handlers": []}, "handlers": {}})


async def test_every_log_line_of_a_request_carries_its_request_id(captured, scripted_server) -> None:
    stream = captured("json")
    retrying = {"models": {"scripted": ModelConfig(provider="script", model="scripted", num_retries=1)},
                "router": {"backoff_base": 0.0, "allowed_fails": 1, "cooldown_seconds": 0.5}}
    async with scripted_server([ScriptStep(error="unavailable"), ScriptStep(text="ok")], **retrying) as (url, _):
        async with httpx.AsyncClient(base_url=url) as http:
            body = {"model": "scripted", "messages": [{"role": "user", "content": "hi"}]}
            refused = await http.post("/v1/chat/completions", json=body, headers={
                "x-request-id": "refused-1", "authorization": f"Bearer {SECRETS[2]}", "x-api-key": SECRETS[1]})
            response = await http.post("/v1/chat/completions", json=body, headers={"x-request-id": "trace-me-1"})
    assert refused.status_code == 401  # an unknown key
    assert response.status_code == 200
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    served = [line for line in lines if line.get("request_id") != "refused-1"]
    assert len(served) >= 2  # the router's cooldown warning and the request line
    assert any("cooling down" in line["message"] for line in served)
    assert {line["request_id"] for line in served} == {"trace-me-1"}
    calls = [line for line in served if line["logger"] == "corral.request"]
    assert [(c["surface"], c["model"], c["status"]) for c in calls] == [("openai", "scripted", 200)]
    assert SECRETS[1] not in stream.getvalue() and SECRETS[2] not in stream.getvalue()
