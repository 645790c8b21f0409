"""The issue's bar: a YAML-declared agent with an MCP tool (the official npm
server-everything) and a sub-agent gives the same answer to the `openai` SDK, the
`a2a-sdk` client and the REST API; its sessions and runs are in the store."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState

from corral.config.loader import load_config
from corral.gateway.app import create_app
from corral.testing.scripted import ScriptedProvider
from corral.testing.server import serve_app

pytestmark = pytest.mark.npx
EVERYTHING = "@modelcontextprotocol/server-everything"

CONFIG = """
version: 1
providers:
  script:
    type: scripted
    script:
{script}
models:
  scripted: {{provider: script, model: scripted}}
tools:
  everything:
    type: mcp
    command: {npx}
    args: ["-y", "{package}"]
    include: [echo, get-sum]
    prefix: ev
agents:
  assistant:
    description: Echoes through MCP, then lets the closer answer.
    model: scripted
    tools: [everything]
    sub_agents: [closer]
  closer:
    model: scripted
    instructions: You close conversations.
    visibility: internal
"""

ONE_RUN = """      - tool_calls: [{name: ev_echo, arguments: {message: ping}}]
      - tool_calls: [{name: transfer_to_closer, arguments: {}}]
      - text: "The echo said ping."
"""


@pytest.fixture(scope="module")
def npx() -> str:
    path = shutil.which("npx")
    if path is None:
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail("CORRAL_REQUIRE_SERVICES=1 but npx (Node.js) is not installed")
        pytest.skip("npx (Node.js) is not installed: this test needs the official npm MCP server")
    subprocess.run([path, "-y", "-p", EVERYTHING, "true"], capture_output=True, timeout=600, check=True)
    return path


async def test_same_answer_on_openai_a2a_and_rest_with_mcp_tool_and_sub_agent(npx: str, tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(CONFIG.format(script=ONE_RUN * 3, npx=npx, package=EVERYTHING))
    config = load_config(path, env={}).config
    provider = ScriptedProvider("script", config.providers["script"])
    async with serve_app(create_app(config, providers={"script": provider})) as url, \
            httpx.AsyncClient(base_url=url, timeout=60) as http:
        sdk = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        try:
            completion = await sdk.chat.completions.create(
                model="assistant", messages=[{"role": "user", "content": "echo ping"}],
                extra_headers={"x-corral-session-id": "via-openai"})
        finally:
            await sdk.close()
        a2a = await create_client(f"{url}/a2a/assistant", ClientConfig(httpx_client=http, streaming=False))
        message = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, context_id="via-a2a",
                          parts=[Part(text="echo ping")])
        replies = [r async for r in a2a.send_message(SendMessageRequest(message=message))]
        await a2a.close()
        rest = (await http.post("/v1/agents/assistant/runs",
                                json={"input": "echo ping", "session_id": "via-rest"})).json()
        sessions = {s: (await http.get(f"/v1/sessions/{s}")).json() for s in ("via-openai", "via-a2a", "via-rest")}

    task = replies[0].task
    answers = {completion.choices[0].message.content, task.artifacts[0].parts[0].text, rest["output"]}
    assert answers == {"The echo said ping."}
    assert task.status.state == TaskState.TASK_STATE_COMPLETED and rest["state"] == "succeeded"
    for session in sessions.values():
        tool_results = [m["content"] for m in session["messages"] if m["role"] == "tool"]
        assert tool_results == ["Echo: ping", "Transferred to closer."]
        assert session["messages"][-1]["content"] == "The echo said ping."
    assert [t.name for t in provider.requests[0].tools] == ["ev_echo", "ev_get-sum", "transfer_to_closer"]
