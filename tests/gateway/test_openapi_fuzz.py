"""Property-based fuzzing of a live `corral serve` against its own OpenAPI document
(schemathesis): every operation, bounded in examples and time. With the master key: no
5xx, and no answer the document does not describe (status, content type, headers, body).
Without a key: every protected operation answers 401 in its surface's error format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from corral.gateway.errors import surface_for_path
from corral.gateway.openapi.llm import AnthropicError, OpenAIError
from corral.testing.process import ServeProcess, start_serve

MASTER = "sk-fuzz-master-0123456789"
CONFIG = """
version: 1
providers:
  script:
    type: scripted
models:
  scripted:
    provider: script
    model: scripted
    num_retries: 0
agents:
  assistant:
    model: scripted
    instructions: "You help. {{topic}}"
auth:
  master_key: "{master}"
database:
  url: "sqlite+aiosqlite:///{db}"
runs:
  poll_interval: 0.05
"""
MODELS = ["scripted", "assistant"]  # names this server knows, so the fuzzer reaches past "unknown model"
CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
EXAMPLES = 12  # per operation: the whole file takes about half a minute


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    folder = tmp_path_factory.mktemp("fuzz")
    config = folder / "corral.yaml"
    config.write_text(CONFIG.format(master=MASTER, db=folder / "corral.db"))
    process = start_serve(config, ready_timeout=60)  # imports of the A2A and MCP SDKs are slow on a busy machine
    try:
        yield process
    finally:
        process.proc.terminate()
        process.proc.wait(timeout=20)


def served_document(base_url: str) -> dict[str, Any]:
    """The server's own `/openapi.json`."""
    answer = httpx.get(f"{base_url}/openapi.json", timeout=10)
    answer.raise_for_status()
    document: dict[str, Any] = answer.json()
    return document


def narrowed(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with `model` (in request bodies) limited to names this server knows:
    a subset of the valid inputs, so every answer must still match the full document."""
    doc = json.loads(json.dumps(doc))
    for name, schema in doc["components"]["schemas"].items():
        if name.endswith("In") and "model" in schema.get("properties", {}):
            schema["properties"]["model"] = {"type": "string", "enum": MODELS}
    return doc


def existing(base_url: str, headers: dict[str, str]) -> dict[str, str]:
    """Path parameters naming things that exist (an agent, a run, its session, a key), so
    the operations on one thing are fuzzed past "not found"."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=15) as client:
        run = client.post("/v1/agents/assistant/runs", json={"input": "hello", "session_id": "fuzz-session"})
        key = client.post("/admin/keys", json={"name": "fuzzed"})
    assert run.status_code == 200 and key.status_code == 201, (run.text, key.text)
    return {"name": "assistant", "model": "scripted", "run_id": run.json()["id"],
            "session_id": run.json()["session_id"], "key_id": key.json()["id"]}


def fuzz(schema: schemathesis.BaseSchema, base_url: str, headers: dict[str, str],
         statuses: dict[str, set[int]]) -> list[str]:
    failures: list[str] = []
    known = existing(base_url, headers)
    for result in schema.get_all_operations():
        operation = result.ok()
        path_parameters = {k: v for k, v in known.items() if f"{{{k}}}" in operation.path}

        # Derandomized: the same examples on every run, so CI is reproducible (a failure found
        # here is found there); widen EXAMPLES or drop derandomize locally to explore more.
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  derandomize=True,
                  suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, print_blob=True)
        @given(case=operation.as_strategy(path_parameters=path_parameters or None))
        def run(case: schemathesis.Case) -> None:
            response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=15)
            statuses.setdefault(case.operation.label, set()).add(response.status_code)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # one operation's failure, with its example
            failures.append(f"{operation.label}: {exc}")
    return failures


def test_every_operation_with_the_master_key_answers_as_documented(server: ServeProcess) -> None:
    schema = schemathesis.openapi.from_dict(narrowed(served_document(server.base_url)))
    statuses: dict[str, set[int]] = {}
    failures = fuzz(schema, server.base_url, {"authorization": f"Bearer {MASTER}"}, statuses)
    assert not failures, "\n\n".join(failures)
    assert httpx.get(f"{server.base_url}/readyz", timeout=5).json() == {"status": "ready"}
    # The fuzzer got past validation and "not found" to real answers on every kind of operation.
    assert not [op for op in REACHED if not any(200 <= s < 300 for s in statuses.get(op, ()))], statuses


REACHED = ["POST /v1/chat/completions", "POST /v1/responses", "POST /v1/messages", "POST /v1/embeddings",
           "POST /v1/messages/count_tokens", "GET /v1/models/{model}", "POST /v1/agents/{name}/runs",
           "GET /v1/runs/{run_id}", "GET /v1/runs/{run_id}/events", "GET /v1/sessions/{session_id}",
           "POST /a2a/{name}", "POST /mcp", "POST /admin/keys", "PATCH /admin/keys/{key_id}", "POST /admin/teams",
           "GET /admin/spend"]


def unauthenticated(schema: schemathesis.BaseSchema, base_url: str) -> list[str]:
    """Every operation the document says needs a credential, called without one."""
    wrong: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("security"):
            try:
                refuses_without_key(operation, base_url)
            except (Exception, BaseExceptionGroup) as exc:
                wrong.append(f"{operation.label}: {str(exc)[:600]}")
    return wrong


def refuses_without_key(operation: schemathesis.APIOperation, base_url: str) -> None:
    error = AnthropicError if surface_for_path(operation.path) == "anthropic" else OpenAIError

    @settings(max_examples=3, deadline=None, database=None, phases=[Phase.explicit, Phase.generate], derandomize=True,
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, timeout=15)
        assert response.status_code == 401, f"{response.status_code} {response.text[:200]}"
        error.model_validate_json(response.content)

    run()


def test_every_protected_operation_without_a_key_answers_401_in_its_surface_format(server: ServeProcess) -> None:
    schema = schemathesis.openapi.from_dict(served_document(server.base_url))
    wrong = unauthenticated(schema, server.base_url)
    assert not wrong, "\n\n".join(wrong)
    assert httpx.get(f"{server.base_url}/readyz", timeout=5).json() == {"status": "ready"}
