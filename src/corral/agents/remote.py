"""Remote agents over A2A (the official `a2a-sdk` client): declared with
``type: remote`` and a ``url``, usable as sub-agents and agent tools."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from corral.agents.spec import Agent


class RemoteAgents:
    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._clients: dict[str, Any] = {}
        self._http: list[httpx.AsyncClient] = []

    async def _client(self, agent: Agent) -> Any:
        from a2a.client import ClientConfig, create_client

        client = self._clients.get(agent.name)
        if client is None:
            assert agent.config.url
            http = httpx.AsyncClient(headers=agent.config.headers, timeout=agent.config.timeout,
                                     transport=self._transport)
            self._http.append(http)
            client = await create_client(agent.config.url, ClientConfig(httpx_client=http, streaming=False))
            self._clients[agent.name] = client
        return client

    async def call(self, agent: Agent, text: str, context_id: str | None,
                   trace: Mapping[str, str] | None = None) -> str:
        """``trace``: W3C headers (``traceparent``) sent with this call, so the remote agent's
        spans join the caller's trace."""
        from a2a.client import ClientCallContext
        from a2a.types import Message, Part, Role, SendMessageRequest

        client = await self._client(agent)
        message = Message(role=Role.ROLE_USER, message_id=uuid.uuid4().hex, parts=[Part(text=text)])
        if context_id:
            message.context_id = context_id
        context = ClientCallContext(service_parameters=dict(trace)) if trace else None
        texts: list[str] = []
        async for response in client.send_message(SendMessageRequest(message=message), context=context):
            texts = _texts(response) or texts
        return "".join(texts)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        for http in self._http:
            await http.aclose()
        self._clients.clear()
        self._http.clear()


def _texts(response: Any) -> list[str]:
    """Text of the final message, or of the task's artifacts, or of its status message."""
    if response.HasField("message"):
        return [p.text for p in response.message.parts if p.HasField("text")]
    if response.HasField("task"):
        task = response.task
        found = [p.text for a in task.artifacts for p in a.parts if p.HasField("text")]
        if found:
            return found
        return [p.text for p in task.status.message.parts if p.HasField("text")]
    return []
