"""Agents built from the config: their instructions loaded, their toolsets attached."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from corral.agents.spec import Agent
from corral.config.schema import CorralConfig
from corral.tools.base import Toolset
from corral.tools.build import build_toolsets

if TYPE_CHECKING:
    from corral.knowledge.service import KnowledgeService


class AgentRegistry:
    def __init__(self, agents: Mapping[str, Agent], toolsets: Mapping[str, Toolset]) -> None:
        self.agents = dict(agents)
        self.toolsets = dict(toolsets)

    @classmethod
    def from_config(cls, config: CorralConfig, *, base_dir: Path | None = None,
                    toolsets: Mapping[str, Toolset] | None = None,
                    knowledge: KnowledgeService | None = None) -> AgentRegistry:
        used = {name for agent in config.agents.values() for name in agent.tools}
        built = dict(toolsets) if toolsets is not None else build_toolsets(config.tools, used, knowledge=knowledge)
        agents: dict[str, Agent] = {}
        for name, agent_config in config.agents.items():
            instructions = agent_config.instructions or ""
            if agent_config.instructions_file:
                path = Path(agent_config.instructions_file).expanduser()
                if not path.is_absolute() and base_dir is not None:
                    path = base_dir / path
                instructions = path.read_text(encoding="utf-8")
            missing = [t for t in agent_config.tools if t not in built]
            if missing:
                raise ValueError(f"agent {name!r}: unknown toolset(s) {', '.join(missing)}")
            agents[name] = Agent(name, agent_config, instructions, [built[t] for t in agent_config.tools])
        return cls(agents, built)

    def public(self) -> list[Agent]:
        return [a for a in self.agents.values() if a.config.visibility == "public"]

    def get(self, name: str) -> Agent | None:
        return self.agents.get(name)

    async def aclose(self) -> None:
        for toolset in self.toolsets.values():
            await toolset.aclose()
