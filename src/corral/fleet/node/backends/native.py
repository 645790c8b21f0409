"""Native Corral agents: in-process through a `corral.llm` provider, or over HTTP against a
`corral serve` (its OpenAI-compatible /v1/chat/completions)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from corral.config.fleet import NativeBackendConfig
from corral.fleet.node.backends.base import BackendError, Emit, TurnResult
from corral.llm.provider import Provider
from corral.llm.types import ChatRequest, Message, TextPart


class NativeBackend:
    kind = "native"

    def __init__(self, name: str, config: NativeBackendConfig, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name, self.config = name, config
        self._history: dict[str, list[dict[str, str]]] = {}
        self._provider: Provider | None = None
        self._client: httpx.AsyncClient | None = None
        self._transport = transport

    async def start(self) -> None:
        if self.config.provider is not None:
            from corral.llm.registry import build_provider

            self._provider = build_provider(self.name, self.config.provider)
        else:
            headers = {}
            if self.config.api_key is not None:
                headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
            self._client = httpx.AsyncClient(base_url=str(self.config.url).rstrip("/"), headers=headers,
                                             timeout=self.config.timeout_seconds, transport=self._transport)

    async def create_session(self, project: str, directory: Path) -> str:
        ref = f"native-{uuid.uuid4().hex[:12]}"
        system = self.config.system_prompt
        self._history[ref] = [{"role": "system", "content": system}] if system else []
        return ref

    async def prompt(self, ref: str, text: str, emit: Emit) -> TurnResult:
        history = self._history.setdefault(ref, [])
        history.append({"role": "user", "content": text})
        try:
            result = await (self._via_provider(history) if self._provider else self._via_http(history))
        except Exception:
            history.pop()
            raise
        history.append({"role": "assistant", "content": result.text})
        return result

    async def _via_provider(self, history: list[dict[str, str]]) -> TurnResult:
        assert self._provider is not None
        messages = [Message(role=m["role"], content=[TextPart(m["content"])]) for m in history]  # type: ignore[arg-type]
        result = await self._provider.complete(ChatRequest(model=self.config.model, messages=messages))
        text = "".join(p.text for p in result.message.content if isinstance(p, TextPart))
        u = result.usage
        return TurnResult(text=text, model=result.model or self.config.model, input_tokens=u.input_tokens,
                          output_tokens=u.output_tokens, cached_input_tokens=u.cached_input_tokens)

    async def _via_http(self, history: list[dict[str, str]]) -> TurnResult:
        assert self._client is not None
        try:
            response = await self._client.post("/v1/chat/completions",
                                               json={"model": self.config.model, "messages": history})
        except httpx.HTTPError as exc:
            raise BackendError(f"corral serve unreachable: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise BackendError(f"corral serve answered HTTP {response.status_code}: {response.text[:300]}")
        body: dict[str, Any] = response.json()
        message = body["choices"][0]["message"]
        usage = body.get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return TurnResult(text=message.get("content") or "", model=body.get("model") or self.config.model,
                          input_tokens=int(usage.get("prompt_tokens", 0)),
                          output_tokens=int(usage.get("completion_tokens", 0)), cached_input_tokens=int(cached))

    async def abort(self, ref: str) -> None:
        # a native turn is one request; the session manager cancels its task
        return None

    async def close_session(self, ref: str) -> None:
        self._history.pop(ref, None)

    async def aclose(self) -> None:
        if self._provider is not None:
            await self._provider.aclose()
        if self._client is not None:
            await self._client.aclose()
