"""The agent runtime the gateway serves: the registry of agents and toolsets, the
runner (on the router, metered by billing), and the run service on the store.

Every surface that starts runs (chat as a model, the REST runs API, A2A, MCP) is given
this object; it is built by the app factory and started with the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from corral.agents.fanout import RedisRunEvents
from corral.agents.registry import AgentRegistry
from corral.agents.remote import RemoteAgents
from corral.agents.router_models import Meter, RouterModels
from corral.agents.runner import Runner
from corral.agents.service import AgentService, RunObserver
from corral.config.schema import CorralConfig
from corral.llm.router import Router
from corral.store import Store
from corral.telemetry.tracing import Tracing

log = logging.getLogger("corral.gateway.agents")


class AgentRuntime:
    def __init__(self, config: CorralConfig, registry: AgentRegistry, router: Router, store: Store, *,
                 meter: Meter, observer: RunObserver | None = None, tracing: Tracing | None = None) -> None:
        self.registry = registry
        self.remote = RemoteAgents()
        runner = Runner(registry.agents, RouterModels(router, meter), remote=self.remote.call, tracing=tracing)
        fanout = RedisRunEvents.from_url(config.cache.url, prefix=config.cache.prefix) if config.cache.url else None
        self.service = AgentService(registry, runner, store, config.runs, observer=observer, fanout=fanout,
                                    tracing=tracing)
        self._warmup: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.service.start()
        # Connect MCP servers now rather than on the first run (``npx -y`` may download):
        # the first caller does not wait, and a broken server shows in the log at startup.
        self._warmup = asyncio.create_task(self._warm(), name="agents-warmup")

    async def _warm(self) -> None:
        for name, toolset in self.registry.toolsets.items():
            try:
                tools = await toolset.list_tools()
            except Exception as exc:
                log.warning("toolset %r is not available yet: %s", name, exc)
            else:
                log.info("toolset %r: %d tools", name, len(tools))

    async def stop(self) -> None:
        if self._warmup is not None:
            self._warmup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warmup
        await self.service.stop()
        if self.service.fanout is not None:
            await self.service.fanout.aclose()
        await self.remote.aclose()
        await self.registry.aclose()
